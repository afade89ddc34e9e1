"""The story as regression tests: unnormalized input with outliers stops loudly, the
normalizer reports how much the outliers would inflate the scale, no leakage on noise,
and the same params give the same metrics."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from oddpipe.demo import DemoSpec, generate
from oddpipe.io import read_json, read_tsv
from tests.conftest import make_params, write_params
from tests.pipeline import run_stages


@pytest.fixture(scope="module")
def default_run(small_demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("story")
    params = write_params(work / "params.yaml",
                          make_params(small_demo["raw_dir"], train={"max_epochs": 8}))
    assert set(run_stages(work, params).values()) == {0}
    return {"work": work, "params": params, "truth": small_demo["truth"]["contaminated"]}


def test_outliers_kept_and_no_normalization_stop_training_loudly(small_demo, tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", make_params(
        small_demo["raw_dir"], outliers={"action": "report_only"},
        normalize={"method": "none"}, train={"max_epochs": 2}))
    codes = run_stages(tmp_path, params)
    assert codes["train"] == 1 and "evaluate" not in codes
    err = capsys.readouterr().err
    assert "training input looks wrong" in err
    assert "normalize.method" in err and "reports/outliers.html" in err
    assert not (tmp_path / "metrics/train.json").exists()
    assert not (tmp_path / "metrics/eval.json").exists()


def test_default_pipeline_learns_above_chance(default_run):
    metrics = read_json(default_run["work"] / "metrics/eval.json")
    assert metrics["roc_auc"] > 0.65 and metrics["balanced_accuracy"] > 0.55
    assert np.isfinite([v for v in metrics.values() if not isinstance(v, bool)]).all()


def test_normalize_reports_how_much_the_outliers_would_inflate_the_scale(default_run):
    work = default_run["work"]
    splits = read_tsv(work / "data/sample/splits.tsv")
    train_recs = set(splits.loc[splits["split"] == "train", "recording"])
    bad = {ch for rec, chans in default_run["truth"].items() if rec in train_recs for ch in chans}
    assert bad, "the small demo must put a contaminated recording in train"
    inflation = read_json(work / "metrics/normalize.json")["scale_inflation_if_flagged_kept"]
    for channel, factor in inflation.items():
        if channel in bad:
            assert factor > 2, (channel, factor)   # well above 1 with them, even filtered
        else:
            assert factor == pytest.approx(1.0, abs=1e-3)  # exactly 1 without


def test_normalizer_ignores_the_test_split(default_run, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(default_run["work"], work)
    before = (work / "data/normalize/normalizer.json").read_text()
    X = np.load(work / "data/filter/test_X.npy", allow_pickle=False)
    np.save(work / "data/filter/test_X.npy", np.random.default_rng(0).normal(
        0, 1.0, X.shape).astype(np.float32))
    assert run_stages(work, default_run["params"], names=("normalize",)) == {"normalize": 0}
    assert (work / "data/normalize/normalizer.json").read_text() == before


def test_same_params_same_metrics(default_run, tmp_path):
    work = tmp_path / "again"
    shutil.copytree(default_run["work"], work)
    assert set(run_stages(work, default_run["params"], names=("train", "evaluate")).values()) == {0}
    for name in ("eval.json", "train.json"):
        assert (work / "metrics" / name).read_text() == \
            (default_run["work"] / "metrics" / name).read_text()


@pytest.mark.slow
def test_pure_noise_gives_chance_auc(tmp_path):
    """No P300 at all: targets and standards are the same noise. Averaged over 5 seeds the
    network and the LDA must come out at chance (0.5 +- 0.1): nothing leaks."""
    aucs, lda = [], []
    for seed in range(5):
        spec = DemoSpec(n_subjects=3, n_runs=3, duration_s=60.0, seed=100 + seed,
                        p300_uv=0.0, contaminated={})
        root = tmp_path / f"s{seed}"
        generate(root / "raw", root / "truth.json", spec)
        params = write_params(root / "params.yaml", make_params(
            root / "raw", sample={"seed": seed}, train={"max_epochs": 3, "seed": seed}))
        assert set(run_stages(root, params).values()) == {0}
        metrics = json.loads((root / "metrics/eval.json").read_text())
        aucs.append(metrics["roc_auc"])
        lda.append(metrics["lda_roc_auc"])
    assert abs(np.mean(aucs) - 0.5) < 0.1, aucs
    assert abs(np.mean(lda) - 0.5) < 0.1, lda
