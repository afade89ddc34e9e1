"""Throughput of the heavy stages against their floors, in-process (no interpreter or
import cost), on the demo dataset with a warm page cache:

- ingest (run_ingest) against bare `mne.io.read_raw(f).get_data()` of the same files;
- ingest with n_jobs=2 against n_jobs=1, in two loky workers and in one process writing
  behind its reads, beside what two processes gain for the bare read itself (the
  machine's own limit);
- outliers (detect) against ingest;
- filter (run_filter: notch, band-pass, epoching, writing) against MNE's `notch_filter` +
  `filter_data` on the same arrays;
- training samples per second (two epochs of the demo's training split).

Run: .venv/bin/python bench/throughput.py [--repeat 3] [--subjects N]
     (needs `make demo`, or --subjects to generate a demo of N subjects in /tmp, or
     --raw-dir for a folder of EDF files)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mne  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from oddpipe import continuous  # noqa: E402
from oddpipe import ingest as ingest_module  # noqa: E402
from oddpipe.datasets import load_split  # noqa: E402
from oddpipe.filtering import notch_freqs, run_filter  # noqa: E402
from oddpipe.ingest import run_ingest  # noqa: E402
from oddpipe.io import read_json  # noqa: E402
from oddpipe.models import build_model  # noqa: E402
from oddpipe.normalize import fit_normalizer  # noqa: E402
from oddpipe.outliers import detect  # noqa: E402
from oddpipe.parallel import Runner  # noqa: E402
from oddpipe.params import Params, parse_params  # noqa: E402
from oddpipe.sampling import inspection_sample, split_events  # noqa: E402
from oddpipe.training import fit, seed_everything  # noqa: E402


def best_of(repeat: int, func: Callable[[], object],
            setup: Callable[[], None] = lambda: None) -> tuple[float, object]:
    """Fastest wall time of `repeat` calls (the least disturbed by other load); setup runs
    before each call, untimed (DVC removes a stage's outputs before it runs)."""
    times, result = [], None
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def read_one(path: Path) -> int:
    return mne.io.read_raw(path, preload=False, verbose="error").get_data().size


def bare_read(files: list[Path], n_jobs: int = 1) -> int:
    """The floor: MNE reads every file. With n_jobs=2, the same reads in the loky workers
    ingest uses: what two processes gain on this machine for the floor itself."""
    if n_jobs == 1:
        return sum(read_one(f) for f in files)
    from joblib import Parallel, delayed
    return sum(Parallel(n_jobs=n_jobs)(delayed(read_one)(f) for f in files))


def ingest_in_process(params: Params, out: Path) -> tuple:
    """n_jobs=2 where workers would not pay: one process, a thread writing behind the reads."""
    saved, ingest_module.PARALLEL_BYTES = ingest_module.PARALLEL_BYTES, float("inf")
    try:
        return run_ingest(params.ingest, out, Runner(n_jobs=2))
    finally:
        ingest_module.PARALLEL_BYTES = saved


def mne_filter_floor(work: Path, params: Params, recordings) -> None:
    """What the filter stage must do at least: MNE's notch + band-pass on each array."""
    fp = params.filter
    for r in recordings.itertuples():
        data = continuous.open_data(work / "ingest" / r.data).volts(dtype=np.float64)
        data = mne.filter.notch_filter(data, r.sfreq, notch_freqs(float(r.line_freq), r.sfreq),
                                       verbose="error")
        mne.filter.filter_data(data, r.sfreq, fp.l_freq, fp.h_freq, verbose="error")


def training_rate(work: Path, params: Params) -> float:
    """Training samples per second over two epochs (validation passes included)."""
    info = read_json(work / "filter" / "epochs.json")
    train, _ = load_split(work / "filter", "train")
    val, _ = load_split(work / "filter", "val")
    norm = fit_normalizer(train.X, train.mask, info["channels"], "robust")
    seed_everything(0)
    model = build_model({"model": "cnn", "n_channels": len(info["channels"]),
                         "n_times": info["n_times"], "sfreq": info["sfreq"], "dropout": 0.25})
    tp = params.train.model_copy(update={"max_epochs": 2, "patience": 10})
    start = time.perf_counter()
    fit(model, train, val, norm, tp, torch.device("cpu"))
    return 2 * len(train.y) / (time.perf_counter() - start)


def demo_dir(args: argparse.Namespace, tmp: Path) -> Path:
    if args.raw_dir:
        return args.raw_dir
    if not args.subjects:
        return REPO / "data/raw/demo"
    from oddpipe.demo import DemoSpec, generate
    generate(tmp / "raw", tmp / "truth.json", DemoSpec(n_subjects=args.subjects))
    return tmp / "raw"


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="oddpipe-throughput-"))
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp)


def run(tmp: Path) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--subjects", type=int, default=0)
    p.add_argument("--ingest-only", action="store_true",
                   help="only the bare read and ingest with n_jobs 1 and 2")
    p.add_argument("--raw-dir", type=Path, help="EDF files to use instead of the demo "
                   "(e.g. /tmp/oddpipe-scale/raw-16x from bench/scale.py)")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    raw_dir = demo_dir(args, tmp)
    files = sorted(raw_dir.rglob("*.edf"))
    if not files:
        sys.exit("no demo dataset: run `make demo` first")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ingest"]["raw_dir"] = str(raw_dir)
    params = parse_params(raw)
    mb = sum(f.stat().st_size for f in files) / 1e6
    bare_read(files)  # warm the page cache: both sides read from memory

    # The parallel path itself, whatever the size: the stage keeps less than
    # ingest.PARALLEL_BYTES (the demo's 116 MB among them) in one process.
    ingest_module.PARALLEL_BYTES = 0
    ingest = lambda n: run_ingest(params.ingest, tmp / "ingest", Runner(n_jobs=n))  # noqa: E731
    behind = lambda: ingest_in_process(params, tmp / "ingest")  # noqa: E731
    clean = lambda: shutil.rmtree(tmp / "ingest", ignore_errors=True)  # noqa: E731
    ingest(2)  # start the loky workers once; a stage pays this, see bench/stage_times.py
    bare_read(files, 2)
    # Interleaved runs (bare read, ingest n_jobs=1, n_jobs=2, bare read in two processes,
    # n_jobs=2 in one process), so that load drifting on a shared machine hits all alike;
    # ratios are taken within each run and their median reported.
    runs = [(best_of(1, lambda: bare_read(files))[0], best_of(1, lambda: ingest(1), clean),
             best_of(1, lambda: ingest(2), clean)[0], best_of(1, lambda: bare_read(files, 2))[0],
             best_of(1, behind, clean)[0])
            for _ in range(args.repeat)]
    t_bare = min(r[0] for r in runs)
    t_ingest, (recordings, events, _) = min((r[1] for r in runs), key=lambda tr: tr[0])
    t_ingest2 = min(r[2] for r in runs)
    vs_bare = float(np.median([r[1][0] / r[0] for r in runs]))
    speedup = float(np.median([r[1][0] / r[2] for r in runs]))
    bare_speedup = float(np.median([r[0] / r[3] for r in runs]))
    t_behind = min(r[4] for r in runs)
    behind_speedup = float(np.median([r[1][0] / r[4] for r in runs]))
    behind_vs_bare = float(np.median([r[4] / r[0] for r in runs]))
    behind_figures = (f"speed-up {behind_speedup:.2f}x, {behind_vs_bare:.2f}x the bare read "
                      f"({t_behind:.2f} s)")
    if args.ingest_only:
        print(f"data: {len(files)} EDF files, {mb:.0f} MB; {args.repeat} interleaved repeats")
        print("each run, s (bare read, ingest n_jobs=1, n_jobs=2, bare read in 2 processes, "
              "n_jobs=2 in one process): " + ", ".join(
                  f"({b:.2f}, {i[0]:.2f}, {j:.2f}, {b2:.2f}, {w:.2f})" for b, i, j, b2, w in runs))
        print(f"bare MNE read {t_bare:.2f} s, ingest n_jobs=1 {t_ingest:.2f} s, n_jobs=2 "
              f"{t_ingest2:.2f} s; median ratios within runs: ingest / bare read "
              f"{vs_bare:.2f}x, n_jobs=2 speed-up {speedup:.2f}x (the bare read's own in two "
              f"processes: {bare_speedup:.2f}x)")
        print(f"n_jobs=2 in one process (a thread writing behind the reads): {behind_figures}")
        raw_arg = f" --raw-dir {args.raw_dir}" if args.raw_dir else ""
        print(f"command: .venv/bin/python bench/throughput.py --ingest-only --repeat "
              f"{args.repeat}{raw_arg}")
        return
    sp = params.sample
    sample = inspection_sample(events, sp.inspect_fraction, sp.inspect_min_per_stratum, sp.seed)
    splits = split_events(events, sp)
    t_outliers, result = best_of(args.repeat, lambda: detect(
        recordings, sample, tmp / "ingest", params.outliers))
    events = events.merge(splits[["event_id", "split"]], on="event_id")

    # (filter stage, MNE floor) pairs, interleaved as the ingest runs are.
    pairs = [(best_of(1, lambda: run_filter(
        recordings, events, result.decisions, tmp / "ingest", tmp / "filter", params.filter),
        lambda: shutil.rmtree(tmp / "filter", ignore_errors=True)),
        best_of(1, lambda: mne_filter_floor(tmp, params, recordings))[0])
        for _ in range(args.repeat)]
    (t_filter, out), t_floor = min(pairs, key=lambda p: p[0][0])[0], min(f for _, f in pairs)
    filter_ratios = sorted(f[0] / m for f, m in pairs)
    (tmp / "filter" / "epochs.json").write_text(json.dumps(out["info"]))
    for split, table in out["tables"].items():
        table.to_csv(tmp / "filter" / f"{split}.tsv", sep="\t", index=False)
    rate = training_rate(tmp, params)

    print(f"data: {len(files)} EDF files, {mb:.0f} MB, {len(events)} events; best of "
          f"{args.repeat}, seconds, warm page cache")
    print(f"bare MNE read          {t_bare:7.2f}  ({mb / t_bare:6.1f} MB/s)")
    print(f"ingest, n_jobs=1       {t_ingest:7.2f}  ({mb / t_ingest:6.1f} MB/s)  "
          f"{vs_bare:.2f}x the bare read, median of paired runs (target <= 1.5)")
    print(f"ingest, n_jobs=2       {t_ingest2:7.2f}  speed-up {speedup:.2f}x, median of paired "
          f"runs (target >= 1.6 on 2 cores); the bare read's own in two processes "
          f"{bare_speedup:.2f}x")
    print(f"ingest, n_jobs=2 in one process: {behind_figures}")
    print(f"outliers (detect)      {t_outliers:7.2f}  {t_outliers / t_ingest:.2f}x ingest "
          "(target <= 0.25)")
    print(f"MNE notch+filter_data  {t_floor:7.2f}")
    print(f"filter stage           {t_filter:7.2f}  {np.median(filter_ratios):.2f}x MNE, median "
          f"of paired runs (range {filter_ratios[0]:.2f}-{filter_ratios[-1]:.2f}; "
          "target <= 1.2)")
    print(f"training               {rate:7.0f} samples/s (cnn, CPU, {torch.get_num_threads()} "
          "threads)")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
          f"{platform.python_version()}, torch {torch.__version__}, mne {mne.__version__}")
    extra = (f" --subjects {args.subjects}" if args.subjects else "") + (
        f" --raw-dir {args.raw_dir}" if args.raw_dir else "")
    print(f"command: .venv/bin/python bench/throughput.py --repeat {args.repeat}{extra}")


if __name__ == "__main__":
    main()
