"""Per-channel normalization fitted on the training split only, after outlier removal.

Robust by default (median and IQR / 1.349, which equals the std for Gaussian data), so
a residual artefact cannot squeeze every other value towards zero.
"""
from __future__ import annotations

import numpy as np

from oddpipe.errors import OddpipeError

IQR_TO_STD = 1.349


def channel_stats(values: np.ndarray, method: str) -> tuple[float, float]:
    if method == "none" or values.size == 0:
        return 0.0, 1.0
    if method == "zscore":
        return float(values.mean()), float(values.std())
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float((q75 - q25) / IQR_TO_STD)


def fit_normalizer(X: np.ndarray, mask: np.ndarray, channels: list[str], method: str) -> dict:
    """Center and scale per channel over train epochs, one channel at a time (memmap-friendly).

    Masked (outlier-dropped) channel epochs are left out of the statistics.
    """
    center, scale = [], []
    for c, name in enumerate(channels):
        values = np.asarray(X[~mask[:, c], c, :], dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise OddpipeError(f"train epochs of channel {name} hold non-finite values; "
                               "check the outliers report (reports/outliers.html)")
        m, s = channel_stats(values, method)
        if not s > 0:
            raise OddpipeError(f"channel {name} has zero spread in the training data (flat?); "
                               "the outliers stage should flag it: lower outliers.flat_rel")
        center.append(m)
        scale.append(s)
    return {"method": method, "channels": list(channels), "center": center, "scale": scale}


def apply_normalizer(x: np.ndarray, mask: np.ndarray, norm: dict) -> np.ndarray:
    """(x - center) / scale per channel; dropped channels become 0, the training mean."""
    center = np.asarray(norm["center"], dtype=np.float32)[None, :, None]
    scale = np.asarray(norm["scale"], dtype=np.float32)[None, :, None]
    out = (np.asarray(x, dtype=np.float32) - center) / scale
    out[np.broadcast_to(mask[:, :, None], out.shape)] = 0.0
    return out
