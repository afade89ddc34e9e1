"""Load the filter stage's epochs for a split: memory-mapped, never pickled."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from oddpipe.io import read_tsv
from oddpipe.training import EpochSet


def load_split(epochs_dir: Path, split: str) -> tuple[EpochSet, "object"]:
    """(EpochSet, table) of one split; X stays on disk (mmap)."""
    X = np.load(epochs_dir / f"{split}_X.npy", mmap_mode="r", allow_pickle=False)
    mask = np.load(epochs_dir / f"{split}_mask.npy", allow_pickle=False)
    table = read_tsv(epochs_dir / f"{split}.tsv")
    return EpochSet(X, mask, table["y"].to_numpy().astype(np.int64)), table
