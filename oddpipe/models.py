"""Classifiers for (channels x times) epochs: a compact EEGNet-style CNN and a linear model.

EEGNet (Lawhern et al., 2018): a temporal convolution, a depthwise spatial convolution per
temporal filter, then a separable convolution; few parameters, suited to small ERP data.
"""
from __future__ import annotations

import torch
from torch import nn


class EEGNet(nn.Module):
    def __init__(self, n_channels: int, n_times: int, sfreq: float, dropout: float = 0.25,
                 f1: int = 8, depth: int = 2, f2: int = 16):
        super().__init__()
        k1 = max(3, int(sfreq // 2) | 1)  # ~0.5 s temporal kernel, odd for symmetric padding
        k2 = max(3, int(sfreq // 8) | 1)
        self.features = nn.Sequential(
            nn.Conv2d(1, f1, (1, k1), padding=(0, k1 // 2), bias=False),
            nn.BatchNorm2d(f1),
            nn.Conv2d(f1, f1 * depth, (n_channels, 1), groups=f1, bias=False),
            nn.BatchNorm2d(f1 * depth),
            nn.ELU(),
            nn.AvgPool2d((1, 4)),
            nn.Dropout(dropout),
            nn.Conv2d(f1 * depth, f1 * depth, (1, k2), padding=(0, k2 // 2),
                      groups=f1 * depth, bias=False),
            nn.Conv2d(f1 * depth, f2, 1, bias=False),
            nn.BatchNorm2d(f2),
            nn.ELU(),
            nn.AvgPool2d((1, 8)),
            nn.Dropout(dropout),
        )
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, 1, n_channels, n_times)).numel()
        self.classify = nn.Linear(n_flat, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, channels, times) -> one logit per epoch."""
        return self.classify(self.features(x.unsqueeze(1)).flatten(1)).squeeze(1)


class LinearModel(nn.Module):
    def __init__(self, n_channels: int, n_times: int, dropout: float = 0.0, **_: object):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(n_channels * n_times, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(x.flatten(1))).squeeze(1)


MIN_CNN_TIMES = 32  # two pooling steps (4 x 8) need at least this many samples


def build_model(config: dict) -> nn.Module:
    """Build from the small JSON config saved beside the weights."""
    from oddpipe.errors import OddpipeError

    kind = config["model"]
    if kind == "cnn" and config["n_times"] < MIN_CNN_TIMES:
        raise OddpipeError(f"epochs have {config['n_times']} samples; the CNN needs at least "
                           f"{MIN_CNN_TIMES}: widen filter.tmin/tmax, lower filter.decim, "
                           "or use train.model: linear")
    common = {k: config[k] for k in ("n_channels", "n_times", "dropout")}
    if kind == "cnn":
        return EEGNet(sfreq=config["sfreq"], **common)
    if kind == "linear":
        return LinearModel(**common)
    raise ValueError(f"unknown model '{kind}'")
