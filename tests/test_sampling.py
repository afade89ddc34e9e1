"""Sampling: the inspection sample covers every subject x class; the split is grouped,
stratified, seeded and close to the requested fractions."""
import numpy as np
import pandas as pd
import pytest

from oddpipe.errors import OddpipeError
from oddpipe.params import Sample
from oddpipe.sampling import inspection_sample, split_events


def make_events(n_subjects=4, n_runs=3, per_run=100, target_fraction=0.076, seed=0,
                targets_of=None):
    """An events table like ingest's; targets_of={subject: n} fixes a subject's targets."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n_subjects + 1):
        subject = f"{s:02d}"
        y = (rng.random(n_runs * per_run) < target_fraction).astype(int)
        if targets_of and subject in targets_of:
            y[:] = 0
            y[rng.choice(len(y), targets_of[subject], replace=False)] = 1
        for r in range(n_runs):
            part = y[r * per_run:(r + 1) * per_run]
            for i, yi in enumerate(part):
                rows.append((f"sub-{subject}_run-{r + 1:02d}", subject, 500 * (i + 2), yi))
    table = pd.DataFrame(rows, columns=["recording", "subject", "sample", "y"])
    table.insert(0, "event_id", np.arange(len(table)))
    table["label"] = np.where(table["y"] == 1, "target", "nontarget")
    return table


# ---- inspection sample -------------------------------------------------------------

@pytest.mark.parametrize("fraction, minimum", [(0.05, 20), (0.001, 5), (0.3, 1)])
def test_every_stratum_meets_its_minimum(fraction, minimum):
    events = make_events(targets_of={"03": 4})  # one stratum smaller than the minimum
    sample = inspection_sample(events, fraction, minimum, seed=0)
    sizes = events.groupby(["subject", "label"]).size()
    got = sample.groupby(["subject", "label"]).size().reindex(sizes.index, fill_value=0)
    assert len(sizes) == 8
    for key, size in sizes.items():
        assert got[key] >= min(minimum, size), key
    assert len(sample) >= int(fraction * len(events))


def test_tiny_stratum_taken_whole():
    events = make_events(targets_of={"02": 3})
    sample = inspection_sample(events, 0.05, 20, seed=1)
    tgt = events[(events["subject"] == "02") & (events["y"] == 1)]
    assert set(tgt["event_id"]) <= set(sample["event_id"])


def test_sample_rows_are_real_distinct_events():
    events = make_events()
    sample = inspection_sample(events, 0.05, 20, seed=0)
    assert sample["event_id"].is_unique
    merged = sample.merge(events, on="event_id", suffixes=("", "_ev"))
    assert len(merged) == len(sample)
    for col in ("recording", "subject", "sample", "label", "y"):
        assert (merged[col] == merged[f"{col}_ev"]).all()


def test_sample_is_seeded():
    events = make_events()
    a = inspection_sample(events, 0.05, 20, seed=3)
    b = inspection_sample(events, 0.05, 20, seed=3)
    c = inspection_sample(events, 0.05, 20, seed=4)
    assert a["event_id"].tolist() == b["event_id"].tolist()
    assert a["event_id"].tolist() != c["event_id"].tolist()


def test_fraction_one_takes_everything():
    events = make_events(n_subjects=2, n_runs=1, per_run=50)
    assert len(inspection_sample(events, 1.0, 20, seed=0)) == len(events)


# ---- split -------------------------------------------------------------------------

def check_split(events, table, group_by):
    assert table["event_id"].tolist() == events["event_id"].tolist()
    assert set(table["split"]) == {"train", "val", "test"}
    per_group = table.groupby(group_by)["split"].nunique()
    assert (per_group == 1).all(), per_group[per_group > 1]
    for name, part in table.groupby("split"):
        assert set(part["y"]) == {0, 1}, name


def test_split_is_grouped_and_has_both_classes():
    events = make_events(n_subjects=5, n_runs=4)
    table = split_events(events, Sample())
    check_split(events, table, "recording")


def test_split_by_subject():
    events = make_events(n_subjects=6, n_runs=2)
    table = split_events(events, Sample(group_by="subject"))
    check_split(events, table, "subject")


def test_split_is_deterministic_for_a_seed():
    events = make_events(n_subjects=5, n_runs=4)
    a = split_events(events, Sample(seed=11))["split"].tolist()
    b = split_events(events, Sample(seed=11))["split"].tolist()
    assert a == b
    others = [split_events(events, Sample(seed=s))["split"].tolist() for s in (12, 13, 14)]
    assert any(o != a for o in others)


@pytest.mark.parametrize("val, test", [(0.2, 0.2), (0.1, 0.3), (0.25, 0.25)])
def test_split_fractions_close_to_requested(val, test):
    # 50 equal recordings: each recording is 2 % of the events.
    events = make_events(n_subjects=10, n_runs=5, per_run=60, target_fraction=0.15)
    table = split_events(events, Sample(val_fraction=val, test_fraction=test))
    share = table["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(test, abs=0.05)
    assert share["val"] == pytest.approx(val, abs=0.05)
    assert share["train"] == pytest.approx(1 - val - test, abs=0.07)


def test_split_fractions_with_few_recordings():
    # 9 equal recordings as in the small demo: within one recording's share (1/9).
    events = make_events(n_subjects=3, n_runs=3, per_run=90, target_fraction=0.1)
    table = split_events(events, Sample())
    share = table["split"].value_counts(normalize=True)
    assert abs(share["test"] - 0.2) <= 1 / 9 + 1e-9
    assert abs(share["val"] - 0.2) <= 1 / 9 + 1e-9
    check_split(events, table, "recording")


def test_split_needs_three_groups():
    events = make_events(n_subjects=2, n_runs=1)
    with pytest.raises(OddpipeError, match="only 2 recording"):
        split_events(events, Sample())
    with pytest.raises(OddpipeError, match="only 2 subject"):
        split_events(make_events(n_subjects=2, n_runs=3), Sample(group_by="subject"))


def test_split_without_targets_in_a_split_raises():
    events = make_events(n_subjects=3, n_runs=1, per_run=50, target_fraction=0.0)
    events.loc[events["recording"] == "sub-01_run-01", "y"] = 1  # targets in one recording
    with pytest.raises(OddpipeError, match="holds only one class"):
        split_events(events, Sample())
