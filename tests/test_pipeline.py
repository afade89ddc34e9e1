"""Every stage's main, in order, on the small demo: the outputs the next stage and the
user rely on (exact flags, finite metrics beside their baselines, aligned tables)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from oddpipe.io import read_json, read_tsv
from tests.conftest import make_params, write_params
from tests.pipeline import run_stages

EVAL_KEYS = {"accuracy", "balanced_accuracy", "majority_baseline_accuracy", "roc_auc",
             "average_precision", "f1", "tp", "fp", "tn", "fn", "n_test", "target_fraction",
             "lda_roc_auc", "degenerate_predictions", "n_nan_predictions"}


@pytest.fixture(scope="module")
def run(small_demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    params = write_params(work / "params.yaml",
                          make_params(small_demo["raw_dir"], train={"max_epochs": 8}))
    codes = run_stages(work, params)
    return {"work": work, "codes": codes, "truth": small_demo["truth"]}


def test_every_stage_succeeds(run):
    assert run["codes"] == dict.fromkeys(
        ["ingest", "sample", "outliers", "outliers_report", "filter", "normalize", "train",
         "evaluate"], 0)


def test_outliers_flag_exactly_the_detached_channels(run):
    decisions = read_json(run["work"] / "data/outliers/outliers.json")["recordings"]
    flagged = {rec: sorted(d["flags"]) for rec, d in decisions.items() if d["flags"]}
    assert flagged == run["truth"]["contaminated"]
    assert all(d["action"] == "drop_channels" for rec, d in decisions.items() if d["flags"])


def test_dropped_channels_are_masked_in_the_epochs(run):
    work = run["work"]
    channels = read_json(work / "data/filter/epochs.json")["channels"]
    for split in ("train", "val", "test"):
        table = read_tsv(work / f"data/filter/{split}.tsv")
        mask = np.load(work / f"data/filter/{split}_mask.npy", allow_pickle=False)
        X = np.load(work / f"data/filter/{split}_X.npy", mmap_mode="r", allow_pickle=False)
        assert X.shape[0] == len(table) == mask.shape[0]
        for rec, bad in run["truth"]["contaminated"].items():
            rows = (table["recording"] == rec).to_numpy()
            expected = np.isin(channels, bad)
            assert (mask[rows] == expected).all()
            assert not np.abs(X[rows][:, expected]).any()


def test_eval_metrics_are_finite_with_baselines(run):
    metrics = read_json(run["work"] / "metrics/eval.json")
    assert EVAL_KEYS <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values() if not isinstance(v, bool))
    assert metrics["n_nan_predictions"] == 0
    n = metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"]
    assert n == metrics["n_test"] == len(read_tsv(run["work"] / "data/filter/test.tsv"))
    prevalence = (metrics["tp"] + metrics["fn"]) / n
    assert metrics["majority_baseline_accuracy"] == pytest.approx(1 - prevalence, abs=1e-6)
    assert metrics["lda_roc_auc"] > 0.7  # the small demo is learnable by the reference


def test_splits_never_share_a_recording(run):
    splits = read_tsv(run["work"] / "data/sample/splits.tsv")
    per_recording = splits.groupby("recording")["split"].nunique()
    assert (per_recording == 1).all()


def test_every_stage_records_its_params(run):
    assert (run["work"] / "reports/outliers.html").stat().st_size > 0
    for stage in ("ingest", "sample", "outliers", "filter", "normalize", "train"):
        record = json.loads((run["work"] / f"data/{stage}/stage.json").read_text())
        assert record["stage"] == stage
    assert read_json(run["work"] / "data/train/stage.json")["params"]["max_epochs"] == 8
