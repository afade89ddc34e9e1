"""Ingest event and rate rules with exact counts: stim mask, duplicates collapsed, a
target and a non-target at one sample left out, an events.tsv sidecar, and mixed rates
resampled to ingest.sfreq with the labels kept on their stimuli."""
from __future__ import annotations

import re

import mne
import numpy as np
import pandas as pd
import pytest

from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe.ingest import first_line, label_events, run_ingest
from tests.conftest import make_params

NAMES = ["Fz", "Cz", "Pz", "Oz"]


def stim_raw(sfreq: float, codes_at: dict[int, int], seconds: float = 20.0) -> mne.io.RawArray:
    n = int(sfreq * seconds)
    data = np.random.default_rng(0).standard_normal((len(NAMES) + 1, n)) * 1e-5
    data[-1] = 0
    for sample, code in codes_at.items():
        data[-1, sample:sample + 2] = code
    info = mne.create_info(NAMES + ["STI"], sfreq, ["eeg"] * len(NAMES) + ["stim"])
    return mne.io.RawArray(data, info, verbose="error")


def params_for(raw_dir, **ingest):
    base = {"pattern": "**/*_raw.fif", "event_source": "stim",
            "events": {"target": [2], "nontarget": [1]}}
    return make_params(raw_dir, ingest={**base, **ingest}).ingest


def test_stim_mask_strips_high_status_bits(tmp_path):
    (tmp_path / "sub-01").mkdir()
    codes = {100: 1 + 65280, 300: 2 + 65280, 500: 1, 700: 2 + 256, 900: 2}
    stim_raw(250.0, codes).save(tmp_path / "sub-01/sub-01_run-01_raw.fif", verbose="error")
    plain = run_ingest(params_for(tmp_path), tmp_path / "a")[0]
    masked = run_ingest(params_for(tmp_path, stim_mask=255), tmp_path / "b")[0]
    assert (int(plain["n_nontarget"][0]), int(plain["n_target"][0]),
            int(plain["n_unmapped"][0])) == (1, 1, 3)
    assert (int(masked["n_nontarget"][0]), int(masked["n_target"][0]),
            int(masked["n_unmapped"][0])) == (2, 3, 0)


def test_duplicates_collapse_and_conflicts_are_left_out():
    params = params_for("unused")
    samples = np.array([10, 10, 20, 20, 30, 40])
    codes = ["1", "1", "1", "2", "2", "9"]
    table, counts = label_events(samples, codes, 100.0, params)
    assert list(table["sample"]) == [10, 30] and list(table["y"]) == [0, 1]
    assert (counts.unmapped, counts.duplicates, counts.conflicts) == (1, 1, 2)


def test_events_from_a_bids_style_sidecar(tmp_path):
    (tmp_path / "sub-01").mkdir()
    raw = stim_raw(200.0, {})
    raw.drop_channels(["STI"])
    raw.save(tmp_path / "sub-01/sub-01_task-x_run-01_raw.fif", verbose="error")
    pd.DataFrame({"onset": [1.0, 2.5, 4.0, 5.0], "duration": 0,
                  "trial_type": ["std", "odd", "std", "resp"]}).to_csv(
        tmp_path / "sub-01/sub-01_task-x_run-01_events.tsv", sep="\t", index=False)
    params = params_for(tmp_path, event_source="tsv",
                        events={"target": ["odd"], "nontarget": ["std"]})
    recordings, events, _ = run_ingest(params, tmp_path / "out")
    assert recordings["event_source"][0] == "tsv"
    assert list(events["sample"]) == [200, 500, 800] and list(events["y"]) == [0, 1, 0]
    assert int(recordings["n_unmapped"][0]) == 1


def test_missing_sidecar_is_reported_by_name(tmp_path):
    (tmp_path / "sub-01").mkdir()
    stim_raw(200.0, {}).save(tmp_path / "sub-01/sub-01_run-01_raw.fif", verbose="error")
    params = params_for(tmp_path, event_source="tsv", on_error="fail")
    with pytest.raises(OddpipeError, match="no events sidecar.*sub-01_run-01_raw_events.tsv"):
        run_ingest(params, tmp_path / "out")


def test_mixed_rates_fail_unless_resampled_and_labels_stay_on_their_stimuli(tmp_path):
    for i, sfreq in enumerate([250.0, 500.0, 1000.0], start=1):
        (tmp_path / f"sub-0{i}").mkdir()
        k = sfreq / 250.0  # the same stimulus times in every file: 2.0 s, 4.0 s, 6.2 s
        raw = stim_raw(sfreq, {int(500 * k): 1, int(1000 * k): 2, int(1550 * k): 1})
        raw.save(tmp_path / f"sub-0{i}/sub-0{i}_run-01_raw.fif", verbose="error")
    with pytest.raises(OddpipeError, match="different sampling rates.*set ingest.sfreq"):
        run_ingest(params_for(tmp_path), tmp_path / "a")
    recordings, events, _ = run_ingest(params_for(tmp_path, sfreq=250.0), tmp_path / "b")
    assert list(recordings["orig_sfreq"]) == [250.0, 500.0, 1000.0]
    assert (recordings["sfreq"] == 250.0).all() and (recordings["n_times"] == 5000).all()
    for _, part in events.groupby("recording"):
        assert list(part["sample"]) == [500, 1000, 1550] and list(part["y"]) == [0, 1, 0]
    for name in recordings["data"]:
        assert continuous.open_data(tmp_path / "b" / name).shape[1] == 5000


@pytest.mark.realdata
@pytest.mark.parametrize("pattern, n_target, n_nontarget", [
    ("eeg2_*.dat", 20, 80), ("eeg3_*.dat", 120, 600)])
def test_bci2000_runs_ingest_through_their_events_sidecars(tmp_path, pattern, n_target,
                                                           n_nontarget):
    from tests.conftest import shared_dataset

    params = make_params(shared_dataset("bci2000_p300"), ingest={
        "pattern": pattern, "path_regex": "eeg(?P<subject>[0-9])_(?P<run>[0-9])",
        "event_source": "tsv", "events": {"target": ["target"], "nontarget": ["nontarget"]},
        "plausible_rms_v": [1e-7, 1e5]})  # accept its raw A/D counts knowingly (see below)
    recordings, _, _ = run_ingest(params.ingest, tmp_path / "out")
    assert len(recordings) == 2 and set(recordings["event_source"]) == {"tsv"}
    assert list(recordings["n_target"]) == [n_target] * 2
    assert list(recordings["n_nontarget"]) == [n_nontarget] * 2


def test_a_unit_mistake_is_flagged_and_kept_out_not_rescaled(tmp_path):
    for i, scale in ((1, 1.0), (2, 1e6)):  # file 2 stores microvolts labelled as volts
        (tmp_path / f"sub-0{i}").mkdir()
        raw = stim_raw(250.0, {500: 1, 1000: 2})
        raw.apply_function(lambda x: x * scale, picks="eeg")
        raw.save(tmp_path / f"sub-0{i}/sub-0{i}_run-01_raw.fif", verbose="error")
    recordings, _, report = run_ingest(params_for(tmp_path), tmp_path / "out")
    assert list(recordings["recording"]) == ["sub-01_run-01_raw"]
    reason = report.loc[report["recording"] == "sub-02_run-01_raw", "reason"].item()
    rms = float(re.match(r"implausible amplitude: typical channel RMS ([0-9.e+-]+) V", reason)[1])
    assert rms == pytest.approx(10.0, rel=0.05)  # 10 uV noise read as 10 V


@pytest.mark.realdata
def test_bci2000_counts_as_volts_are_caught_by_the_plausibility_check(tmp_path):
    from tests.conftest import shared_dataset

    params = make_params(shared_dataset("bci2000_p300"), ingest={
        "pattern": "eeg*.dat", "path_regex": "eeg(?P<subject>[0-9])_(?P<run>[0-9])",
        "event_source": "tsv", "events": {"target": ["target"], "nontarget": ["nontarget"]},
        "plausible_rms_v": [1e-7, 1e-2], "on_error": "fail"})
    with pytest.raises(OddpipeError, match="eeg2_1.dat: implausible amplitude"):
        run_ingest(params.ingest, tmp_path / "out")


def write_edf(path, seconds: float = 20.0):
    """A 250 Hz EDF with annotations: std at 1, 3 s; odd at 2 s."""
    info = mne.create_info(NAMES, 250.0, "eeg")
    data = np.random.default_rng(1).standard_normal((len(NAMES), int(250 * seconds))) * 1e-5
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 2.0, 3.0], 0, ["std", "odd", "std"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    return path


def edf_params(raw_dir, **ingest):
    return make_params(raw_dir, ingest={"pattern": "**/*.edf", **ingest, "events": {
        "target": ["odd"], "nontarget": ["std"]}}).ingest


def test_record_count_minus_one_is_not_truncation_but_a_short_file_is(tmp_path):
    # BioSemi and others leave the header's record count at -1 when a recording was not
    # stopped; MNE counts records from the file size. Only a count above it is truncation.
    unknown = write_edf(tmp_path / "sub-01" / "sub-01.edf")
    header = bytearray(unknown.read_bytes())
    header[236:244] = b"-1      "
    unknown.write_bytes(bytes(header))
    cut = write_edf(tmp_path / "sub-02" / "sub-02.edf")
    cut.write_bytes(cut.read_bytes()[:-2000])
    _, _, report = run_ingest(edf_params(tmp_path), tmp_path / "out")
    rows = report.set_index("recording")
    assert rows.loc["sub-01", "status"] == "ok"
    assert (rows.loc["sub-01", "n_target"], rows.loc["sub-01", "n_nontarget"]) == (1, 2)
    assert rows.loc["sub-02", "status"] == "error"
    assert rows.loc["sub-02", "reason"].startswith("the file looks truncated")


def test_a_file_with_one_class_only_is_reported(tmp_path):
    write_edf(tmp_path / "sub-01" / "sub-01.edf")
    params = make_params(tmp_path, ingest={"pattern": "**/*.edf", "events": {
        "target": ["odd"], "nontarget": ["standard"]}}).ingest
    with pytest.raises(OddpipeError, match="no usable recording"):
        run_ingest(params, tmp_path / "out", report_path=tmp_path / "ingest.tsv")
    report = pd.read_csv(tmp_path / "ingest.tsv", sep="\t")
    assert report["status"].tolist() == ["error"]
    assert report["reason"][0] == (
        "only one class present: 1 target event(s) and no nontarget event (codes found: 'odd', "
        "'std'); map the nontarget codes in ingest.events.nontarget, or leave this file out")


def test_sidecar_column_all_na_falls_back_to_value(tmp_path):
    (tmp_path / "sub-01").mkdir()
    raw = stim_raw(200.0, {})
    raw.drop_channels(["STI"])
    raw.save(tmp_path / "sub-01/sub-01_run-01_raw.fif", verbose="error")
    pd.DataFrame({"onset": ["1.0", "2.5", "n/a", "4.0"], "duration": 0,
                  "trial_type": "n/a", "value": ["1", "2", "2", "1"]}).to_csv(
        tmp_path / "sub-01/sub-01_run-01_events.tsv", sep="\t", index=False)
    recordings, events, _ = run_ingest(params_for(tmp_path, event_source="tsv"), tmp_path / "o")
    assert list(events["sample"]) == [200, 500, 800] and list(events["y"]) == [0, 1, 0]
    pd.DataFrame({"onset": ["1.0"], "trial_type": ["n/a"]}).to_csv(
        tmp_path / "sub-01/sub-01_run-01_events.tsv", sep="\t", index=False)
    params = params_for(tmp_path, event_source="tsv", on_error="fail")
    with pytest.raises(OddpipeError, match="sub-01_run-01_events.tsv has no 'trial_type' or "
                       "'value' column with codes; set ingest.tsv_column"):
        run_ingest(params, tmp_path / "p")


def test_messages_with_an_embedded_traceback_keep_the_error_line():
    # MNE's CNT reader raises RuntimeError('\n  File ...\n    raise ...\n\nRuntimeError: msg')
    exc = RuntimeError('\n  File "x.py", line 1, in f\n    raise RuntimeError(\n\n'
                       "RuntimeError: set data_format manually.\n\nWARNING: other")
    assert first_line(exc) == "set data_format manually."
    assert first_line(ValueError("plain\nmore")) == "plain"
