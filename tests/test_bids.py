"""ingest.layout: bids — recordings found by mne-bids, subject/session/run from the BIDS
entities, events from events.tsv (trial_type, or value), the sidecar's line frequency per
recording; exact counts on a dataset written with mne_bids.write_raw_bids."""
from __future__ import annotations

import mne
import mne_bids
import numpy as np
import pandas as pd
import pytest

import stages.ingest
from oddpipe.io import read_tsv
from tests.conftest import make_params, write_params

SFREQ = 250.0
N_TIMES = 7500  # 30 s
NAMES = ["Fz", "Cz", "Pz", "Oz"]
LINE_FREQ = {"01": 50.0, "02": 60.0}
EVENT_ID = {"standard": 1, "target": 2, "response": 3}


def n_targets(subject: str, run: str) -> int:
    """4, 5, 6, 7 targets for (01, 01), (01, 02), (02, 01), (02, 02)."""
    return 4 + 2 * (int(subject) - 1) + int(run) - 1


def stimuli(subject: str, run: str) -> np.ndarray:
    """28 stimuli one second apart (the first n_targets are targets) and two responses."""
    codes = [2] * n_targets(subject, run) + [1] * (28 - n_targets(subject, run))
    stim = [[250 * (i + 1), 0, c] for i, c in enumerate(codes)]
    return np.array(stim + [[7250, 0, 3], [7300, 0, 3]])


def write_dataset(root) -> None:
    rng = np.random.default_rng(0)
    for subject in ("01", "02"):
        for run in ("01", "02"):
            info = mne.create_info(NAMES, SFREQ, "eeg")
            raw = mne.io.RawArray(rng.standard_normal((len(NAMES), N_TIMES)) * 1e-5, info,
                                  verbose="error")
            raw.info["line_freq"] = LINE_FREQ[subject]
            path = mne_bids.BIDSPath(subject=subject, session="01", task="oddball", run=run,
                                     datatype="eeg", root=root)
            mne_bids.write_raw_bids(raw, path, events=stimuli(subject, run), event_id=EVENT_ID,
                                    allow_preload=True, format="EDF", verbose="error")


@pytest.fixture(scope="module")
def bids_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    write_dataset(root)
    # derivatives are not raw recordings: they must not be ingested
    (root / "derivatives" / "sub-01" / "eeg").mkdir(parents=True)
    (root / "derivatives" / "sub-01" / "eeg" / "sub-01_task-oddball_eeg.edf").write_bytes(b"x")
    return root


def run_stage(tmp_path, root, **ingest) -> tuple[int, pd.DataFrame | None, pd.DataFrame | None]:
    """The ingest stage on a BIDS root: (exit code, reports/ingest.tsv, recordings.tsv)."""
    values = {"layout": "bids", "events": {"target": ["target"], "nontarget": ["standard"]},
              "path_regex": "nothing-(?P<subject>matches)"}  # bids ignores path_regex
    params = make_params(root, ingest={**values, **ingest})
    tmp_path.mkdir(parents=True, exist_ok=True)
    argv = ["--params", str(write_params(tmp_path / "params.yaml", params)),
            "--out", str(tmp_path / "out"), "--report", str(tmp_path / "ingest.tsv")]
    code = stages.ingest.main(argv)
    report, recordings = tmp_path / "ingest.tsv", tmp_path / "out" / "recordings.tsv"
    return (code, read_tsv(report) if report.exists() else None,
            read_tsv(recordings) if recordings.exists() else None)


EXPECTED = [(s, r, n_targets(s, r), 28 - n_targets(s, r)) for s in ("01", "02")
            for r in ("01", "02")]


def counts(recordings: pd.DataFrame) -> list[tuple[str, str, int, int]]:
    return [(r.subject, r.run, int(r.n_target), int(r.n_nontarget))
            for r in recordings.sort_values(["subject", "run"]).itertuples()]


def test_bids_subjects_runs_counts_and_line_freq(tmp_path, bids_root):
    code, report, recordings = run_stage(tmp_path, bids_root)
    assert code == 0
    assert counts(recordings) == EXPECTED
    assert list(recordings["session"]) == ["01"] * 4
    assert list(recordings["n_unmapped"]) == [2] * 4  # the two responses
    assert list(recordings["event_source"]) == ["tsv"] * 4
    assert sorted(p.rsplit("/", 1)[-1] for p in report["file"]) == [
        f"sub-{s}_ses-01_task-oddball_run-{r}_eeg.edf" for s in ("01", "02") for r in ("01", "02")]
    assert (report["status"] == "ok").all()
    by_subject = dict(zip(report["file"].str.extract(r"sub-(\d+)")[0], report["line_freq"]))
    assert by_subject == {"01": 50.0, "02": 60.0}


def test_tsv_column_value_reads_the_codes(tmp_path, bids_root):
    _, _, recordings = run_stage(tmp_path, bids_root, tsv_column="value",
                                 events={"target": [2], "nontarget": [1]})
    assert counts(recordings) == EXPECTED


def test_annotations_made_by_mne_bids_agree(tmp_path, bids_root):
    _, report, recordings = run_stage(tmp_path, bids_root, event_source="annotations")
    assert counts(recordings) == EXPECTED
    assert list(report["event_source"]) == ["annotations"] * 4


def test_trial_type_all_na_falls_back_to_value(tmp_path, bids_root):
    root = tmp_path / "copy"
    write_dataset(root)
    for tsv in root.rglob("*_events.tsv"):
        table = pd.read_csv(tsv, sep="\t", dtype=str)
        table.assign(trial_type="n/a").to_csv(tsv, sep="\t", index=False)
    _, _, recordings = run_stage(tmp_path, root, events={"target": [2], "nontarget": [1]})
    assert counts(recordings) == EXPECTED
    # mne-bids makes the same choice for its annotations
    _, _, from_annotations = run_stage(tmp_path / "b", root, event_source="annotations",
                                       events={"target": [2], "nontarget": [1]})
    assert counts(from_annotations) == EXPECTED


def test_a_folder_that_is_not_a_bids_root_is_named(tmp_path, bids_root, capsys):
    code, report, _ = run_stage(tmp_path, bids_root / "sub-01")
    assert code == 1
    err = capsys.readouterr().err
    assert "not a BIDS root (no dataset_description.json)" in err and "sub-01" in err
    assert report is None  # nothing was found, so there is no row to write


def test_explicit_channels_in_a_bids_root(tmp_path, bids_root):
    code, report, recordings = run_stage(tmp_path, bids_root, channels=["Oz", "Fz"])
    assert code == 0 and list(recordings["n_channels"]) == [2] * 4
    assert list(report["channels_extra"]) == ["Cz,Pz"] * 4
    assert list(report["channels_missing"].fillna("")) == [""] * 4


def test_event_samples_come_from_events_tsv(tmp_path, bids_root):
    run_stage(tmp_path, bids_root)
    events = read_tsv(tmp_path / "out" / "events.tsv")
    first = events[events["recording"] == "sub-01_ses-01_task-oddball_run-01_eeg"]
    assert list(first["sample"]) == [250 * (i + 1) for i in range(28)]
    assert list(first["y"]) == [1] * 4 + [0] * 24


def test_recordings_tsv_takes_the_sidecar_line_freq(tmp_path, bids_root):
    _, _, recordings = run_stage(tmp_path, bids_root)
    assert list(recordings.sort_values("subject")["line_freq"]) == [50.0, 50.0, 60.0, 60.0]


def test_a_truncated_file_in_a_bids_root_is_reported_and_the_others_ingest(tmp_path):
    root = tmp_path / "bids"
    write_dataset(root)
    cut = next(root.glob("sub-02/ses-01/eeg/*run-02_eeg.edf"))
    cut.write_bytes(cut.read_bytes()[:-4000])  # the header still promises every record
    code, report, recordings = run_stage(tmp_path / "run", root)
    assert code == 0
    status = dict(zip(report["file"].str.extract(r"(sub-\d+_ses-01_task-oddball_run-\d+)")[0],
                      report["status"]))
    assert status == {"sub-01_ses-01_task-oddball_run-01": "ok",
                      "sub-01_ses-01_task-oddball_run-02": "ok",
                      "sub-02_ses-01_task-oddball_run-01": "ok",
                      "sub-02_ses-01_task-oddball_run-02": "error"}
    reason = report.loc[report["status"] == "error", "reason"].iloc[0]
    assert reason.startswith("the file looks truncated")
    assert len(recordings) == 3
