"""The built-in demo dataset: deterministic, 7.6 % targets, the story's contamination."""
from __future__ import annotations

import hashlib

import mne
import numpy as np

from oddpipe.demo import DemoSpec, generate, simulate_run
from tests.conftest import SMALL_SPEC


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_generation_is_byte_identical(tmp_path, small_demo):
    spec = DemoSpec(n_subjects=1, n_runs=1, duration_s=30.0, seed=3, contaminated={})
    a = generate(tmp_path / "a", tmp_path / "a.json", spec)
    b = generate(tmp_path / "b", tmp_path / "b.json", spec)
    assert [_md5(p) for p in a] == [_md5(p) for p in b]


def test_files_read_back_with_mne(small_demo):
    files = sorted(small_demo["raw_dir"].glob("*/*.edf"))
    assert len(files) == SMALL_SPEC.n_subjects * SMALL_SPEC.n_runs
    raw = mne.io.read_raw(files[0], verbose="error")
    assert raw.info["sfreq"] == SMALL_SPEC.sfreq
    assert raw.ch_names == SMALL_SPEC.ch_names
    assert set(raw.annotations.description) == {"target", "standard"}


def test_target_fraction_is_the_story():
    spec = DemoSpec(n_subjects=1, n_runs=1)
    raw, _ = simulate_run(spec, 1, 1)
    labels = np.asarray(raw.annotations.description)
    assert len(labels) > 300  # about one stimulus a second for 6 minutes
    assert abs((labels == "target").mean() - 0.076) < 0.002
    assert not np.any((labels[1:] == "target") & (labels[:-1] == "target"))  # oddball


def test_contaminated_channels_are_orders_above_the_brain(small_demo):
    truth = small_demo["truth"]["contaminated"]
    assert truth == {"sub-02_task-oddball_run-02_ieeg": ["RH3", "RH4"],
                     "sub-02_task-oddball_run-03_ieeg": ["LA2", "RH3", "RH4"]}
    path = small_demo["raw_dir"] / "sub-02" / "sub-02_task-oddball_run-03_ieeg.edf"
    data = mne.io.read_raw(path, verbose="error").get_data()
    std = dict(zip(SMALL_SPEC.ch_names, data.std(axis=1)))
    clean = np.median([v for k, v in std.items() if k not in ("LA2", "RH3", "RH4")])
    for name in ("LA2", "RH3", "RH4"):
        assert 1e3 <= std[name] / clean <= 1e5


def test_a_scaled_demo_has_room_for_many_subjects():
    """bench/scale.py needs 80 subjects: recording dates run on past the end of a month."""
    spec = DemoSpec(n_subjects=80, n_runs=1, duration_s=5.0)
    dates = [simulate_run(spec, s, 1)[0].info["meas_date"].date().isoformat() for s in (31, 32, 80)]
    assert dates == ["2020-01-31", "2020-02-01", "2020-03-20"]
