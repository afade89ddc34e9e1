"""A 6-hour recording ingests with bounded memory (streamed in chunks) and its last events
are found, at their exact samples."""
from __future__ import annotations

import tracemalloc

import mne
import numpy as np
import pytest

from oddpipe import continuous
from oddpipe.ingest import run_ingest
from tests.conftest import make_params

SFREQ = 64.0
HOURS = 6
N_TIMES = int(HOURS * 3600 * SFREQ)  # 1,382,400 samples
NAMES = ["Fz", "Cz", "Pz", "Oz", "C3", "C4", "P3", "P4"]
CHUNK = 100_000  # values per chunk in this test: 111 chunks of 12,500 samples


@pytest.fixture(scope="module")
def long_edf(tmp_path_factory):
    """6 h of 8 channels, a stimulus every 20 s (every 5th a target), the last 1 s before
    the end; EDF+ annotations."""
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((len(NAMES), N_TIMES)) * 10e-6
    onsets = np.arange(20.0, HOURS * 3600 - 1.0 + 1e-9, 20.0)
    onsets[-1] = HOURS * 3600 - 1.0
    labels = np.where(np.arange(len(onsets)) % 5 == 0, "target", "standard")
    raw = mne.io.RawArray(data, mne.create_info(NAMES, SFREQ, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations(onsets, 0.0, labels))
    path = root / "sub-01" / "sub-01_run-01.edf"
    path.parent.mkdir()
    mne.export.export_raw(path, raw, fmt="edf", physical_range="channelwise", verbose="error")
    return {"root": root, "onsets": onsets, "labels": labels, "data": data}


def test_six_hours_ingest_in_bounded_memory_with_the_last_events(long_edf, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(continuous, "CHUNK_VALUES", CHUNK)
    params = make_params(long_edf["root"], ingest={"pattern": "**/*.edf"}).ingest
    run_ingest(params, tmp_path / "warm")  # imports and MNE's caches, not the file's cost
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        recordings, events, _ = run_ingest(params, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # The whole file as float64 is 88 MB; chunks are 0.8 MB. What remains is MNE's own
    # O(duration) times array (11 MB) when it turns annotations into events.
    full = len(NAMES) * N_TIMES * 8
    assert peak < full / 4, f"peak {peak / 1e6:.1f} MB against {full / 1e6:.1f} MB"
    assert int(recordings["n_times"].iloc[0]) == N_TIMES
    onsets, labels = long_edf["onsets"], long_edf["labels"]
    assert len(events) == len(onsets) == 1079
    assert list(events["sample"].tail(2)) == [int(round(o * SFREQ)) for o in onsets[-2:]]
    assert events["sample"].iloc[-1] == N_TIMES - 64  # one second before the end
    assert list(events["label"]) == [("target" if lab == "target" else "nontarget")
                                     for lab in labels]
    data = continuous.open_data(tmp_path / "out" / recordings["data"].iloc[0])
    # the last second survives the chunked copy (EDF stores 16-bit: 1e-3 relative)
    np.testing.assert_allclose(data.volts(-64), long_edf["data"][:, -64:], rtol=0,
                               atol=2e-3 * np.abs(long_edf["data"]).max())
