"""Sampling: the inspection sample (stratified by subject x class) and the grouped,
stratified train / val / test split, both with scikit-learn."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

from oddpipe.errors import OddpipeError
from oddpipe.params import Sample


def inspection_sample(events: pd.DataFrame, fraction: float, min_per_stratum: int,
                      seed: int) -> pd.DataFrame:
    """A sample of events stratified by subject x class, topped up to a minimum per stratum."""
    strata = events["subject"].astype(str) + "|" + events["label"].astype(str)
    chosen = np.zeros(len(events), dtype=bool)
    counts = strata.value_counts()
    if fraction < 1 and counts.min() >= 2 and fraction * len(events) >= len(counts):
        sss = StratifiedShuffleSplit(n_splits=1, train_size=fraction, random_state=seed)
        idx, _ = next(sss.split(np.zeros(len(events)), strata))
        chosen[idx] = True
    else:
        chosen[:] = fraction >= 1
    rng = np.random.default_rng(seed)
    for stratum in counts.index:  # every subject and class is seen, however rare
        members = np.flatnonzero((strata == stratum).to_numpy())
        missing = min(min_per_stratum, len(members)) - int(chosen[members].sum())
        if missing > 0:
            pool = members[~chosen[members]]
            chosen[rng.choice(pool, size=missing, replace=False)] = True
    sample = events.loc[chosen, ["event_id", "recording", "subject", "sample", "label", "y"]]
    return sample.reset_index(drop=True)


def _take_fold(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of one stratified fold holding about `fraction` of the groups."""
    n_groups = len(np.unique(groups))
    n_splits = max(2, min(int(round(1 / fraction)), n_groups))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, fold = next(cv.split(np.zeros(len(y)), y, groups))
    mask = np.zeros(len(y), dtype=bool)
    mask[fold] = True
    return mask


def split_events(events: pd.DataFrame, params: Sample) -> pd.DataFrame:
    """train / val / test per event; no group (recording or subject) straddles two splits."""
    groups = events[params.group_by].astype(str).to_numpy()
    if len(np.unique(groups)) < 3:
        hint = ("add recordings" if params.group_by == "recording"
                else "add subjects or set sample.group_by: recording")
        raise OddpipeError(f"only {len(np.unique(groups))} {params.group_by}(s): a grouped "
                           f"train/val/test split needs at least 3; {hint}")
    y = events["y"].to_numpy()
    test = _take_fold(y, groups, params.test_fraction, params.seed)
    rest = np.flatnonzero(~test)
    val_fraction = params.val_fraction / (1 - params.test_fraction)
    val = np.zeros(len(y), dtype=bool)
    val[rest[_take_fold(y[rest], groups[rest], val_fraction, params.seed + 1)]] = True
    split = np.where(test, "test", np.where(val, "val", "train"))
    table = events[["event_id", "recording", "subject", "y"]].assign(split=split)
    _check_classes(table, params.group_by)
    return table


def _check_classes(table: pd.DataFrame, group_by: str) -> None:
    with_targets = table.loc[table["y"] == 1, group_by].nunique()
    for name, part in table.groupby("split"):
        if part["y"].nunique() < 2:
            raise OddpipeError(
                f"the {name} split holds only one class ({len(part)} events): targets occur "
                f"in {with_targets} {group_by}(s), too few for a grouped three-way split; "
                "add recordings with targets (or check ingest.events)")
