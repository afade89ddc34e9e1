"""Load the filter stage's epochs for a split: memory-mapped, never pickled."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from oddpipe.errors import OddpipeError
from oddpipe.io import read_tsv
from oddpipe.training import EpochSet


def load_split(epochs_dir: Path, split: str) -> tuple[EpochSet, "object"]:
    """(EpochSet, table) of one split; X stays on disk, memory-mapped per read."""
    X = Path(epochs_dir) / f"{split}_X.npy"
    mask = np.load(epochs_dir / f"{split}_mask.npy", allow_pickle=False)
    table = read_tsv(epochs_dir / f"{split}.tsv")
    if len(table) != EpochSet(X, mask, table["y"].to_numpy()).X.shape[0]:
        raise OddpipeError(f"{X} and {split}.tsv disagree on the number of epochs; rerun the "
                           "filter stage (dvc repro filter)")
    return EpochSet(X, mask, table["y"].to_numpy().astype(np.int64)), table
