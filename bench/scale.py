"""End-to-end `dvc repro` at 1x, 4x and 16x the demo's size (more subjects), serial and
with execution.n_jobs=2: wall time per stage and in all, and the peak RSS of the largest
process (ru_maxrss over every process dvc started).

Each run is a fresh copy of the repository (tracked files) with a fresh git repo and DVC
cache, params.yaml pointed at the scaled demo. Training is bounded (train.max_epochs 3,
patience 3) so that its share grows with the data, not with early stopping's luck.

Run: .venv/bin/python bench/scale.py [--scales 1 4 16] [--jobs 1 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ROOT = Path("/tmp/oddpipe-scale")
BASE_SUBJECTS = 5  # the demo: 5 subjects x 4 runs x 6 min


def scaled_demo(scale: int) -> Path:
    """The demo with scale x 5 subjects, generated once and kept under /tmp."""
    raw = ROOT / f"raw-{scale}x"
    if not (raw / ".complete").exists():
        shutil.rmtree(raw, ignore_errors=True)
        subprocess.run([sys.executable, "-c", (
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            "from oddpipe.demo import DemoSpec, generate;"
            "generate(Path(sys.argv[2]), Path(sys.argv[2]) / 'truth.json',"
            " DemoSpec(n_subjects=int(sys.argv[3])))"),
            str(REPO), str(raw), str(BASE_SUBJECTS * scale)], check=True)
        (raw / ".complete").touch()
    return raw


def workspace(scale: int, n_jobs: int, raw: Path) -> Path:
    work = ROOT / f"work-{scale}x-j{n_jobs}"
    shutil.rmtree(work, ignore_errors=True)
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, work / f)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["ingest"]["raw_dir"] = str(raw)
    params["execution"]["n_jobs"] = n_jobs
    params["train"].update(max_epochs=3, patience=3)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=work, check=True)
    return work


def repro(work: Path) -> tuple[float, dict[str, list[float]], float]:
    """(wall s, per stage [wall s with DVC's hashing and caching, the stage's own s and
    peak RSS MB as it logs them], peak RSS MB of the largest process dvc started)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", "--force"], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marks: list[tuple[str, float]] = []
    own: dict[str, tuple[float, float]] = {}
    for line in proc.stdout:
        if m := re.match(r"Running stage '(\w+)'", line):
            marks.append((m.group(1), time.perf_counter()))
        if m := re.match(r"(\w+): done in ([\d.]+) s, peak RSS (\d+) MB", line):
            own[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    if proc.wait() != 0:
        sys.exit(f"dvc repro failed in {work}")
    end = time.perf_counter()
    stamps = [t for _, t in marks] + [end]
    stages = {name: stamps[i + 1] - t for i, (name, t) in enumerate(marks)}
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return end - start, {k: [round(v, 1), *own.get(k, (0.0, 0.0))]
                         for k, v in stages.items()}, peak_mb


def measure(scale: int, n_jobs: int) -> tuple[float, dict[str, float], float, float]:
    """One run in a fresh process, so ru_maxrss covers only its own children."""
    out = subprocess.run([sys.executable, __file__, "--one", str(scale), str(n_jobs)],
                         capture_output=True, text=True, check=True).stdout
    result = yaml.safe_load(out.strip().splitlines()[-1])
    return result["wall"], result["stages"], result["peak_mb"], result["mb"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        scale, n_jobs = args.one
        raw = scaled_demo(scale)
        work = workspace(scale, n_jobs, raw)
        wall, stages, peak = repro(work)
        mb = sum(f.stat().st_size for f in raw.rglob("*.edf")) / 1e6
        shutil.rmtree(work)
        print(yaml.safe_dump({"wall": wall, "stages": stages, "peak_mb": peak, "mb": mb},
                             default_flow_style=True, width=10_000))
        return
    rows = []
    for scale in args.scales:
        for n_jobs in args.jobs:
            wall, stages, peak, mb = measure(scale, n_jobs)
            rows.append((scale, n_jobs, wall, stages, peak, mb))
            print(f"{scale:3d}x n_jobs={n_jobs}: {mb:6.0f} MB raw, wall {wall:7.1f} s, peak RSS "
                  f"{peak:6.0f} MB; per stage, wall s (the stage's own s) / peak MB: "
                  + ", ".join(f"{k} {w:.1f} ({o:.1f})/{m:.0f}"
                              for k, (w, o, m) in stages.items()),
                  flush=True)
    base = {j: (w, pk) for s, j, w, _, pk, _ in rows if s == min(args.scales)}
    print("\nscale  n_jobs  wall_s  wall/1x  per_1x_of_data  peak_RSS_MB  RSS/1x")
    for scale, n_jobs, wall, _, peak, _ in rows:
        w1, p1 = base[n_jobs]
        ratio = scale / min(args.scales)
        print(f"{scale:4d}x  {n_jobs:6d}  {wall:6.1f}  {wall / w1:7.2f}  {wall / w1 / ratio:14.2f}"
              f"  {peak:11.0f}  {peak / p1:6.2f}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
          f"{platform.python_version()}")
    print(f"command: .venv/bin/python bench/scale.py --scales {' '.join(map(str, args.scales))}"
          f" --jobs {' '.join(map(str, args.jobs))}")


if __name__ == "__main__":
    main()
