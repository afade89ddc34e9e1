"""What fresh memory costs on this machine, and how two processes scale with and without
touching it: the evidence behind ingest's n_jobs=2 speed-up (it writes its whole output).

On a VM whose balloon driver reports free pages back to the host, memory freed a moment
ago is handed back, and touching it again costs a trip through the host. This measures
(1) filling 480 MB right after freeing the same amount, and after 2 s and 8 s idle, and
(2) the speed-up of two processes over one for pure arithmetic on a cached array and for
filling fresh arrays, and (3) writing files as ingest does (into fresh page-cache pages)
against writing them to disk and dropping them from the cache, and what reading them back
then costs.

Run: .venv/bin/python bench/page_touch.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 480


def fill(n_mb: int) -> float:
    """Seconds to allocate and write n_mb of fresh float64 (every page touched)."""
    start = time.perf_counter()
    a = np.empty(n_mb * 2**20 // 8)
    a.fill(1.0)
    return time.perf_counter() - start


def after_idle(delay_s: float) -> float:
    np.ones(MB * 2**20 // 8)  # touched and freed at once
    time.sleep(delay_s)
    return fill(MB)


def cpu_work(_: int) -> None:
    x = np.random.default_rng(0).standard_normal(32_768)  # 256 kB: stays in cache
    for _ in range(6_000):
        np.sin(x, out=x)


def touch_work(_: int) -> None:
    for _ in range(8):
        fill(120)


def speedup(work, repeat: int) -> float:
    """Time of 2 tasks in one process over the time of the same 2 tasks in 2 processes."""
    ratios = []
    with mp.get_context("fork").Pool(2) as pool:
        for _ in range(repeat):
            start = time.perf_counter()
            work(0), work(1)
            one = time.perf_counter() - start
            start = time.perf_counter()
            pool.map(work, [0, 1])
            two = time.perf_counter() - start
            ratios.append(one / two)
    return statistics.median(ratios)


def write_files(folder: Path, data: np.ndarray, n: int, drop: bool) -> float:
    """MB/s writing n copies of data; drop: fdatasync, then drop the pages from the cache."""
    start = time.perf_counter()
    for i in range(n):
        with open(folder / f"{i}.bin", "wb") as fh:
            data.tofile(fh)
            if drop:
                fh.flush()
                os.fdatasync(fh.fileno())
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return n * data.nbytes / 1e6 / (time.perf_counter() - start)


def read_files(folder: Path, n: int) -> float:
    start = time.perf_counter()
    size = sum(np.fromfile(folder / f"{i}.bin", dtype=np.float32).nbytes for i in range(n))
    return size / 1e6 / (time.perf_counter() - start)


def file_costs(n: int = 20) -> None:
    data = np.random.default_rng(0).standard_normal((16, 720_000)).astype(np.float32)
    for drop in (False, True):
        folder = Path(tempfile.mkdtemp(prefix="oddpipe-pages-", dir=Path.cwd()))
        try:
            rate = write_files(folder, data, n, drop)
            label = "to disk, dropped from the cache" if drop else "into the page cache"
            print(f"  writing {n} x {data.nbytes / 1e6:.0f} MB {label}: {rate:5.0f} MB/s")
            if drop:
                print(f"  reading them back from disk: {read_files(folder, n):5.0f} MB/s, "
                      f"then from the cache: {read_files(folder, n):5.0f} MB/s")
        finally:
            shutil.rmtree(folder)
        time.sleep(3)  # the freed pages go back to the host, as between stages


def reporting_order() -> str:
    path = Path("/sys/module/page_reporting/parameters/page_reporting_order")
    return path.read_text().strip() if path.exists() else "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    fill(MB)  # first touch of the process's heap, not measured
    print(f"filling {MB} MB of fresh memory, median of {args.repeat}:")
    for delay in (0.0, 2.0, 8.0):
        t = statistics.median(after_idle(delay) for _ in range(args.repeat))
        print(f"  {delay:3.0f} s after freeing as much: {t:5.2f} s ({MB / 1024 / t:4.1f} GB/s)")
    print("two processes against one, same two tasks (median of paired runs):")
    print(f"  arithmetic on a cached array: {speedup(cpu_work, args.repeat):.2f}x")
    print(f"  filling fresh arrays:         {speedup(touch_work, args.repeat):.2f}x")
    print("files (on the repository's disk):")
    file_costs()
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, virtio balloon free page "
          f"reporting order {reporting_order()}")
    print(f"command: .venv/bin/python bench/page_touch.py --repeat {args.repeat}")


if __name__ == "__main__":
    main()
