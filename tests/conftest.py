"""Shared fixtures: a small seeded demo dataset (EDF) with known contamination, and
helpers to build params for it. Real recordings come from ../shared/data when present."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from oddpipe.demo import DemoSpec, generate
from oddpipe.params import Params, parse_params

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ODDPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))

# 3 subjects x 3 runs x 90 s; two contaminated runs of subject 02, as in the story.
SMALL_SPEC = DemoSpec(
    n_subjects=3, n_runs=3, duration_s=90.0, seed=7,
    contaminated={"sub-02_run-02": ["RH3", "RH4"], "sub-02_run-03": ["LA2", "RH3", "RH4"]},
)


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def make_params(raw_dir: Path, **sections: dict) -> Params:
    """The repo's params.yaml pointed at raw_dir, with per-section overrides."""
    raw = copy.deepcopy(default_params())
    raw["ingest"]["raw_dir"] = str(raw_dir)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_params(raw)


def write_params(path: Path, params: Params) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> dict:
    """{'raw_dir': Path, 'truth': dict} of the small demo, generated once per session."""
    root = tmp_path_factory.mktemp("small_demo")
    generate(root / "raw", root / "truth.json", SMALL_SPEC)
    return {"raw_dir": root / "raw", "truth": json.loads((root / "truth.json").read_text())}


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real recordings live in ../shared/data)")
    return path
