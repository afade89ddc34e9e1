"""Filtering and epoching: notch frequencies, the Nyquist check, labels aligned with the
epochs that survive, edge drops counted, dropped channels zeroed, split files appended."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe.filtering import (SPLITS, Continuous, RecordingEpochs, SplitFiles, check_rates,
                               epoch_recording, notch_freqs)
from oddpipe.params import Filter

SFREQ = 500.0
CHANNELS = ["C1", "C2", "C3", "C4"]
BUMP_UV = 100.0
NOISE_UV = 5.0


def test_notch_freqs_below_nyquist():
    np.testing.assert_array_equal(notch_freqs(60, 500), [60, 120, 180, 240])
    np.testing.assert_array_equal(notch_freqs(50, 1000), np.arange(50, 500, 50))
    np.testing.assert_array_equal(notch_freqs(60, 240), [60])  # 120 Hz is Nyquist: left out
    assert len(notch_freqs(60, 100)) == 0


@pytest.mark.parametrize("sfreq, decim, h_freq", [(100.0, 4, 20.0), (160.0, 4, 20.0),
                                                  (100.0, 1, 50.0)])
def test_h_freq_at_or_above_nyquist_after_decimation(sfreq, decim, h_freq):
    params = Filter(h_freq=h_freq, decim=decim)
    nyquist = sfreq / decim / 2
    with pytest.raises(OddpipeError) as info:
        check_rates(params, sfreq)
    msg = str(info.value)
    assert "filter.h_freq" in msg and f"{h_freq} Hz" in msg
    assert f"{nyquist} Hz" in msg and f"decim {decim}" in msg


def test_h_freq_below_nyquist_passes():
    check_rates(Filter(h_freq=20.0, decim=4), 500.0)  # Nyquist 62.5 Hz
    check_rates(Filter(h_freq=20.0, decim=2), 81.0)   # Nyquist 20.25 Hz


def make_recording(tmp_path, n_events=40, soa_s=1.0, first_s=1.0, seed=0, extra=()):
    """A FIF with small noise where ONLY target events carry a bump at +300 ms, and its
    events table. `extra` adds (sample, y) events (e.g. near the edges)."""
    rng = np.random.default_rng(seed)
    n_times = int((first_s + n_events * soa_s + 1.0) * SFREQ)
    samples = (np.arange(n_events) * soa_s + first_s) * SFREQ
    samples = samples.astype(int) + rng.integers(-25, 25, n_events)
    y = np.zeros(n_events, int)
    y[rng.choice(n_events, n_events // 3, replace=False)] = 1
    samples = np.concatenate([samples, [s for s, _ in extra]]).astype(int)
    y = np.concatenate([y, [v for _, v in extra]]).astype(int)
    order = np.argsort(samples)
    samples, y = samples[order], y[order]
    data = rng.standard_normal((len(CHANNELS), n_times)) * NOISE_UV
    t = np.arange(n_times) / SFREQ
    for s in samples[y == 1]:
        data += BUMP_UV * np.exp(-0.5 * ((t - s / SFREQ - 0.3) / 0.04) ** 2)
    (tmp_path / "ingest").mkdir(exist_ok=True)  # apart from the epoch parts in tmp_path
    rec = Continuous(tmp_path / "ingest" / "rec.npy", CHANNELS, ["eeg"] * len(CHANNELS), SFREQ)
    continuous.write_array(data * 1e-6, rec.path)
    events = pd.DataFrame({
        "event_id": np.arange(len(y)) + 1000, "recording": "rec", "subject": "01",
        "sample": samples, "y": y, "split": np.where(np.arange(len(y)) % 2, "train", "val"),
    })
    events.index = events.index + 77  # a slice of a bigger table: positions, not labels
    return rec, events, n_times


def bump_at_300ms(X, tmin, sfreq):
    """Mean amplitude (µV) over channels within +-20 ms of +300 ms, per epoch."""
    times = tmin + np.arange(X.shape[2]) / sfreq
    near = np.abs(times - 0.3) <= 0.02
    return X[:, :, near].mean(axis=(1, 2)) * 1e6


def run(rec, events, tmp_path, drop=(), **filter_params):
    params = Filter(**filter_params)
    return epoch_recording(rec, "rec", events, 60.0, list(drop), params, tmp_path), params


def test_labels_stay_aligned_with_epochs(tmp_path):
    rec, events, _ = make_recording(tmp_path)
    result, params = run(rec, events, tmp_path)
    X = np.load(result.part, allow_pickle=False)
    assert result.n_dropped_at_edges == 0
    assert len(X) == len(result.table) == len(events)
    assert result.table["event_id"].tolist() == events["event_id"].tolist()
    assert result.table["split"].tolist() == events["split"].tolist()
    bump = bump_at_300ms(X, params.tmin, SFREQ / params.decim)
    has_bump = bump > BUMP_UV / 2
    assert has_bump.sum() == events["y"].sum() > 0
    np.testing.assert_array_equal(has_bump.astype(int), result.table["y"].to_numpy())


def test_edge_events_dropped_counted_and_labels_aligned(tmp_path):
    # Targets 20 samples after the start and 50 before the end: their windows
    # (-0.2 .. 0.8 s) do not fit and must be dropped, not shifted onto other labels.
    n_events = 40
    n_times = int((1.0 + n_events + 1.0) * SFREQ)
    rec, events, n = make_recording(tmp_path, n_events=n_events,
                                    extra=[(20, 1), (n_times - 50, 1)])
    assert n == n_times
    result, params = run(rec, events, tmp_path)
    X = np.load(result.part, allow_pickle=False)
    assert result.n_dropped_at_edges == 2
    assert len(X) == len(result.table) == len(events) - 2
    inner = events.iloc[1:-1]
    assert result.table["event_id"].tolist() == inner["event_id"].tolist()
    assert result.table["y"].tolist() == inner["y"].tolist()
    has_bump = bump_at_300ms(X, params.tmin, SFREQ / params.decim) > BUMP_UV / 2
    np.testing.assert_array_equal(has_bump.astype(int), result.table["y"].to_numpy())


def test_every_event_outside_gives_no_part(tmp_path):
    rec, events, _ = make_recording(tmp_path, n_events=3)
    result, _ = run(rec, events, tmp_path, tmin=-5.0, tmax=5.0)
    assert result.part is None
    assert result.n_dropped_at_edges == 3 and result.table.empty


def test_dropped_channels_are_zero(tmp_path):
    rec, events, _ = make_recording(tmp_path)
    result, params = run(rec, events, tmp_path, drop=["C2", "C4"])
    X = np.load(result.part, allow_pickle=False)
    assert X.dtype == np.float32
    assert X.shape == (len(events), 4, int(round((params.tmax - params.tmin) * SFREQ
                                                 / params.decim)) + 1)
    assert np.all(X[:, [1, 3]] == 0)
    assert np.all(np.abs(X[:, [0, 2]]).max(axis=2) > 0)
    has_bump = bump_at_300ms(X[:, [0, 2]], params.tmin, SFREQ / params.decim) > BUMP_UV / 2
    np.testing.assert_array_equal(has_bump.astype(int), result.table["y"].to_numpy())


def test_epoch_recording_checks_nyquist_first(tmp_path):
    rec, events, _ = make_recording(tmp_path, n_events=5)
    with pytest.raises(OddpipeError, match=r"at or above the Nyquist"):
        run(rec, events, tmp_path, h_freq=70.0, decim=4)  # Nyquist 62.5 Hz
    assert not list(tmp_path.glob("*.npy"))


def test_notch_removes_line_noise(tmp_path):
    rec, events, _ = make_recording(tmp_path, n_events=10)
    data = np.load(rec.path, allow_pickle=False)
    data[0] += 50e-6 * np.sin(2 * np.pi * 60 * np.arange(data.shape[1]) / SFREQ)
    continuous.write_array(data, rec.path)

    def power_60(notch):
        result, _ = run(rec, events, tmp_path, notch=notch, l_freq=None, h_freq=None,
                        decim=1, baseline=False)
        x = np.load(result.part, allow_pickle=False)[:, 0].astype(float)
        spec = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2
        freqs = np.fft.rfftfreq(x.shape[1], 1 / SFREQ)
        return spec[:, np.abs(freqs - 60) < 1.5].mean()

    assert power_60(notch=True) < power_60(notch=False) / 100


@pytest.mark.parametrize("tmin, tmax, decim, baseline", [
    (-0.2, 0.8, 4, True), (-0.13, 0.51, 3, True), (-0.5, 0.3, 1, True), (0.1, 0.6, 2, False)])
def test_cut_epochs_equals_mne_epochs(tmin, tmax, decim, baseline):
    """The vectorized cut gives mne.Epochs' arrays exactly, edge events left out alike."""
    import mne

    from oddpipe.filtering import cut_epochs

    rng = np.random.default_rng(5)
    sfreq, n_times = 250.0, 5000
    data = rng.standard_normal((3, n_times))
    # windows near both ends: some fit, some run past (MNE's edge rules, sample by sample)
    samples = np.array([10, *range(28, 54), 700, 1300, 2500, *range(4865, 4885),
                        *range(4785, 4805), 4990])
    raw = mne.io.RawArray(data, mne.create_info(3, sfreq, "eeg"), verbose="error")
    events = np.column_stack([samples, np.zeros_like(samples), np.ones_like(samples)])
    epochs = mne.Epochs(raw, events, tmin=tmin, tmax=tmax, decim=decim, preload=True,
                        baseline=(None, 0) if baseline else None, verbose="error")
    ours, inside = cut_epochs(data, samples, sfreq, Filter(tmin=tmin, tmax=tmax, decim=decim,
                                                            baseline=baseline))
    np.testing.assert_array_equal(np.flatnonzero(inside), epochs.selection)
    np.testing.assert_allclose(ours, epochs.get_data().astype(np.float32), rtol=1e-6,
                               atol=1e-7)


def test_in_memory_epochs_equal_the_part_file_and_nothing_is_written(tmp_path):
    """In this process epochs stay in memory until appended to the split files."""
    rec, events, _ = make_recording(tmp_path)
    saved, params = run(rec, events, tmp_path)
    before = sorted(tmp_path.rglob("*"))
    kept = epoch_recording(rec, "rec", events, 60.0, [], params, None)
    assert sorted(tmp_path.rglob("*")) == before
    assert kept.part is None and kept.has_epochs
    np.testing.assert_array_equal(kept.load(), np.load(saved.part, allow_pickle=False))
    assert kept.table.equals(saved.table) and kept.moments.keys() == saved.moments.keys()


def test_split_files_equal_numpy_save_of_the_concatenation(tmp_path):
    """Appended recording by recording, the header rewritten with the final count at the
    end: byte for byte what np.save writes for the whole split, an empty split included
    (the count grows from 0 to 5 digits without moving the data)."""
    rng = np.random.default_rng(1)
    sizes, n_ch, n_times = (7, 40_000, 3), 4, 6
    recs, arrays = [], []
    for i, n in enumerate(sizes):
        X = rng.standard_normal((n, n_ch, n_times)).astype(np.float32)
        split = np.where(np.arange(n) % 3 == 0, "val", "train")
        table = pd.DataFrame({"event_id": np.arange(n) + 100 * i, "recording": f"r{i}",
                              "subject": "01", "y": np.arange(n) % 2, "split": split})
        part = None
        if i == 1:  # a worker's part file, removed once copied
            part = tmp_path / "r1.npy"
            np.save(part, X)
        recs.append(RecordingEpochs(f"r{i}", part, table, 0, 0, {}, None if part else X))
        arrays.append((X, split))
    out = tmp_path / "out"
    out.mkdir()
    files = SplitFiles(out, n_ch)
    masks = {f"r{i}": np.arange(n_ch) == i for i in range(3)}
    for r in recs:
        files.add(r, masks[r.recording])
    tables = files.close()
    assert not (tmp_path / "r1.npy").exists()
    for split in SPLITS:
        expected = np.concatenate([X[s == split] for X, s in arrays]) if split != "test" \
            else np.zeros((0, n_ch, n_times), np.float32)
        np.save(tmp_path / "expected.npy", expected)
        assert (out / f"{split}_X.npy").read_bytes() == (tmp_path / "expected.npy").read_bytes()
        assert len(tables[split]) == len(expected)
        mask = np.load(out / f"{split}_mask.npy", allow_pickle=False)
        assert mask.shape == (len(expected), n_ch)
    assert len(tables["val"]) == 3 + 13_334 + 1
    np.testing.assert_array_equal(np.load(out / "val_mask.npy")[3], masks["r1"])


def test_split_files_refuse_recordings_of_another_length_and_name_a_full_disk(tmp_path):
    table = pd.DataFrame({"event_id": [1, 2], "recording": "a", "subject": "01", "y": [0, 1],
                          "split": ["train", "val"]})
    files = SplitFiles(tmp_path, 2)
    files.add(RecordingEpochs("a", None, table, 0, 0, {}, np.zeros((2, 2, 5), np.float32)),
              np.zeros(2, bool))
    other = RecordingEpochs("b", None, table.assign(recording="b"), 0, 0, {},
                            np.zeros((2, 2, 9), np.float32))
    with pytest.raises(OddpipeError, match=r"^b: its epochs have 9 samples, the other "
                                           r"recordings' 5.*dvc repro ingest"):
        files.add(other, np.zeros(2, bool))
    files.discard()
    assert list(tmp_path.iterdir()) == []
    if Path("/dev/full").exists():  # a full disk
        with open("/dev/full", "wb") as full, pytest.raises(OddpipeError,
                                                            match="cannot write /dev/full"):
            SplitFiles(tmp_path, 2, files={"train": (full, 0)}, n_times=5000).add(
                RecordingEpochs("a", None, table, 0, 0, {}, np.zeros((2, 2, 5000), np.float32)),
                np.zeros(2, bool))  # 40 kB: more than the file's buffer
