"""Per-channel normalization fitted on the training split only, after outlier removal.

Robust by default (median and IQR / 1.349, which equals the std for Gaussian data), so
a residual artefact cannot squeeze every other value towards zero.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from oddpipe.errors import OddpipeError

IQR_TO_STD = 1.349
MAX_VALUES = 2_000_000  # per channel (16 MB as float64): quantiles to ~1e-3 beyond it


def channel_values(X: np.ndarray | Path, mask: np.ndarray, c: int, max_values: int,
                   rng: np.random.Generator, chunk: int = 2048) -> np.ndarray:
    """Channel c of the kept epochs as float64, at most max_values (whole epochs). From a
    file, chunk by chunk through fresh memmaps: reading one channel touches every page of
    the file, and a single map would keep them all in this process's memory."""
    open_x = ((lambda: np.load(X, mmap_mode="r", allow_pickle=False)) if isinstance(X, Path)
              else (lambda: X))
    epochs = np.flatnonzero(~mask[:, c])
    per_epoch = max(int(open_x().shape[2]), 1)
    if len(epochs) * per_epoch > max_values:
        epochs = np.sort(rng.choice(epochs, max(max_values // per_epoch, 1), replace=False))
    parts = [np.asarray(open_x()[epochs[i:i + chunk], c, :], dtype=np.float64)
             for i in range(0, len(epochs), chunk)]
    return np.concatenate(parts).ravel() if parts else np.empty(0)


def channel_stats(values: np.ndarray, method: str) -> tuple[float, float]:
    if method == "none" or values.size == 0:
        return 0.0, 1.0
    if method == "zscore":
        return float(values.mean()), float(values.std())
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float((q75 - q25) / IQR_TO_STD)


def fit_normalizer(X: np.ndarray | Path, mask: np.ndarray, channels: list[str], method: str,
                   max_values: int = MAX_VALUES, seed: int = 0) -> dict:
    """Center and scale per channel over train epochs, one channel at a time.

    Masked (outlier-dropped) channel epochs are left out of the statistics. A channel with
    more than max_values samples is fitted on a seeded random subset of its epochs, so
    memory stays flat as the data grow (the demo, 0.5 M values a channel, is fitted
    exactly). A path is memory-mapped afresh per channel, so no page stays resident.
    """
    center, scale = [], []
    rng = np.random.default_rng(seed)
    for c, name in enumerate(channels):
        values = channel_values(X, mask, c, max_values, rng)
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
