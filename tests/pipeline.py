"""Run every stage's main in order, in a working folder (what dvc repro runs)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from stages import (evaluate, filter, ingest, normalize, outliers, outliers_report, sample,
                    train)

STAGES = {"ingest": ingest, "sample": sample, "outliers": outliers,
          "outliers_report": outliers_report, "filter": filter, "normalize": normalize,
          "train": train, "evaluate": evaluate}


@contextmanager
def working_dir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_stages(workdir: Path, params_path: Path, names=tuple(STAGES)) -> dict[str, int]:
    """Exit code per stage; stops at the first failure."""
    codes = {}
    with working_dir(workdir):
        for name in names:
            codes[name] = STAGES[name].main(["--params", str(params_path)])
            if codes[name] != 0:
                break
    return codes
