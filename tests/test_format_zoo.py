"""Every primary file of ../shared/data/format_zoo (see its SOURCES.md) through the ingest
stage, one run per file with params that suit it: either status ok with the exact counts
SOURCES.md gives, or status error with a specific reason. No file may crash the stage."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest

import stages.ingest
from oddpipe.io import read_tsv
from tests.conftest import make_params, shared_dataset, write_params

pytestmark = pytest.mark.realdata

CHTYPES_SCALP = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T7",
                 "T8", "P7", "P8", "Fz", "Cz", "Pz"]
CHTYPES_EXTRA = ("POL E,POL PG1,POL PG2,A1,A2,POL T1,POL T2,ECG ECG1,ECG ECG2,F9,T9,P9,F10,T10,"
                 "P10,SaO2 X9,SaO2 X10,POL DC01,POL DC02,POL DC03,POL DC04,POL $A1,POL $A2")


@dataclass
class Case:
    pattern: str  # below format_zoo; one recording each
    events: tuple[list, list]  # (target, nontarget)
    status: str
    counts: tuple[int, int, int]  # target, nontarget, unmapped in reports/ingest.tsv
    reason: str = ""  # a substring of the reason (error rows)
    ingest: dict = field(default_factory=dict)
    channels: tuple[str, str] = ("", "")  # channels_missing, channels_extra


ZOO = {
    # 80 'square' (all targets) and 74 'rt' button presses: no non-target exists
    "eeglab_set_one_class": Case(
        "eeglab/sample_data/eeglab_data.set", (["square"], ["standard"]), "error", (80, 0, 74),
        "only one class present: 80 target event(s) and no nontarget event "
        "(codes found: 'rt', 'square')"),
    # Status 254 x40, 255 x40, 65790/65791 (bit 16 set) once each. Masked: the 65791 at
    # sample 0 is a 255 (kept: an event at sample 0), the 65790 at 212 runs on into a plain
    # 254 at 256, so it is one 254 event with its true onset 212.
    "eeglab_bdf_masked": Case(
        "eeglab/sample_data/test_data/test.bdf", ([255], [254]), "ok", (41, 40, 0),
        ingest={"stim_mask": 255}),
    "eeglab_bdf_unmasked": Case(
        "eeglab/sample_data/test_data/test.bdf", ([255], [254]), "ok", (40, 40, 2)),
    # the .dat and .vmrk beside testbva.vhdr are read through it, never on their own
    "testbva_header_and_side_files": Case(
        "eeglab/sample_data/test_data/testbva.*", (["Stimulus/S  1"], ["Stimulus/S  4"]),
        "ok", (2, 12, 2)),
    "testbva_dat_alone": Case(
        "eeglab/sample_data/test_data/testbva.dat", (["Stimulus/S  1"], ["Stimulus/S  4"]),
        "error", (0, 0, 0), "a side file of testbva.vhdr, not a recording"),
    # S255 x5, Event/254 x3, S253 x2, R255, Sync On, O 1: 13 markers
    "brainvision_test": Case(
        "mne-python/mne/io/brainvision/tests/data/test.vhdr",
        (["Stimulus/S253"], ["Stimulus/S255"]), "ok", (2, 5, 6)),
    "brainvision_fif_stim": Case(
        "mne-python/mne/io/brainvision/tests/data/test_bin_raw.fif", ([253], [255]), "ok",
        (2, 5, 3)),
    # annotations type A x3, type B x1, start x1
    "edf_annotations": Case(
        "mne-python/mne/io/edf/tests/data/test.edf", (["type B"], ["type A"]), "ok", (1, 3, 1),
        ingest={"event_source": "annotations"}),
    # Status 4096/4100/4352 masked to the low byte: 0/4/0, so six events of code 4 only
    "edf_stim_masked_one_class": Case(
        "mne-python/mne/io/edf/tests/data/test.edf", ([4], [1]), "error", (6, 0, 0),
        "only one class present: 6 target event(s)", ingest={"stim_mask": 255}),
    "bdf_multiple_annotation_channels": Case(
        "mne-testing-data/BDF/multiple_annotation_chans.bdf",
        (["TestStim#1"], [f"TestStim#{i}" for i in range(2, 8)]), "ok", (1, 6, 3),
        ingest={"event_source": "annotations"}),
    # auto prefers the stim channel: 'Trigger' holds a counter, not event codes
    "bdf_trigger_counter_is_not_events": Case(
        "mne-testing-data/BDF/multiple_annotation_chans.bdf",
        (["TestStim#1"], ["TestStim#2"]), "error", (0, 0, 29352),
        "no usable events (source: stim, 29352 found: '40717'"),
    "bdf_stim_channel": Case(
        "mne-testing-data/BDF/test_bdf_stim_channel.bdf", ([2], [1]), "ok", (1, 7, 1)),
    "brainvision_neurone_no_events": Case(
        "mne-testing-data/Brainvision/test_NO.vhdr", (["S  1"], ["S  2"]), "error", (0, 0, 0),
        "no usable events (source: none, 0 found; none mapped)"),
    "cnt_without_data_format": Case(
        "mne-testing-data/CNT/scan41_short.cnt", (["109"], ["7"]), "error", (0, 0, 0),
        "Neuroscan CNT scan41_short.cnt: MNE cannot detect its sample width (Could not "
        "automatically compute number of bytes per sample as the number of samples (according "
        "to header) is 0.  set data_format manually.); set it: ingest.reader_options: "
        "{'*.cnt': {data_format: int16}} (or int32"),
    # annotations 7 x3, 109 x2, 0 x1
    "cnt_int16": Case(
        "mne-testing-data/CNT/scan41_short.cnt", (["109"], ["7"]), "ok", (2, 3, 1),
        ingest={"reader_options": {"*/scan41_short.cnt": {"data_format": "int16"}}}),
    # the wrong sample width reads volts in the 1 V range: caught, never rescaled
    "cnt_wrong_width_is_implausible": Case(
        "mne-testing-data/CNT/scan41_short.cnt", (["109"], ["7"]), "error", (2, 3, 1),
        "implausible amplitude: typical channel RMS 1.02 V",
        ingest={"reader_options": {"*.cnt": {"data_format": "int32"}}}),
    # 5 x8, 99, KeyPad Response 1; the two BAD_0 spans are no events
    "cnt_int32": Case(
        "mne-testing-data/CNT/test_CNT_events_mne_JWoess_clipped.cnt", (["99"], ["5"]), "ok",
        (1, 8, 1), ingest={"reader_options": {"*JWoess*": {"data_format": "int32"}}}),
    # free-text annotations; 'A1+A2 OFF' is at sample 0. The 19 scalp channels by name;
    # the report lists the 23 others (POL, ECG, SaO2, A1/A2, 10-10 extras) as extra.
    "edf_clinical_explicit_channels": Case(
        "mne-testing-data/EDF/chtypes_edf.edf",
        (["high amp RDA F4, C4"], ["A1+A2 OFF", "starts turning head"]), "ok", (1, 2, 5),
        ingest={"channels": CHTYPES_SCALP}, channels=("", CHTYPES_EXTRA)),
    # T0 x19 (rest), T1 x10, T2 x9
    "edf_overlapping_annotations": Case(
        "mne-testing-data/EDF/test_edf_overlapping_annotations.edf", (["T1", "T2"], ["T0"]),
        "ok", (19, 19, 0)),
    "gdf_one_channel_no_events": Case(
        "mne-testing-data/GDF/test_1ch.gdf", (["1"], ["2"]), "error", (0, 0, 0),
        "no usable events (source: none, 0 found; none mapped)"),
    "nihon_kohden": Case(
        "mne-testing-data/NihonKohden/MB0400FU.EEG", (["A1+A2 OFF"], ["REC START ALLE EEG"]),
        "ok", (1, 1, 0)),
}

@pytest.fixture(scope="module")
def zoo_runs(tmp_path_factory) -> dict:
    return {}


def run_case(name: str, runs: dict, tmp_path_factory, capsys) -> tuple[int, pd.DataFrame, str]:
    """One ingest stage run on one zoo file: (exit code, reports/ingest.tsv, stderr)."""
    if name not in runs:
        case = ZOO[name]
        work = tmp_path_factory.mktemp(name)
        params = make_params(shared_dataset("format_zoo"), ingest={
            "pattern": case.pattern, "path_regex": r"(?P<subject>[A-Za-z0-9_]+)\.[^/.]+$",
            "events": {"target": case.events[0], "nontarget": case.events[1]},
            **case.ingest})
        capsys.readouterr()
        code = stages.ingest.main(["--params", str(write_params(work / "params.yaml", params)),
                                   "--out", str(work / "out"), "--report",
                                   str(work / "ingest.tsv")])
        runs[name] = (code, read_tsv(work / "ingest.tsv"), capsys.readouterr().err)
    return runs[name]


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_file_outcome(name, zoo_runs, tmp_path_factory, capsys):
    case = ZOO[name]
    _, report, err = run_case(name, zoo_runs, tmp_path_factory, capsys)
    assert "Traceback" not in err
    assert len(report) == 1, report["file"].tolist()  # one recording, side files not listed
    row = report.iloc[0]
    assert row["file"].endswith(case.pattern.replace("*", "vhdr"))
    assert (row["status"], int(row["n_target"]), int(row["n_nontarget"]),
            int(row["n_unmapped"])) == (case.status, *case.counts), row["reason"]
    if case.status == "error":
        assert case.reason in row["reason"]
    else:
        assert pd.isna(row["reason"]) or row["reason"] == ""
    differences = tuple("" if pd.isna(row[c]) else row[c]
                        for c in ("channels_missing", "channels_extra"))
    if case.status == "ok":
        assert differences == case.channels


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_stage_exit_code(name, zoo_runs, tmp_path_factory, capsys):
    """ok files ingest (0); an error file alone leaves no usable recording (1), no traceback."""
    code, _, err = run_case(name, zoo_runs, tmp_path_factory, capsys)
    assert "Traceback" not in err
    assert code == (0 if ZOO[name].status == "ok" else 1), err
    if code == 1:
        assert err.startswith("oddpipe ingest: error: no usable recording:")
