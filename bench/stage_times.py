"""Wall time of the ingest, outliers and outliers_report stages on the demo dataset, as
`dvc repro` runs them (a fresh Python process each), with the interpreter + import cost
shown apart.

Run: .venv/bin/python bench/stage_times.py [--repeat 3]   (needs `make demo` first)
     .venv/bin/python bench/stage_times.py --subjects 20  (a 4x demo, generated to /tmp)
"""
from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--subjects", type=int, default=0,
                   help="generate a demo with this many subjects instead of data/raw/demo")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oddpipe-bench-"))
    demo = REPO / "data/raw/demo"
    if args.subjects:
        sys.path.insert(0, str(REPO))
        from oddpipe.demo import DemoSpec, generate
        demo = work / "raw"
        generate(demo, work / "truth.json", DemoSpec(n_subjects=args.subjects))
    if not demo.is_dir():
        sys.exit("no demo dataset: run `make demo` first")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["raw_dir"] = str(demo)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    py = sys.executable
    # Steady state: a normal Python caches oddpipe's bytecode on its first run. Where
    # PYTHONDONTWRITEBYTECODE is set (this sandbox sets it) every run would compile the
    # modules again, about 50 ms per stage: compile them once, as a user's first run does.
    compileall.compile_dir(REPO / "oddpipe", quiet=1)
    compileall.compile_dir(REPO / "stages", quiet=1)
    runs: dict[str, list[float]] = {"ingest": [], "sample": [], "outliers": [],
                                    "outliers_report": []}
    imports = {s: [] for s in ("ingest", "outliers", "outliers_report")}
    for _ in range(args.repeat):
        for stage in runs:
            shutil.rmtree(work / "data" / stage, ignore_errors=True)  # as DVC does, untimed
            runs[stage].append(timed([py, "-m", f"stages.{stage}"], work))
        for stage in imports:
            imports[stage].append(timed([py, "-c", f"import stages.{stage}"], work))
    med = {s: statistics.median(v) for s, v in runs.items()}
    imp = {s: statistics.median(v) for s, v in imports.items()}
    size = sum(f.stat().st_size for f in demo.rglob("*.edf")) / 1e6
    print(f"demo: {len(list(demo.rglob('*.edf')))} EDF files, {size:.0f} MB; "
          f"median of {args.repeat} runs, seconds")
    print(f"{'stage':16s} {'wall':>7s} {'imports':>8s} {'work':>7s}")
    for stage in imports:
        print(f"{stage:16s} {med[stage]:7.2f} {imp[stage]:8.2f} {med[stage] - imp[stage]:7.2f}")
    work_of = {s: med[s] - imp[s] for s in imports}
    ratios = sorted(o / i for i, o in zip(runs["ingest"], runs["outliers"]))
    print(f"outliers / ingest: wall {med['outliers'] / med['ingest']:.2f} (paired ratios: "
          f"median {statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}), "
          f"work {work_of['outliers'] / work_of['ingest']:.2f}")
    print(f"outliers_report / ingest: wall {med['outliers_report'] / med['ingest']:.2f}, "
          f"work {work_of['outliers_report'] / work_of['ingest']:.2f}")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; oddpipe's bytecode compiled beforehand "
          f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')})")
    extra = f" --subjects {args.subjects}" if args.subjects else ""
    print(f"command: .venv/bin/python bench/stage_times.py --repeat {args.repeat}{extra}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
