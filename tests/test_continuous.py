"""The continuous contract: an EDF's 16-bit samples are kept as its own counts, calibrated
in calibration.json (exact, half the bytes of float32), anything else as float32 volts;
both read back as volts, and a calibration that is not MNE's falls back to float32."""
from __future__ import annotations

import json
import os

import edfio
import mne
import numpy as np
import pytest

from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe import ingest as ingest_module
from oddpipe.ingest import PARTS_DIR, run_ingest
from tests.conftest import SHARED_DATA, make_params

SFREQ = 250.0
N_TIMES = 5000  # 20 s
NAMES = ["Fz", "Cz", "Pz"]
RANGES = [(-250.0, 250.0), (-3200.0, 3200.0), (-187.5, 312.5)]  # microvolts, one asymmetric
DATA_TYPES = ("eeg", "seeg", "ecog", "misc", "ecg", "eog", "emg")


def digital(seed: int, n_times: int = N_TIMES) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, (len(NAMES), n_times),
                                                dtype=np.int16)


def write_edf(path, counts, names=NAMES, ranges=RANGES, slow: int | None = None):
    """An EDF+ of the given 16-bit counts (rows: names, at SFREQ; row `slow` at half that
    rate) with a target at 2 s and non-targets at 4 s and 6 s."""
    signals = [edfio.EdfSignal.from_digital(
        np.ascontiguousarray(c[::2]) if i == slow else c, SFREQ / 2 if i == slow else SFREQ, label=name,
        physical_range=rng, physical_dimension="uV", digital_range=(-32768, 32767))
        for i, (c, name, rng) in enumerate(zip(counts, names, ranges))]
    notes = [edfio.EdfAnnotation(t, None, text)
             for t, text in ((2.0, "target"), (4.0, "standard"), (6.0, "standard"))]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals, annotations=notes, data_record_duration=1.0).write(path)
    return path


def ingest(raw_dir, out, **values):
    params = make_params(raw_dir, ingest={"pattern": "**/*.edf", **values}).ingest
    return run_ingest(params, out)[0]


def test_an_edf_is_kept_as_its_own_counts_and_read_back_as_mnes_volts(tmp_path):
    counts = digital(0)
    path = write_edf(tmp_path / "raw" / "sub-01" / "sub-01_run-01.edf", counts)
    recordings = ingest(tmp_path / "raw", tmp_path / "out")
    stored = tmp_path / "out" / recordings["data"].iloc[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "calibration.json", "channels.tsv", "sub-01_run-01.npy"]
    signals = continuous.open_data(stored)
    assert signals.is_counts and signals.data.dtype == np.int16
    np.testing.assert_array_equal(signals.data, counts)  # the file's samples, bit for bit
    source = mne.io.read_raw(path, verbose="error").get_data(picks=NAMES)
    step = np.array([(hi - lo) * 1e-6 / 65535 for lo, hi in RANGES])  # volts per count
    np.testing.assert_allclose(signals.volts(dtype=np.float64), source, rtol=0,
                               atol=1e-6 * step.min())  # a millionth of a count
    np.testing.assert_array_equal(signals.volts(100, 200), source[:, 100:200].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(signals), signals.volts())  # what arrays see
    np.testing.assert_array_equal(signals.volts(10, 20)[1], source[1, 10:20].astype(np.float32))
    cal = json.loads((tmp_path / "out" / "calibration.json").read_text())
    np.testing.assert_allclose(cal["recordings"]["sub-01_run-01"]["scale_v"], step, rtol=1e-12)


def test_a_reordered_edf_keeps_its_counts_under_each_name(tmp_path):
    counts = digital(1)
    write_edf(tmp_path / "raw" / "sub-01" / "sub-01_a.edf", counts)
    write_edf(tmp_path / "raw" / "sub-02" / "sub-02_b.edf", counts[::-1], NAMES[::-1],
              RANGES[::-1])
    recordings = ingest(tmp_path / "raw", tmp_path / "out")
    first, second = (continuous.open_data(tmp_path / "out" / f) for f in recordings["data"])
    assert first.is_counts and second.is_counts
    np.testing.assert_array_equal(second.data, first.data)  # rows back in Fz, Cz, Pz order
    np.testing.assert_array_equal(second.scale, first.scale)
    np.testing.assert_array_equal(second.volts(), first.volts())
    assert not (tmp_path / "out" / PARTS_DIR).exists()


def test_a_resampled_edf_becomes_float32_volts(tmp_path):
    write_edf(tmp_path / "raw" / "sub-01" / "sub-01_run-01.edf", digital(2))
    recordings = ingest(tmp_path / "raw", tmp_path / "out", sfreq=200.0)
    stored = tmp_path / "out" / recordings["data"].iloc[0]
    signals = continuous.open_data(stored)
    assert not signals.is_counts and signals.shape == (3, N_TIMES * 4 // 5)
    assert json.loads((tmp_path / "out" / "calibration.json").read_text())["recordings"] == {}


def test_a_channel_at_a_lower_rate_keeps_the_file_in_float32(tmp_path):
    """MNE interpolates a slower channel up to the file's rate: no longer counts."""
    path = write_edf(tmp_path / "a.edf", digital(3), slow=2)
    raw = mne.io.read_raw(path, verbose="error")
    assert continuous.edf_calibration(raw, NAMES) is None
    assert continuous.edf_calibration(raw, NAMES[:2]) is not None
    assert not continuous.read_signals(raw, NAMES).is_counts


def test_a_channel_dropped_before_the_read_keeps_its_own_calibration(tmp_path):
    """mne-bids drops a channel its channels.tsv does not list: MNE's header arrays stay in
    the file's order, and each kept channel must keep its own scale."""
    counts = digital(6)
    counts[1, 1::61] = 30000  # large values: a neighbour's (halved) scale would overflow
    path = write_edf(tmp_path / "a.edf", counts, ["STI 014", "Fz", "Cz"],
                     [(-100.0, 100.0), (-200.0, 200.0), (-50.0, 50.0)])
    raw = mne.io.read_raw(path, verbose="error").drop_channels(["STI 014"])
    signals = continuous.read_signals(raw, ["Fz", "Cz"])
    assert signals.is_counts
    np.testing.assert_array_equal(signals.data, counts[1:])
    np.testing.assert_allclose(signals.scale, [400e-6 / 65535, 100e-6 / 65535], rtol=1e-12)


@pytest.mark.parametrize("flat_middle", [False, True])  # zero-filled where the check starts
@pytest.mark.parametrize("wrong", ["1.5x", "0.5x", "swapped"])  # scales that are not MNE's
@pytest.mark.parametrize("chunk_values", [continuous.CHUNK_VALUES, 3 * 1000])  # whole, streamed
def test_a_calibration_that_is_not_mnes_falls_back_to_float32(tmp_path, monkeypatch,
                                                             chunk_values, wrong, flat_middle):
    """The counts and their calibration come from MNE's reader internals: a calibration
    that does not give MNE's own volts (a changed reader, a channel mapped to its
    neighbour's scale) leaves the file in float32 volts, never stored as wrong counts,
    also when every channel is flat in mid-file (a gap filled with zeros)."""
    counts = digital(4)
    if flat_middle:
        counts[:, 2000:3000] = 0
    raw = mne.io.read_raw(write_edf(tmp_path / "a.edf", counts), verbose="error")
    scale, offset = continuous.edf_calibration(raw, NAMES)
    bad = {"1.5x": scale * 1.5, "0.5x": scale * 0.5, "swapped": scale[[1, 0, 2]]}[wrong]
    monkeypatch.setattr(continuous, "edf_calibration", lambda *_: (bad, offset))
    monkeypatch.setattr(continuous, "CHUNK_VALUES", chunk_values)
    target = tmp_path / "x.npy"
    assert continuous.stream_raw(raw, NAMES, target) is None  # no calibration: volts
    signals = continuous.open_data(target)
    assert not signals.is_counts and signals.shape == (3, N_TIMES)
    np.testing.assert_array_equal(signals.volts(), raw.get_data(picks=NAMES).astype(np.float32))


def test_reading_counts_leaves_the_raw_reading_volts(tmp_path):
    """Counts are read with MNE's calibration set to identity for the read only: the Raw
    gives volts again afterwards, after an error too."""
    path = write_edf(tmp_path / "a.edf", digital(7))
    raw = mne.io.read_raw(path, verbose="error")
    volts = raw.get_data()
    extras = raw._raw_extras[0]
    assert continuous.read_signals(raw, NAMES).is_counts
    assert raw._raw_extras[0] is extras
    np.testing.assert_array_equal(raw.get_data(), volts)
    with pytest.raises(ValueError), continuous.reading_counts(raw):
        raw.get_data(start=N_TIMES)  # MNE: no data in this range
    np.testing.assert_array_equal(raw.get_data(), volts)


def test_a_stim_channel_is_never_kept_as_counts(tmp_path):
    """MNE masks a stim channel's bits (values beyond int16): the file stays float32."""
    path = write_edf(tmp_path / "a.edf", digital(8), ["Fz", "Cz", "Status"])
    raw = mne.io.read_raw(path, verbose="error")
    assert raw.get_channel_types() == ["eeg", "eeg", "stim"]
    assert continuous.edf_calibration(raw, ["Fz", "Status"]) is None
    assert continuous.edf_calibration(raw, ["Fz", "Cz"]) is not None


def test_a_long_edf_streams_its_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(continuous, "CHUNK_VALUES", 3 * 1000)  # 5 chunks of 1,000 samples
    counts = digital(5)
    raw = mne.io.read_raw(write_edf(tmp_path / "a.edf", counts), verbose="error")
    cal = continuous.stream_raw(raw, NAMES, tmp_path / "x.npy")
    np.testing.assert_array_equal(cal[0], continuous.edf_calibration(raw, NAMES)[0])
    continuous.write_calibrations(tmp_path, {"x": cal})
    signals = continuous.open_data(tmp_path / "x.npy")
    assert signals.is_counts
    np.testing.assert_array_equal(signals.data, counts)


def test_counts_without_a_usable_calibration_name_the_file_and_the_fix(tmp_path):
    path, table = tmp_path / "rec.npy", tmp_path / "calibration.json"
    np.save(path, np.zeros((3, 10), dtype=np.int16))

    def fails(pattern: str) -> None:
        with pytest.raises(OddpipeError, match=pattern + r".*dvc repro ingest"):
            continuous.open_data(path)

    fails(r"calibration\.json: missing; int16 counts \(rec\.npy\) are read with their")
    continuous.write_calibrations(tmp_path, {"other": (np.ones(3), np.zeros(3))})
    fails(r"calibration\.json: no calibration for rec, whose rec\.npy holds int16 counts")
    continuous.write_calibrations(tmp_path, {"rec": (np.ones(2), np.zeros(2))})
    fails(r"rec\.npy: 3 channels, but calibration\.json calibrates 2 for it")
    continuous.write_calibrations(tmp_path, {"rec": (np.array([1.0, 0.0, 1.0]), np.zeros(3))})
    fails(r"calibration\.json: rec: expected one finite, non-zero scale_v")
    for entry in ('{"scale_v": "x"}', '{"scale_v": ["1", "1", "1"], "offset_v": [0, 0, 0]}',
                  '[]', '{"scale_v": [true, 1, 1], "offset_v": [0, 0, 0]}'):
        table.write_text(f'{{"recordings": {{"rec": {entry}}}}}')
        fails(r"calibration\.json: rec: expected lists of numbers scale_v and offset_v")
    for text in ("[]", '{"recordings": [1, 2]}'):
        table.write_text(text)
        fails(r"calibration\.json: expected an object 'recordings'")
    table.write_text('{"recordings": {"rec": {"scale_v": [1' + "0" * 400 + ', 1, 1], '
                     '"offset_v": [0, 0, 0]}}}')
    fails(r"calibration\.json: rec: a number beyond float64's range")
    table.write_text('{"recordings": ')
    fails(r"calibration\.json: not readable JSON")
    table.unlink()
    table.mkdir()
    fails(r"calibration\.json: Is a directory; int16 counts")
    table.rmdir()
    continuous.write_calibrations(tmp_path, {"rec": (np.full(3, 2.0), np.zeros(3))})
    np.testing.assert_array_equal(continuous.open_data(path).volts(), np.zeros((3, 10)))
    np.save(path, np.zeros((3, 10), dtype=np.int32))
    with pytest.raises(OddpipeError, match=r"float32 volts or int16 counts, found int32"):
        continuous.open_data(path)


def test_a_rewritten_calibration_is_read_again(tmp_path):
    """calibration.json is parsed once per process for the same content: a new ingest run's
    is read, not the cached one, even where the new file has the old one's inode (a rename
    into place alternates two), size and times."""
    path = tmp_path / "rec.npy"
    np.save(path, np.ones((2, 4), dtype=np.int16))
    for scale in (1e-6, 2e-6, 3e-6):
        continuous.write_calibrations(tmp_path, {"rec": (np.full(2, scale), np.zeros(2))})
        os.utime(tmp_path / "calibration.json", ns=(10**18, 10**18))  # whole-second times
        np.testing.assert_array_equal(continuous.open_data(path).volts(dtype=np.float64),
                                      np.full((2, 4), scale))


REAL_EDFS = ["format_zoo/mne-python/mne/io/edf/tests/data/test.edf",  # 138 ch, a stim
             "format_zoo/mne-testing-data/EDF/test_edf_overlapping_annotations.edf",
             "format_zoo/mne-testing-data/EDF/chtypes_edf.edf",  # 64 ch of mixed types
             "ieeg_line_noise/mne-misc-data/seeg/sample_seeg.edf",
             "ieeg_line_noise/mne-misc-data/ecog/sample_ecog.edf"]


@pytest.mark.parametrize("name", REAL_EDFS)
def test_real_edfs_keep_their_counts_and_give_mnes_volts(name):
    """Real EDFs (../shared/data) from other writers than edfio: their data channels are
    kept as counts, and counts x calibration are MNE's volts within float64 rounding."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (real recordings live in ../shared/data)")
    raw = mne.io.read_raw(path, verbose="error")
    picks = [raw.ch_names[i] for i in mne.pick_types(raw.info, exclude=[], stim=False,
                                                     **{t: True for t in DATA_TYPES})]
    signals = continuous.read_signals(raw, picks)
    assert signals.is_counts and len(picks) > 40
    volts = raw.get_data(picks=picks)
    np.testing.assert_allclose(signals.volts(dtype=np.float64), volts, rtol=0,
                               atol=1e-15 * np.abs(volts).max())  # float32: 6e-8


def test_a_loaded_raw_is_read_as_its_volts(tmp_path):
    """A preloaded (maybe filtered) Raw's get_data gives its volts, which an identity
    calibration cannot turn into counts: it is read as float32 volts."""
    counts = digital(9)
    counts[:, 2000:3000] = 0  # flat in mid-file, where the counts check looks first
    raw = mne.io.read_raw(write_edf(tmp_path / "a.edf", counts), preload=True,
                          verbose="error")
    assert continuous.edf_calibration(raw, NAMES) is None
    signals = continuous.read_signals(raw, NAMES)
    assert not signals.is_counts
    np.testing.assert_array_equal(signals.volts(), raw.get_data(picks=NAMES).astype(np.float32))


@pytest.mark.parametrize("chunk_values", [continuous.CHUNK_VALUES, 3 * 1000])  # whole, streamed
def test_a_slower_channel_is_read_in_one_read(tmp_path, monkeypatch, chunk_values):
    """MNE upsamples a channel stored at a lower rate on each read, correctly only when
    the read covers the whole file: read in chunks its samples came out misplaced (twice
    the signal's amplitude off). It is read whole; the others stay chunked."""
    monkeypatch.setattr(continuous, "READ_VALUES", 3 * 700)  # 700 samples per chunk
    monkeypatch.setattr(continuous, "CHUNK_VALUES", chunk_values)
    t = np.arange(N_TIMES) / SFREQ
    counts = np.stack([10000 * np.sin(2 * np.pi * f * t) for f in (3, 5, 7)]).astype(np.int16)
    raw = mne.io.read_raw(write_edf(tmp_path / "a.edf", counts, slow=1), verbose="error")
    assert continuous.lower_rate(raw, NAMES) == ["Cz"]
    whole = raw.get_data(picks=NAMES).astype(np.float32)
    assert continuous.stream_raw(raw, NAMES, tmp_path / "x.npy") is None  # float32 volts
    np.testing.assert_array_equal(continuous.open_data(tmp_path / "x.npy").volts(), whole)


def test_an_interrupted_run_leaves_no_earlier_calibration_to_misread(tmp_path, monkeypatch):
    """A run stopped after renaming some new arrays into place (outside dvc repro, which
    removes outputs first) must not pair them with the previous run's calibration.json or
    channels.tsv: opening them fails and says to rerun."""
    write_edf(tmp_path / "raw" / "sub-01" / "sub-01_a.edf", digital(10))
    write_edf(tmp_path / "raw" / "sub-02" / "sub-02_b.edf", digital(11))
    out = tmp_path / "out"
    ingest(tmp_path / "raw", out, channels=NAMES)
    conform = ingest_module.conform

    def stopped(scan, **kwargs):
        if scan.recording == "sub-02_b":
            raise KeyboardInterrupt
        return conform(scan, **kwargs)

    monkeypatch.setattr(ingest_module, "conform", stopped)
    with pytest.raises(KeyboardInterrupt):
        ingest(tmp_path / "raw", out, channels=NAMES[::-1])  # another order: other scales
    with pytest.raises(OddpipeError, match=r"calibration\.json: missing.*dvc repro ingest"):
        continuous.open_data(out / "sub-01_a.npy")
    assert not (out / "channels.tsv").exists() and not (out / PARTS_DIR).exists()


def test_recordings_named_like_parts_keep_their_own_samples(tmp_path):
    """Parts live in a folder of their own: a file named as a part once was is a
    recording like any other."""
    names = [".part-000001", "000000", ".parts"]
    for i, name in enumerate(names):
        write_edf(tmp_path / "raw" / f"sub-0{i + 1}" / f"{name}.edf", digital(20 + i))
    recordings = ingest(tmp_path / "raw", tmp_path / "out",
                        path_regex=r"sub-(?P<subject>\d+)/")
    assert sorted(recordings["recording"]) == sorted(names)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(
            continuous.open_data(tmp_path / "out" / f"{name}.npy").data, digital(20 + i))
