"""Ingest: exact events from the demo EDFs, channels matched by name, bad files reported
by name under both on_error policies, stim-channel edge cases, channel-name cleanup."""
from collections import Counter

import mne
import numpy as np
import pytest

from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe.io import read_json
from oddpipe.ingest import (common_channels, companion_header, list_recordings,
                            normalize_channel_name, reader_options_for, run_ingest, scan_file)
from tests.conftest import SMALL_SPEC, make_params

SFREQ = 250.0
N_TIMES = 2500
NAMES = ["EEG Fz-REF", "EEG Cz-REF", "EEG Pz-REF", "EEG Oz-REF"]


def write_fif(path, names, data, stim):
    """A FIF with EEG channels `names` (rows of data, volts) and a stim channel STI."""
    info = mne.create_info(list(names) + ["STI"], SFREQ, ["eeg"] * len(names) + ["stim"])
    raw = mne.io.RawArray(np.vstack([data, stim[None]]), info, verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, verbose="error")
    return path


def stim_with(pulses):
    """A stim channel with 3-sample pulses {start sample: code}."""
    stim = np.zeros(N_TIMES)
    for start, code in pulses.items():
        stim[start:start + 3] = code
    return stim


def fif_params(raw_dir, **ingest):
    values = dict(pattern="**/*_raw.fif", event_source="stim", stim_channel="STI",
                  events={"target": [2], "nontarget": [1]})
    values.update(ingest)
    return make_params(raw_dir, ingest=values).ingest


@pytest.fixture
def fif_dir(tmp_path):
    """Two good FIF recordings: 1 target at sample 0, 2 non-targets, 1 unmapped (code 3)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((len(NAMES), N_TIMES)) * 1e-5
    stim = stim_with({0: 2, 500: 1, 1000: 3, 1500: 1})
    raw_dir = tmp_path / "raw"
    write_fif(raw_dir / "sub-01" / "sub-01_run-01_raw.fif", NAMES, data, stim)
    write_fif(raw_dir / "sub-02" / "sub-02_run-01_raw.fif", NAMES, data, stim)
    return raw_dir


# ---- the demo dataset ---------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_ingest(small_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    return (*run_ingest(make_params(small_demo["raw_dir"]).ingest, out), out)


def edf_truth(raw_dir):
    """Per recording: Counter of annotation descriptions and the onsets in samples,
    read straight from the EDF files with MNE."""
    truth = {}
    for path in sorted(raw_dir.rglob("*.edf")):
        raw = mne.io.read_raw_edf(path, verbose="error")
        ann = raw.annotations
        truth[path.name.removesuffix(".edf")] = (
            Counter(ann.description), np.round(ann.onset * raw.info["sfreq"]).astype(int))
    return truth


def test_demo_event_counts_are_exact(small_demo, demo_ingest):
    recordings, events, report, _ = demo_ingest
    truth = edf_truth(small_demo["raw_dir"])
    n_files = SMALL_SPEC.n_subjects * SMALL_SPEC.n_runs
    assert len(truth) == n_files == len(recordings) == len(report)
    assert (report["status"] == "ok").all()
    for rec, (counts, onsets) in truth.items():
        ev = events[events["recording"] == rec]
        row = recordings.set_index("recording").loc[rec]
        assert counts["target"] + counts["standard"] == sum(counts.values())
        assert (row.n_target, row.n_nontarget, row.n_unmapped) == (
            counts["target"], counts["standard"], 0)
        assert int(ev["y"].sum()) == counts["target"]
        assert int((ev["y"] == 0).sum()) == counts["standard"]
        assert ev["sample"].tolist() == onsets.tolist()
        assert (ev["label"] == np.where(ev["y"] == 1, "target", "nontarget")).all()


def test_demo_tables_are_consistent(small_demo, demo_ingest):
    recordings, events, _, _ = demo_ingest
    totals = {k: sum(c[k] for c, _ in edf_truth(small_demo["raw_dir"]).values())
              for k in ("target", "standard")}
    assert len(events) == totals["target"] + totals["standard"]
    assert int(events["y"].sum()) == totals["target"]
    assert events["event_id"].tolist() == list(range(len(events)))
    assert sorted(recordings["subject"].unique()) == ["01", "02", "03"]
    assert sorted(recordings["run"].unique()) == ["01", "02", "03"]
    assert (recordings["sfreq"] == SMALL_SPEC.sfreq).all()
    assert (recordings["n_channels"] == len(SMALL_SPEC.ch_names)).all()
    assert (recordings["n_times"] == int(SMALL_SPEC.duration_s * SMALL_SPEC.sfreq)).all()


def test_demo_continuous_keeps_named_channels_as_the_edfs_counts(demo_ingest):
    recordings, _, _, out = demo_ingest
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*recordings["data"], "calibration.json", "channels.tsv"])
    assert sorted(read_json(out / "calibration.json")["recordings"]) == sorted(
        recordings["recording"])  # every recording is kept as its counts
    names, types = continuous.read_channels(out)
    assert names == SMALL_SPEC.ch_names and set(types) == {"eeg"}  # EDF holds no type
    first = recordings.iloc[0]
    data = continuous.open_data(out / first["data"])
    assert data.data.dtype == np.int16 and data.shape == (len(names), first["n_times"])
    source = mne.io.read_raw(first["source"], verbose="error").get_data(picks=names)
    np.testing.assert_array_equal(data.volts(), source.astype(np.float32))


@pytest.mark.parametrize("read_values", [4 * 333, 4 * N_TIMES, 10**9])  # 8 reads, 1, 1
def test_chunked_reads_equal_one_whole_read(fif_dir, tmp_path, monkeypatch, read_values):
    """Reading a few MB at a time (malloc reuses the buffer) gives the very values of one
    whole-file get_data, in memory and through the streamed .npy; short last chunk too."""
    monkeypatch.setattr(continuous, "READ_VALUES", read_values)
    raw = mne.io.read_raw(sorted(fif_dir.rglob("*.fif"))[0], verbose="error")
    whole = raw.get_data(picks=NAMES).astype(np.float32)
    np.testing.assert_array_equal(continuous.read_float32(raw, NAMES), whole)
    monkeypatch.setattr(continuous, "CHUNK_VALUES", 4 * 1000)  # longer: a memmap, streamed
    assert continuous.stream_raw(raw, NAMES, tmp_path / "x.npy") is None  # FIF: volts
    np.testing.assert_array_equal(continuous.open_data(tmp_path / "x.npy"), whole)


# ---- channels by name --------------------------------------------------------------

def test_channels_matched_by_name_not_position(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((len(NAMES), N_TIMES)) * 1e-5
    stim = stim_with({100: 2, 600: 1})
    raw_dir = tmp_path / "raw"
    write_fif(raw_dir / "sub-01" / "sub-01_a_raw.fif", NAMES, data, stim)
    write_fif(raw_dir / "sub-02" / "sub-02_b_raw.fif", NAMES[::-1], data[::-1], stim)
    recordings, _, _ = run_ingest(fif_params(raw_dir), tmp_path / "out")
    names, _ = continuous.read_channels(tmp_path / "out")
    assert names == ["Fz", "Cz", "Pz", "Oz"]
    first, second = (continuous.open_data(tmp_path / "out" / f) for f in recordings["data"])
    np.testing.assert_array_equal(first, second)  # the same signal under each name
    expected = data[NAMES.index("EEG Cz-REF")].astype(np.float32)
    np.testing.assert_array_equal(second.volts()[names.index("Cz")], expected)


@pytest.fixture
def two_montages(tmp_path):
    """sub-01 has Fz, Cz, Pz, Oz; sub-02 has Oz, T7, Fz."""
    rng = np.random.default_rng(5)
    stim = stim_with({100: 2, 600: 1})
    raw_dir = tmp_path / "raw"
    write_fif(raw_dir / "sub-01" / "sub-01_raw.fif", NAMES,
              rng.standard_normal((4, N_TIMES)) * 1e-5, stim)
    write_fif(raw_dir / "sub-02" / "sub-02_raw.fif", ["Oz", "T7", "Fz"],
              rng.standard_normal((3, N_TIMES)) * 1e-5, stim)
    return raw_dir


def test_only_channels_common_to_all_files_are_kept(two_montages, tmp_path):
    recordings, _, _ = run_ingest(fif_params(two_montages), tmp_path / "out")
    assert (recordings["n_channels"] == 2).all()
    assert continuous.read_channels(tmp_path / "out")[0] == ["Fz", "Oz"]
    for name in recordings["data"]:
        assert continuous.open_data(tmp_path / "out" / name).shape == (2, N_TIMES)


@pytest.mark.parametrize("name, expected", [
    ("EEG Fz-REF", "Fz"), ("EEG_Cz_REF", "Cz"), ("  eeg pz-ref ", "pz"), ("Oz", "Oz"),
    ("EEG Fp1-Ref", "Fp1"), ("LA1", "LA1"),
])
def test_channel_name_normalization(name, expected):
    assert normalize_channel_name(name) == expected


# ---- stim channel events -----------------------------------------------------------

def test_stim_events_initial_event_and_unmapped(fif_dir, tmp_path):
    recordings, events, report = run_ingest(fif_params(fif_dir), tmp_path / "out")
    assert len(recordings) == 2
    first = events[events["recording"] == recordings["recording"].iloc[0]]
    assert first["sample"].tolist() == [0, 500, 1500]  # the sample-0 event is kept
    assert first["code"].tolist() == ["2", "1", "1"]
    assert first["y"].tolist() == [1, 0, 0]
    assert first["onset_s"].tolist() == [0.0, 2.0, 6.0]
    assert recordings["n_unmapped"].tolist() == [1, 1]
    assert report["n_unmapped"].tolist() == [1, 1]
    assert (report["n_target"] == 1).all() and (report["n_nontarget"] == 2).all()
    assert (report["event_source"] == "stim").all()


def test_several_codes_per_class(fif_dir, tmp_path):
    params = fif_params(fif_dir, events={"target": [2, 3], "nontarget": [1]})
    recordings, events, _ = run_ingest(params, tmp_path / "out")
    assert recordings["n_target"].tolist() == [2, 2]
    assert recordings["n_unmapped"].tolist() == [0, 0]
    assert len(events) == 8


# ---- bad files ---------------------------------------------------------------------

@pytest.fixture
def bad_dir(fif_dir):
    """fif_dir plus garbage with an unknown extension, garbage named .fif, and a FIF whose
    only events are unmapped."""
    (fif_dir / "sub-03").mkdir()
    (fif_dir / "sub-03" / "sub-03_notes.xyz").write_bytes(b"\x00garbage" * 50)
    (fif_dir / "sub-04").mkdir()
    (fif_dir / "sub-04" / "sub-04_run-01_raw.fif").write_bytes(b"not a fif at all" * 64)
    write_fif(fif_dir / "sub-05" / "sub-05_run-01_raw.fif", NAMES,
              np.random.default_rng(3).standard_normal((4, N_TIMES)) * 1e-5,
              stim_with({200: 7, 900: 7}))
    return fif_dir


def test_bad_files_skipped_and_reported(bad_dir, tmp_path):
    recordings, events, report = run_ingest(fif_params(bad_dir, pattern="**/*"),
                                            tmp_path / "out")
    assert sorted(recordings["subject"]) == ["01", "02"]
    assert set(events["subject"]) == {"01", "02"}
    status = dict(zip(report["file"].map(lambda f: f.rsplit("/", 1)[-1]), report["status"]))
    assert status == {
        "sub-01_run-01_raw.fif": "ok", "sub-02_run-01_raw.fif": "ok",
        "sub-03_notes.xyz": "error", "sub-04_run-01_raw.fif": "error",
        "sub-05_run-01_raw.fif": "error",
    }
    reasons = report.set_index(report["file"].map(lambda f: f.rsplit("/", 1)[-1]))["reason"]
    assert "MNE cannot read it" in reasons["sub-03_notes.xyz"]
    assert "MNE cannot read it" in reasons["sub-04_run-01_raw.fif"]
    assert "no usable events" in reasons["sub-05_run-01_raw.fif"]
    assert "2 found" in reasons["sub-05_run-01_raw.fif"]
    assert "none mapped" in reasons["sub-05_run-01_raw.fif"]
    no_events = report[report["file"].str.endswith("sub-05_run-01_raw.fif")].iloc[0]
    assert (no_events["n_target"], no_events["n_nontarget"], no_events["n_unmapped"]) == (0, 0, 2)


def test_bad_files_fail_the_run_by_name(bad_dir, tmp_path):
    with pytest.raises(OddpipeError) as info:
        run_ingest(fif_params(bad_dir, pattern="**/*", on_error="fail"), tmp_path / "out")
    msg = str(info.value)
    for name in ("sub-03_notes.xyz", "sub-04_run-01_raw.fif", "sub-05_run-01_raw.fif"):
        assert name in msg
    assert "sub-01_run-01_raw.fif" not in msg
    assert list((tmp_path / "out").iterdir()) == []  # the good files' parts are removed


def test_no_usable_recording_names_every_file(tmp_path):
    raw_dir = tmp_path / "raw"
    write_fif(raw_dir / "sub-01" / "sub-01_raw.fif", NAMES,
              np.zeros((4, N_TIMES)), stim_with({}))
    with pytest.raises(OddpipeError, match=r"no usable recording(.|\n)*sub-01_raw\.fif"):
        run_ingest(fif_params(raw_dir), tmp_path / "out")


def test_no_matching_files_says_so(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(OddpipeError, match=r"no files match ingest\.pattern"):
        run_ingest(fif_params(tmp_path / "raw"), tmp_path / "out")


def test_channel_name_collision_is_reported(tmp_path):
    # 'Fz' and 'EEG Fz-REF' both normalize to 'Fz': one of them must not vanish silently.
    rng = np.random.default_rng(4)
    stim = stim_with({100: 2, 600: 1})
    raw_dir = tmp_path / "raw"
    write_fif(raw_dir / "sub-01" / "sub-01_raw.fif", ["Fz", "EEG Fz-REF", "Cz"],
              rng.standard_normal((3, N_TIMES)) * 1e-5, stim)
    write_fif(raw_dir / "sub-02" / "sub-02_raw.fif", ["Fz", "Cz"],
              rng.standard_normal((2, N_TIMES)) * 1e-5, stim)
    try:
        _, _, report = run_ingest(fif_params(raw_dir), tmp_path / "out")
    except OddpipeError as exc:
        assert "sub-01_raw.fif" in str(exc) and "EEG Fz-REF" in str(exc)
        return
    row = report[report["file"].str.endswith("sub-01_raw.fif")].iloc[0]
    assert "EEG Fz-REF" in row["reason"] and "Fz" in row["reason"], row.to_dict()


# ---- channel policy ----------------------------------------------------------------



def by_name(report):
    return report.set_index(report["file"].map(lambda f: f.rsplit("/", 1)[-1]))


def test_common_channels_report_what_each_file_adds(two_montages, tmp_path):
    _, _, report = run_ingest(fif_params(two_montages), tmp_path / "out")
    rows = by_name(report)
    assert rows.loc["sub-01_raw.fif", ["channels_missing", "channels_extra"]].tolist() == [
        "", "Cz,Pz"]
    assert rows.loc["sub-02_raw.fif", ["channels_missing", "channels_extra"]].tolist() == [
        "", "T7"]


def test_explicit_channels_exactly_in_the_given_order(two_montages, tmp_path):
    params = fif_params(two_montages, channels=["EEG Oz-REF", "Fz"])  # names are cleaned up
    recordings, _, report = run_ingest(params, tmp_path / "out")
    assert list(recordings["n_channels"]) == [2, 2]
    scans = [scan_file(p, two_montages, params) for p in sorted(two_montages.rglob("*.fif"))]
    assert [list(s.channels) for s in scans] == [["Oz", "Fz"], ["Oz", "Fz"]]
    assert common_channels(scans) == ["Oz", "Fz"]
    rows = by_name(report)
    assert rows["channels_extra"].tolist() == ["Cz,Pz", "T7"]
    assert rows["channels_missing"].tolist() == ["", ""]


def test_a_file_lacking_an_explicit_channel_is_reported_by_name(two_montages, tmp_path):
    params = fif_params(two_montages, channels=["Fz", "Cz"])
    recordings, _, report = run_ingest(params, tmp_path / "out")
    assert list(recordings["subject"]) == ["01"]
    row = by_name(report).loc["sub-02_raw.fif"]
    assert row["status"] == "error"
    assert row["reason"].startswith("lacks channel(s) Cz of ingest.channels (it has Oz, T7, Fz)")
    assert (row["channels_missing"], row["channels_extra"]) == ("Cz", "Oz,T7")
    with pytest.raises(OddpipeError, match=r"sub-02_raw\.fif: lacks channel\(s\) Cz"):
        run_ingest(fif_params(two_montages, channels=["Fz", "Cz"], on_error="fail"),
                   tmp_path / "out2")


def test_no_shared_channel_fails_listing_each_files_channels(tmp_path):
    stim = stim_with({100: 2, 600: 1})
    raw_dir = tmp_path / "raw"
    rng = np.random.default_rng(6)
    write_fif(raw_dir / "sub-01" / "sub-01_raw.fif", ["Fz", "Cz"],
              rng.standard_normal((2, N_TIMES)) * 1e-5, stim)
    write_fif(raw_dir / "sub-02" / "sub-02_raw.fif", ["O1", "O2"],
              rng.standard_normal((2, N_TIMES)) * 1e-5, stim)
    with pytest.raises(OddpipeError) as info:
        run_ingest(fif_params(raw_dir), tmp_path / "out")
    assert str(info.value) == (
        "the recordings share no data channel by name (sub-01_raw.fif: ['Cz', 'Fz']; "
        "sub-02_raw.fif: ['O1', 'O2']); rename channels or ingest the sets separately")


# ---- side files and reader options ---------------------------------------------------

def test_side_files_are_read_through_their_headers(tmp_path):
    raw_dir = tmp_path / "raw" / "sub-01"
    raw_dir.mkdir(parents=True)
    (raw_dir / "sub-01_a.vhdr").write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\n"
        "DataFile=sub-01_a.dat\nMarkerFile=sub-01_a.vmrk\n")
    for name in ("sub-01_a.dat", "sub-01_a.vmrk", "sub-01_b.set", "sub-01_b.fdt",
                 "sub-01_c.EEG", "sub-01_c.PNT", "sub-01_d.dat"):
        (raw_dir / name).write_bytes(b"\x00" * 16)
    params = fif_params(tmp_path / "raw", pattern="**/*")
    assert [p.name for p in list_recordings(params)] == [
        "sub-01_a.vhdr", "sub-01_b.set", "sub-01_c.EEG", "sub-01_d.dat"]
    assert companion_header(raw_dir / "sub-01_a.dat") == raw_dir / "sub-01_a.vhdr"
    assert companion_header(raw_dir / "sub-01_d.dat") is None  # e.g. BCI2000: its own file
    alone = fif_params(tmp_path / "raw", pattern="**/*_a.dat")
    scan = scan_file(raw_dir / "sub-01_a.dat", tmp_path / "raw", alone)
    assert scan.error == ("a side file of sub-01_a.vhdr, not a recording; match the header "
                          "with ingest.pattern (e.g. '**/*.vhdr')")


def test_reader_options_first_matching_glob_wins():
    options = {"sub-01/*.cnt": {"data_format": "int32"}, "*.cnt": {"data_format": "int16"}}
    assert reader_options_for("sub-01/a.cnt", options) == {"data_format": "int32"}
    assert reader_options_for("sub-02/ses-1/a.cnt", options) == {"data_format": "int16"}
    assert reader_options_for("sub-02/a.CNT", options) == {}  # case-sensitive
    assert reader_options_for("a.edf", options) == {}


def write_edf(path, names, seconds=20):
    rng = np.random.default_rng(8)
    info = mne.create_info(names, SFREQ, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((len(names), int(SFREQ * seconds))) * 1e-5, info,
                          verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 2.0, 3.0], 0, ["odd", "std", "std"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    return path


def edf_params(raw_dir, **ingest):
    values = dict(pattern="**/*.edf", events={"target": ["odd"], "nontarget": ["std"]})
    return make_params(raw_dir, ingest={**values, **ingest}).ingest


def test_reader_options_reach_the_reader(tmp_path):
    # EDF labels 'EEG Fz' / 'ECG ECG1': infer_types types channels by their label prefix
    path = write_edf(tmp_path / "sub-01" / "sub-01.edf", ["EEG Fz", "EEG Cz", "ECG ECG1"])
    found = {}
    for glob in ("sub-01/*", "sub-02/*", None):
        options = {glob: {"infer_types": True}} if glob else {}
        scan = scan_file(path, tmp_path, edf_params(tmp_path, reader_options=options))
        found[glob] = (list(scan.channels), scan.reader_options)
    assert found == {"sub-01/*": (["Fz", "Cz"], {"infer_types": True}),
                     "sub-02/*": (["Fz", "Cz", "ECG ECG1"], {}),
                     None: (["Fz", "Cz", "ECG ECG1"], {})}


def test_the_write_pass_uses_the_same_reader_options(tmp_path):
    write_edf(tmp_path / "sub-01" / "sub-01.edf", ["EEG Fz", "EEG Cz", "ECG ECG1"])
    params = edf_params(tmp_path, reader_options={"*.edf": {"infer_types": True}})
    recordings = run_ingest(params, tmp_path / "out")[0]
    assert int(recordings["n_channels"][0]) == 2


def test_a_keyword_the_reader_does_not_take_is_reported(tmp_path):
    write_edf(tmp_path / "sub-01" / "sub-01.edf", ["Fz", "Cz"])
    params = edf_params(tmp_path, reader_options={"*.edf": {"data_fromat": "int16"}})
    scan = scan_file(tmp_path / "sub-01" / "sub-01.edf", tmp_path, params)
    assert scan.error.startswith(
        "MNE cannot read it with ingest.reader_options {'data_fromat': 'int16'} (")
    assert "data_fromat" in scan.error.split("(", 1)[1]
