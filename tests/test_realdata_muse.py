"""The same pipeline on real recordings: ../shared/data/muse_visual_p300 (Muse headband,
FIF, stim channel STI: 1 = non-target, 2 = target). Skipped where the folder is absent."""
from __future__ import annotations

import math

import pytest
import yaml

from oddpipe.io import read_json, read_tsv
from oddpipe.params import parse_params
from tests.conftest import REPO, shared_dataset, write_params
from tests.pipeline import run_stages

pytestmark = pytest.mark.realdata

# SOURCES.md, "Summary per subject": non-target and target counts.
EXPECTED = {"01": (2606, 483), "03": (2468, 470), "04": (83, 12)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = shared_dataset("muse_visual_p300")
    raw = yaml.safe_load((REPO / "configs/muse_visual_p300.yaml").read_text())
    raw["ingest"]["raw_dir"] = str(data)
    raw["train"]["max_epochs"] = 4
    work = tmp_path_factory.mktemp("muse")
    params = write_params(work / "params.yaml", parse_params(raw))
    return {"work": work, "codes": run_stages(work, params)}


def test_pipeline_finishes(run):
    assert set(run["codes"].values()) == {0}
    assert len(run["codes"]) == 8  # every stage, the report included


def test_events_per_subject_match_sources(run):
    recordings = read_tsv(run["work"] / "data/ingest/recordings.tsv")
    assert len(recordings) == 32
    counts = recordings.groupby("subject")[["n_nontarget", "n_target"]].sum()
    assert {s: (int(r.n_nontarget), int(r.n_target)) for s, r in counts.iterrows()} == EXPECTED
    assert set(recordings["event_source"]) == {"stim"}
    assert recordings["n_channels"].eq(4).all()  # TP9 AF7 AF8 TP10; Right AUX is misc


def test_metrics_finite_with_baselines(run):
    m = read_json(run["work"] / "metrics/eval.json")
    for key in ("accuracy", "majority_baseline_accuracy", "balanced_accuracy", "roc_auc",
                "average_precision", "average_precision_baseline", "lda_roc_auc"):
        assert math.isfinite(m[key]), key
    assert m["majority_baseline_accuracy"] == pytest.approx(1 - m["target_fraction"], abs=1e-6)
    assert 0.1 < m["target_fraction"] < 0.2  # ~15 % targets in this paradigm


def test_behind_the_ear_channels_dominate_the_flags(run):
    flags = read_tsv(run["work"] / "data/outliers/outliers.tsv")
    per_channel = flags[flags["flagged"]].groupby("channel").size()
    assert per_channel.idxmax() in {"TP9", "TP10"}
    assert per_channel.get("TP9", 0) + per_channel.get("TP10", 0) > 0.7 * per_channel.sum()
