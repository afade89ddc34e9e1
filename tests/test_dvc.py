"""DVC behaviour end to end, in a temporary copy of the repo (a fresh git repo) on the
small demo: caching, which stages a param change reruns, and metrics diff across commits."""
from __future__ import annotations

import ast
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oddpipe.demo import generate
from tests.conftest import REPO, SMALL_SPEC

pytestmark = pytest.mark.slow

ALL = {"ingest", "sample", "outliers", "outliers_report", "filter", "normalize", "train",
       "evaluate"}


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def set_param(repo: Path, section: str, key: str, value) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The working tree (tracked and not ignored files), a small demo, a fresh git repo."""
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    generate(dst / "data/raw/demo", dst / "data/raw/demo_truth.json", SMALL_SPEC)
    set_param(dst, "train", "max_epochs", 3)
    sh(dst, "git", "init", "-q")
    sh(dst, "git", "add", "-A")
    sh(dst, "git", "commit", "-qm", "copy")
    return dst


def test_first_repro_runs_every_stage_and_second_none(repo):
    assert ran(sh(repo, "dvc", "repro")) == ALL
    assert ran(sh(repo, "dvc", "repro")) == set()
    assert "up to date" in sh(repo, "dvc", "status")


def test_train_param_reruns_only_train_and_evaluate(repo):
    set_param(repo, "train", "lr", 0.002)
    assert ran(sh(repo, "dvc", "repro")) == {"train", "evaluate"}


def test_filter_param_reruns_filter_and_downstream_only(repo):
    set_param(repo, "filter", "h_freq", 15.0)
    assert ran(sh(repo, "dvc", "repro")) == {"filter", "normalize", "train", "evaluate"}


def test_execution_settings_rerun_nothing(repo):
    set_param(repo, "execution", "n_jobs", 2)
    assert ran(sh(repo, "dvc", "repro")) == set()


def test_metrics_diff_across_two_commits(repo):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "lr 0.002")
    set_param(repo, "train", "lr", 0.01)
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "lr 0.01")
    diff = sh(repo, "dvc", "metrics", "diff", "HEAD~1", "HEAD", "--all")
    rows = {line.split()[1]: line.split() for line in diff.splitlines()
            if line.startswith("metrics/eval.json")}
    assert {"roc_auc", "balanced_accuracy", "accuracy"} <= set(rows)
    old, new = float(rows["roc_auc"][2]), float(rows["roc_auc"][3])
    assert 0 <= old <= 1 and 0 <= new <= 1
    params_diff = sh(repo, "dvc", "params", "diff", "HEAD~1", "HEAD")
    assert re.search(r"train\.lr\s+0\.002\s+0\.01", params_diff)


def cached_copy(repo: Path, path: Path) -> Path:
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    return repo / ".dvc/cache/files/md5" / digest[:2] / digest[2:]


def test_a_stage_run_by_hand_writes_new_files_and_leaves_the_cache_intact(repo):
    """.dvc/config links outputs to the cache (hardlinks here): a stage run outside DVC
    over them must not write into the cached file of the last run."""
    model = repo / "data/train/model.pt"
    cached = cached_copy(repo, model)
    assert model.stat().st_nlink == 2 and model.stat().st_ino == cached.stat().st_ino
    before = cached.read_bytes()
    set_param(repo, "train", "lr", 0.02)
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    sh(repo, *shlex.split(cmd))
    assert model.read_bytes() != before  # the run wrote another model...
    assert cached.read_bytes() == before  # ...into a new file, not into the cached one
    assert hashlib.md5(before).hexdigest() == cached.parent.name + cached.name
    assert "data/train" in sh(repo, "dvc", "status")


def local_imports(path: Path) -> set[str]:
    """The oddpipe / stages modules a file imports, anywhere in it (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in ("oddpipe", "stages")
            and module_file(m).is_file()}


def module_file(module: str) -> Path:
    path = REPO / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def test_every_stage_lists_every_module_it_runs_as_a_dependency():
    """A module a stage imports, however indirectly, must be in its deps: else editing it
    leaves the stage's output stale without DVC noticing."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        todo = [re.search(r"python -m (\S+)", stage["cmd"]).group(1)]
        seen: set[str] = set()
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += local_imports(module_file(module))
                parent = module.rpartition(".")[0]
                todo += [parent] if parent else []  # a package's __init__ runs first
        needed = {module_file(m).relative_to(REPO).as_posix() for m in seen
                  if not docstring_only(module_file(m))}
        if lacking := sorted(needed - set(stage["deps"])):
            missing[name] = lacking
    assert missing == {}
