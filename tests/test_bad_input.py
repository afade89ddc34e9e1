"""Bad input, found by attacking the ingest, outliers and filter stages: each gets one
clear message naming the file, the problem and the fix (exit 1 for data, 2 for params),
never a traceback, and one bad file never loses the others' work."""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import mne
import numpy as np
import pytest
import yaml

import stages.ingest
from stages._common import run_stage
from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe.ingest import run_ingest
from oddpipe.io import read_columns, write_columns
from oddpipe.params import parse_params
from tests.conftest import REPO, default_params
from tests.pipeline import STAGES, run_stages, working_dir
from tests.test_filtering import SFREQ, make_recording
from tests.test_filtering import run as run_epochs
from tests.test_ingest import fif_dir  # noqa: F401 (a fixture)
from tests.test_ingest import N_TIMES, NAMES, fif_params, stim_with, write_fif
from tests.test_params import problems


# ---- params ------------------------------------------------------------------------

def test_params_file_not_utf8_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"ingest:\n  raw_dir: \xff\xfe\n")
    assert stages.ingest.main(["--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "UTF-8" in err and str(path) in err


@pytest.mark.parametrize("section, key", [("filter", "tmin"), ("filter", "h_freq"),
                                          ("outliers", "segment_s"), ("ingest", "sfreq")])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_params_is_a_problem(section, key, value):
    found = problems(**{section: {key: value}})
    assert len(found) == 1 and f"{section}.{key}" in found[0], found


@pytest.mark.parametrize("value", [[1.0, 1e-9], [-1, 0], [0, 1e-2]])
def test_plausible_rms_range_must_be_ordered_and_positive(value):
    found = problems(ingest={"plausible_rms_v": value})
    assert len(found) == 1 and "plausible_rms_v" in found[0], found


@pytest.mark.parametrize("value", [0, -60])
def test_line_freq_must_be_positive(value):
    found = problems(ingest={"line_freq": value})
    assert len(found) == 1 and "ingest.line_freq" in found[0], found


@pytest.mark.parametrize("pattern", ["", "/etc/*", "../*.edf"])
def test_pattern_must_be_a_non_empty_glob_below_raw_dir(pattern):
    found = problems(ingest={"pattern": pattern})
    assert len(found) == 1 and "pattern" in found[0], found


def test_no_channel_type_is_a_problem():
    found = problems(ingest={"ch_types": []})
    assert len(found) == 1 and "ingest.ch_types" in found[0], found


def test_blank_channel_names_are_a_problem():
    found = problems(ingest={"channels": [" ", "Cz"]})
    assert len(found) == 1 and "ingest.channels" in found[0], found


@pytest.mark.parametrize("sfreq, filt, word", [
    (1e-9, {}, "l_freq"),
    (100.0, {"h_freq": 30.0, "decim": 2}, "h_freq"),   # Nyquist after decim: 25 Hz
    (100.0, {"h_freq": None, "l_freq": 60.0, "decim": 1}, "l_freq"),
])
def test_ingest_sfreq_checked_against_the_filter_before_any_work(sfreq, filt, word):
    found = problems(ingest={"sfreq": sfreq}, filter=filt)
    assert len(found) == 1 and word in found[0] and "ingest.sfreq" in found[0], found


def test_ingest_sfreq_that_fits_the_filter_passes():
    raw = copy.deepcopy(default_params())
    raw["ingest"]["sfreq"] = 250.0
    parse_params(raw)


# ---- ingest: files -------------------------------------------------------------------

def ingest_report(raw_dir, tmp_path, **ingest):
    """(recordings, report indexed by the path below raw_dir) of run_ingest under skip."""
    recordings, _, report = run_ingest(fif_params(raw_dir, **ingest), tmp_path / "out")
    report.index = [f.split(str(raw_dir) + "/", 1)[-1] for f in report["file"]]
    return recordings, report


def test_an_empty_file_says_it_is_empty(fif_dir, tmp_path):
    (fif_dir / "sub-03").mkdir()
    (fif_dir / "sub-03" / "sub-03_raw.fif").write_bytes(b"")
    recordings, report = ingest_report(fif_dir, tmp_path)
    assert len(recordings) == 2
    assert "empty (0 bytes)" in report.loc["sub-03/sub-03_raw.fif", "reason"]


def test_a_folder_or_broken_link_named_like_a_recording_is_reported(fif_dir, tmp_path):
    (fif_dir / "sub-03" / "sub-03_raw.fif").mkdir(parents=True)
    (fif_dir / "sub-04").mkdir()
    (fif_dir / "sub-04" / "sub-04_raw.fif").symlink_to(tmp_path / "gone_raw.fif")
    (fif_dir / "sub-01" / "notes").mkdir()  # a folder without the pattern's suffix: ignored
    recordings, report = ingest_report(fif_dir, tmp_path)
    assert len(recordings) == 2 and len(report) == 4
    assert "a folder, not a recording file" in report.loc["sub-03/sub-03_raw.fif", "reason"]
    reason = report.loc["sub-04/sub-04_raw.fif", "reason"]
    assert "broken symbolic link" in reason and "gone_raw.fif" in reason


def test_a_file_name_that_is_not_utf8_is_reported_not_a_traceback(fif_dir, tmp_path):
    good = fif_dir / "sub-01" / "sub-01_run-01_raw.fif"
    bad = os.path.join(os.fsencode(fif_dir / "sub-03"), b"sub-03_run-\xff_raw.fif")
    os.makedirs(os.path.dirname(bad))
    shutil.copy(good, bad)
    recordings, report = ingest_report(fif_dir, tmp_path)
    assert len(recordings) == 2
    row = report[report["status"] == "error"].iloc[0]
    assert "not valid UTF-8" in row["reason"] and "\\xff" in row["file"]
    report.to_csv(tmp_path / "r.tsv", sep="\t")  # writable as UTF-8


def test_colliding_recording_names_skip_both_and_keep_the_others(fif_dir, tmp_path):
    same = fif_dir / "sub-01" / "ses-b" / "sub-01_run-01_raw.fif"
    same.parent.mkdir()
    shutil.copy(fif_dir / "sub-01" / "sub-01_run-01_raw.fif", same)
    write_fif(fif_dir / "sub-03" / "sub-03_run-01_raw.fif", NAMES,
              np.random.default_rng(5).standard_normal((4, N_TIMES)) * 1e-5,
              stim_with({0: 2, 500: 1}))
    recordings, report = ingest_report(fif_dir, tmp_path)
    assert sorted(recordings["recording"]) == ["sub-02_run-01_raw", "sub-03_run-01_raw"]
    for rel in ("sub-01/sub-01_run-01_raw.fif", "sub-01/ses-b/sub-01_run-01_raw.fif"):
        assert "recording name 'sub-01_run-01_raw'" in report.loc[rel, "reason"]
    with pytest.raises(OddpipeError, match="ses-b/sub-01_run-01_raw.fif"):
        run_ingest(fif_params(fif_dir, on_error="fail"), tmp_path / "fail")


def test_a_missing_raw_dir_says_so(tmp_path):
    with pytest.raises(OddpipeError, match="no such folder"):
        run_ingest(fif_params(tmp_path / "nowhere"), tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OddpipeError, match="a file, not a folder"):
        run_ingest(fif_params(tmp_path / "file"), tmp_path / "out")


def test_a_missing_stim_channel_is_one_line_with_the_fix(fif_dir, tmp_path):
    with pytest.raises(OddpipeError) as info:
        run_ingest(fif_params(fif_dir, stim_channel="TRIG"), tmp_path / "out")
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all("no stim channel 'TRIG'" in ln for ln in lines[1:])
    assert "ingest.stim_channel" in lines[1]


@pytest.mark.parametrize("value, words", [(0.0, "flat"), (np.nan, "not finite")])
def test_a_flat_or_non_finite_file_is_named_for_what_it_is(fif_dir, tmp_path, value, words):
    write_fif(fif_dir / "sub-03" / "sub-03_raw.fif", NAMES, np.full((4, N_TIMES), value),
              stim_with({0: 2, 500: 1}))
    recordings, report = ingest_report(fif_dir, tmp_path)
    assert len(recordings) == 2
    assert words in report.loc["sub-03/sub-03_raw.fif", "reason"]


# ---- ingest: events.tsv sidecars -----------------------------------------------------

def tsv_dir(tmp_path, sidecar: str):
    """Two recordings without a stim channel; sub-02's events.tsv is good, sub-01's given."""
    rng = np.random.default_rng(6)
    for sub in ("01", "02"):
        path = tmp_path / "raw" / f"sub-{sub}" / f"sub-{sub}_run-01_raw.fif"
        path.parent.mkdir(parents=True)
        info = mne.create_info(NAMES, 250.0, "eeg")
        mne.io.RawArray(rng.standard_normal((4, N_TIMES)) * 1e-5, info,
                        verbose="error").save(path, verbose="error")
        (path.parent / f"sub-{sub}_run-01_events.tsv").write_text(
            "onset\tduration\ttrial_type\n1.0\t0\todd\n2.0\t0\tstd\n3.0\t0\tstd\n")
    (tmp_path / "raw" / "sub-01" / "sub-01_run-01_events.tsv").write_text(sidecar)
    return tmp_path / "raw"


def tsv_ingest(tmp_path, sidecar: str):
    raw_dir = tsv_dir(tmp_path, sidecar)
    return ingest_report(raw_dir, tmp_path, event_source="tsv",
                         events={"target": ["odd"], "nontarget": ["std"]})


HEADER = "onset\tduration\ttrial_type\n"


@pytest.mark.parametrize("rows, shown", [
    ("1.0\t0\todd\nabc\t0\tstd\n", "'abc' on line 3"),
    ("1.0\t0\todd\n\t0\tstd\n", "'' on line 3"),
    ("1,0\t0\todd\n2.0\t0\tstd\n", "'1,0' on line 2"),
    ("1.0\t0\todd\nnan\t0\tstd\n", "'nan' on line 3"),
    ("1.0\t0\todd\ninf\t0\tstd\n", "'inf' on line 3"),
])
def test_an_onset_that_is_not_a_time_is_named_with_its_line(tmp_path, rows, shown):
    recordings, report = tsv_ingest(tmp_path, HEADER + rows)
    assert list(recordings["subject"]) == ["02"]
    reason = report.loc["sub-01/sub-01_run-01_raw.fif", "reason"]
    assert "sub-01_run-01_events.tsv" in reason and shown in reason and "n/a" in reason


def test_a_sidecar_with_more_fields_than_its_header_is_named(tmp_path):
    recordings, report = tsv_ingest(tmp_path, HEADER + "1.0\t0\todd\tx\ty\n2.0\t0\tstd\n")
    assert list(recordings["subject"]) == ["02"]
    reason = report.loc["sub-01/sub-01_run-01_raw.fif", "reason"]
    assert "sub-01_run-01_events.tsv: some lines have more fields than its header" in reason


def test_an_empty_sidecar_is_named(tmp_path):
    recordings, report = tsv_ingest(tmp_path, "")
    assert list(recordings["subject"]) == ["02"]
    reason = report.loc["sub-01/sub-01_run-01_raw.fif", "reason"]
    assert "sub-01_run-01_events.tsv is empty" in reason


def test_events_outside_the_recording_are_counted_and_left_out(tmp_path):
    # 10 s recording: -5 s and 500 s lie outside; 1 s, 2 s and 3 s inside
    recordings, report = tsv_ingest(
        tmp_path, HEADER + "-5.0\t0\todd\n1.0\t0\todd\n2.0\t0\tstd\n3.0\t0\tstd\n500\t0\tstd\n")
    row = report.loc["sub-01/sub-01_run-01_raw.fif"]
    assert (row["status"], row["n_target"], row["n_nontarget"], row["n_outside"]) == (
        "ok", 1, 2, 2)


def test_events_all_outside_the_recording_suggest_the_unit(tmp_path):
    recordings, report = tsv_ingest(tmp_path, HEADER + "1000\t0\todd\n2000\t0\tstd\n")
    reason = report.loc["sub-01/sub-01_run-01_raw.fif", "reason"]
    assert "all 2 lie outside the recording" in reason and "milliseconds" in reason


# ---- filter --------------------------------------------------------------------------

def test_a_nan_burst_the_scan_missed_costs_only_the_epochs_that_touch_it(tmp_path):
    # 0.2 s of NaN in one kept channel: the filter used to spread it over the whole
    # channel, and nearly every epoch of the recording was dropped as non-finite.
    rec, events, _ = make_recording(tmp_path, n_events=40)
    data = np.load(rec.path, allow_pickle=False)
    burst = int(20.5 * SFREQ)
    data[1, burst:burst + int(0.2 * SFREQ)] = np.nan
    continuous.write_array(data, rec.path)
    result, params = run_epochs(rec, events, tmp_path)
    X = np.load(result.part, allow_pickle=False)
    assert np.isfinite(X).all()
    touching = ((events["sample"] + params.tmin * SFREQ <= burst + 0.2 * SFREQ)
                & (events["sample"] + params.tmax * SFREQ >= burst)).sum()
    assert 1 <= result.n_dropped_nonfinite == touching
    assert len(X) == len(events) - touching


def stage_dirs(tmp_path) -> tuple[Path, dict]:
    """A working folder through the outliers stage on the small FIF set, and its params."""
    raw_dir = tmp_path / "raw"
    rng = np.random.default_rng(8)
    pulses = {s: (2 if k % 4 == 0 else 1) for k, s in enumerate(range(250, 19500, 125))}
    for sub in ("01", "02", "03"):
        write_fif(raw_dir / f"sub-{sub}" / f"sub-{sub}_run-01_raw.fif", NAMES,
                  rng.standard_normal((4, 20000)) * 1e-5, stim_long(pulses))
    raw = copy.deepcopy(default_params())
    raw["ingest"].update(raw_dir=str(raw_dir), pattern="**/*_raw.fif", event_source="stim",
                         stim_channel="STI", events={"target": [2], "nontarget": [1]})
    raw["outliers"]["segment_s"] = 2.0
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    codes = run_stages(work, work / "params.yaml", ("ingest", "sample", "outliers"))
    assert set(codes.values()) == {0}, codes
    return work, raw


def stim_long(pulses: dict[int, int], n_times: int = 20000) -> np.ndarray:
    stim = np.zeros(n_times)
    for start, code in pulses.items():
        stim[start:start + 3] = code
    return stim


@pytest.fixture(scope="module")
def stage_work(tmp_path_factory):
    return stage_dirs(tmp_path_factory.mktemp("stages"))


def rerun(stage_work, tmp_path, stage, change=None, params=None) -> tuple[int, str]:
    """Run one stage in a copy of the prepared folder, after change(folder)."""
    work = tmp_path / "copy"
    shutil.copytree(stage_work[0], work)
    if change:
        change(work)
    if params:
        raw = copy.deepcopy(stage_work[1])
        for section, values in params.items():
            raw[section].update(values)
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
    with working_dir(work), redirect_stderr(io.StringIO()) as err:
        code = STAGES[stage].main(["--params", "params.yaml"])
    return code, err.getvalue()


def test_an_epoch_window_longer_than_every_recording_fails_at_once(stage_work, tmp_path):
    code, err = rerun(stage_work, tmp_path, "filter", params={"filter": {"tmax": 1e6}})
    assert code == 1 and "Traceback" not in err
    assert "filter.tmin / filter.tmax" in err and "80" in err


def test_outliers_json_older_than_the_ingest_output_is_named(stage_work, tmp_path):
    def forget_one(work):
        path = work / "data/outliers/outliers.json"
        decisions = json.loads(path.read_text())
        decisions["recordings"].pop("sub-01_run-01_raw")
        path.write_text(json.dumps(decisions))
    code, err = rerun(stage_work, tmp_path, "filter", forget_one)
    assert code == 1 and "Traceback" not in err
    assert "sub-01_run-01_raw" in err and "dvc repro outliers" in err


def corrupt(relpath: str, content: bytes):
    def change(work):
        path = work / relpath
        target = sorted(path.parent.glob(path.name))[0]
        target.write_bytes(content if content else target.read_bytes()[:200])
    return change


@pytest.mark.parametrize("stage, relpath, content, fix", [
    ("outliers", "data/ingest/sub-01*.npy", b"", "dvc repro ingest"),         # truncated
    ("outliers", "data/ingest/recordings.tsv", b"", "rerun the stage that wrote it"),
    ("outliers", "data/sample/sample.tsv", b"recording\tsample\nr1\n", "line 2 has 1 fields"),
    ("filter", "data/ingest/sub-01*.npy", b"\x93NUMPY junk", "dvc repro ingest"),
    ("outliers_report", "data/outliers/evidence.npz", b"junk", "dvc repro outliers"),
    ("outliers_report", "data/outliers/outliers.json", b"{", "dvc repro outliers"),
    ("filter", "data/outliers/outliers.json", b"{", "dvc repro outliers"),
])
def test_a_corrupt_stage_output_names_the_file_and_the_stage_to_rerun(
        stage_work, tmp_path, stage, relpath, content, fix):
    code, err = rerun(stage_work, tmp_path, stage, corrupt(relpath, content))
    assert code == 1 and "Traceback" not in err, err
    assert relpath.split("/")[-1].split("*")[0] in err and fix in err, err


def test_a_pickled_npy_is_refused(stage_work, tmp_path):
    def pickled(work):
        path = sorted((work / "data/ingest").glob("sub-01*.npy"))[0]
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, err = rerun(stage_work, tmp_path, "filter", pickled)
    assert code == 1 and "Traceback" not in err and "dvc repro ingest" in err, err


def test_the_report_without_any_flag_still_renders(stage_work, tmp_path):
    code, err = rerun(stage_work, tmp_path, "outliers_report")
    assert code == 0, err


def edit_cell(relpath: str, column: str, row: int, value: str):
    """Set one cell of a stage's TSV (row 0 is the first after the header)."""
    def change(work):
        path = work / relpath
        lines = path.read_text().splitlines()
        i = lines[0].split("\t").index(column)
        cells = lines[row + 1].split("\t")
        cells[i] = value
        lines[row + 1] = "\t".join(cells)
        path.write_text("\n".join(lines) + "\n")
    return change


@pytest.mark.parametrize("relpath, column, row, value, words", [
    ("data/ingest/recordings.tsv", "sfreq", 1, "fast",
     "column sfreq, line 3: 'fast' is not a number > 0; rerun the ingest stage"),
    ("data/ingest/recordings.tsv", "n_target", 0, "n/a", "column n_target, line 2"),
    ("data/ingest/recordings.tsv", "line_freq", 0, "sixty", "column line_freq, line 2: 'sixty' is not a frequency in Hz or auto"),
    ("data/ingest/recordings.tsv", "recording", 1, "sub-01_run-01_raw", "listed 2 times"),
    ("data/sample/sample.tsv", "sample", 0, "soon", "column sample, line 2: 'soon' is not a "
     "whole number >= 0; rerun the sample stage (dvc repro sample)"),
    ("data/sample/sample.tsv", "recording", 0, "sub-09_run-01_raw",
     "'sub-09_run-01_raw' is not in recordings.tsv (an older sample)"),
])
def test_a_bad_cell_in_the_outliers_inputs_is_named_before_any_work(
        stage_work, tmp_path, relpath, column, row, value, words):
    code, err = rerun(stage_work, tmp_path, "outliers", edit_cell(relpath, column, row, value))
    assert code == 1 and "Traceback" not in err, err
    assert relpath.split("/")[-1] in err and words in err, err


def test_an_array_with_other_channels_than_channels_tsv_is_named(stage_work, tmp_path):
    def fewer(work):
        path = sorted((work / "data/ingest").glob("sub-02*.npy"))[0]
        np.save(path, np.load(path)[:3])
    code, err = rerun(stage_work, tmp_path, "outliers", fewer)
    assert code == 1 and "Traceback" not in err, err
    assert "sub-02_run-01_raw.npy: 3 channels, channels.tsv lists 4" in err, err


def test_a_spreadsheet_bom_is_read_and_no_scratch_is_left(stage_work, tmp_path):
    def bom(work):
        path = work / "data/ingest/recordings.tsv"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, err = rerun(stage_work, tmp_path, "outliers", bom)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "copy/data/outliers").iterdir()) == [
        "evidence.npz", "outliers.json", "outliers.tsv", "stage.json"]


def test_sigterm_during_a_stage_removes_its_scratch_folder(tmp_path):
    """A stage killed with SIGTERM (a scheduler's kill) cleans up as on Ctrl-C."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(default_params()))
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from oddpipe.outliers import spill_dir\n"
        "from stages._common import run_stage\n"
        "def body(params):\n"
        "    with spill_dir(Path(sys.argv[2])):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "sys.exit(run_stage('outliers', body, Path(sys.argv[1])))\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", script, str(params), str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert out.is_dir() and list(out.iterdir()) == []


def test_an_interrupted_table_write_leaves_the_old_table_and_no_temp_file(tmp_path):
    class Interrupting:
        def __str__(self) -> str:
            raise KeyboardInterrupt

    path = tmp_path / "t.tsv"
    write_columns(path, {"a": np.array([1, 2])})
    with pytest.raises(KeyboardInterrupt):
        write_columns(path, {"a": np.array([3, Interrupting()], dtype=object)})
    assert read_columns(path)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tsv"]


def test_ctrl_c_during_a_stage_is_one_line_and_exit_code_130(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(default_params()))

    def body(_):
        raise KeyboardInterrupt

    assert run_stage("ingest", body, params) == 130
    assert capsys.readouterr().err == "oddpipe ingest: interrupted\n"


def test_mne_info_lines_stay_off_when_two_threads_interleave_mne_calls(tmp_path, capsys,
                                                                     monkeypatch):
    """backend threading: thread A leaves an MNE call (restoring the level it found) while
    thread B is still in one; B then logs at the process's level, which must not be INFO."""
    monkeypatch.setenv("MNE_LOGGING_LEVEL", "")  # so that undoing restores it as it was
    monkeypatch.delenv("MNE_LOGGING_LEVEL")
    monkeypatch.setattr(logging.getLogger("mne"), "level", logging.INFO)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(default_params()))
    raw = mne.io.RawArray(np.zeros((1, 1000)), mne.create_info(1, 100.0), verbose="error")
    raw.set_annotations(mne.Annotations([1.0], [0.0], ["target"]))

    def body(_):
        in_a, in_b = mne.utils.use_log_level("error"), mne.utils.use_log_level("error")
        in_a.__enter__()
        in_b.__enter__()
        in_a.__exit__(None, None, None)  # A is done; B is still inside its call
        mne.events_from_annotations(raw)  # what B logs now, at the level A restored
        in_b.__exit__(None, None, None)

    assert run_stage("ingest", body, params) == 0
    out = capsys.readouterr()
    assert "Used Annotations" not in out.out + out.err


def test_a_file_this_user_may_not_open_is_reported_and_the_others_ingested(fif_dir, tmp_path,
                                                                         monkeypatch):
    """A folder readable but not searchable: its files' names are listed, their stat is
    denied (EACCES, which root never gets, hence the patch)."""
    locked = fif_dir / "sub-03"
    shutil.copytree(fif_dir / "sub-01", locked)
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    recordings, report = ingest_report(fif_dir, tmp_path)
    assert len(recordings) == 2 and len(report) == 3
    reason = report.loc["sub-03/sub-01_run-01_raw.fif", "reason"]
    assert "permission denied" in reason and f"chmod -R a+rX {locked}" in reason


def test_a_filter_failing_midway_leaves_no_split_file(stage_work, tmp_path):
    """The split arrays are appended recording by recording: a failure at the last one
    must not leave files that load as finished (their header still says 0 epochs)."""
    def truncate_last(work):
        path = sorted((work / "data/ingest").glob("*.npy"))[-1]
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    code, err = rerun(stage_work, tmp_path, "filter", truncate_last)
    last = sorted((tmp_path / "copy/data/ingest").glob("*.npy"))[-1].name
    assert code == 1 and "Traceback" not in err and last in err, err
    assert "dvc repro ingest" in err
    assert sorted(p.name for p in (tmp_path / "copy/data/filter").glob("*.npy")) == []
