"""Quality benchmark: oddpipe's channel outlier detector against PyPREP's NoisyChannels.

Seeded synthetic datasets (subjects x recordings, 32 channels, 1/f background, a little
line noise everywhere). Detached-electrode line noise (fundamental plus harmonics) is
added to known channels at amplitudes from 0.1x to 10^4x the channel's background RMS, in
four scenarios: a few channels of two recordings; a quarter / a half of two recordings'
channels; every channel of one recording while its subject's other recordings are clean.

Amplitude: RMS of the injected line noise (all harmonics together) over the RMS of the
channel's 1/f background. The injection is additive: the background stays underneath.

Ours: scan_array per recording, then flag_channels on the whole dataset (pooled).
PyPREP: NoisyChannels per recording (deviation, HF noise, NaN/flat; no RANSAC).
Precision counts false positives anywhere in the dataset (all recordings).

Run: .venv/bin/python bench/outliers_quality.py [--quick] [--segment-s 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pyprep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from oddpipe.outliers import flag_channels, scan_array  # noqa: E402
from oddpipe.params import Outliers  # noqa: E402

OURS = Outliers()  # oddpipe's params: the defaults unless --segment-s is given

Key = tuple[int, int]  # (subject, run)
Cell = tuple[str, str]  # (recording, channel)

HARMONIC_GAINS = (1.0, 0.4, 0.2, 0.4 / 3)  # detached electrode: fundamental dominates
TARGET_F1, TARGET_MIN_AMP, TARGET_FPR, TARGET_SPEEDUP = 0.95, 0.3, 0.01, 10.0


@dataclass(frozen=True)
class Config:
    n_subjects: int = 4
    n_runs: int = 3
    n_channels: int = 32
    duration_s: float = 300.0
    sfreq: float = 500.0
    line_freq: float = 60.0
    background_uv: float = 20.0
    ambient_line_uv: tuple[float, float] = (0.2, 1.0)  # sinusoid amplitude, per recording
    amplitudes: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 3.0, 10.0, 100.0,
                                     1e3, 1e4)
    seed: int = 2024

    @property
    def ch_names(self) -> list[str]:
        return [f"E{i:02d}" for i in range(1, self.n_channels + 1)]

    @property
    def keys(self) -> list[Key]:
        return [(s, r) for s in range(1, self.n_subjects + 1)
                for r in range(1, self.n_runs + 1)]


QUICK = Config(duration_s=60.0, amplitudes=(0.1, 0.3, 1.0, 10.0, 1e4))


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    contaminated: dict[Key, int]  # recording -> number of contaminated channels


def scenarios(n_ch: int) -> list[Scenario]:
    return [
        Scenario("few", "3 channels in each of 2 recordings of sub-02", {(2, 1): 3, (2, 2): 3}),
        Scenario("quarter", f"{n_ch // 4} channels in sub-01 run-2 and in sub-03 run-3",
                 {(1, 2): n_ch // 4, (3, 3): n_ch // 4}),
        Scenario("half", f"{n_ch // 2} channels in sub-01 run-2 and in sub-03 run-3",
                 {(1, 2): n_ch // 2, (3, 3): n_ch // 2}),
        Scenario("all", "every channel of sub-04 run-2; its other runs clean",
                 {(4, 2): n_ch}),
    ]


def rec_name(key: Key) -> str:
    return f"sub-{key[0]:02d}_run-{key[1]}"


# ---- data ---------------------------------------------------------------------------

def pink(rng: np.random.Generator, n_ch: int, n_times: int) -> np.ndarray:
    """Unit-RMS 1/f noise per channel, shaped in the frequency domain."""
    n_f = n_times // 2 + 1
    spec = rng.standard_normal((n_ch, n_f)) + 1j * rng.standard_normal((n_ch, n_f))
    f = np.arange(n_f, dtype=float)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n=n_times, axis=1)
    return x / x.std(axis=1, keepdims=True)


def sines(cfg: Config, rms: np.ndarray, gains: tuple[float, ...],
          rng: np.random.Generator) -> np.ndarray:
    """Line frequency and harmonics below Nyquist, random phases, total RMS per channel."""
    n_times = int(cfg.duration_s * cfg.sfreq)
    t = np.arange(n_times) / cfg.sfreq
    freqs = np.arange(cfg.line_freq, cfg.sfreq / 2, cfg.line_freq)[:len(gains)]
    g = np.asarray(gains[:len(freqs)])
    peak = rms * np.sqrt(2) / np.sqrt((g ** 2).sum())  # sinusoid amplitude of the fundamental
    out = np.zeros((len(rms), n_times))
    for f, gk in zip(freqs, g):
        phase = rng.uniform(0, 2 * np.pi, size=(len(rms), 1))
        out += gk * peak[:, None] * np.sin(2 * np.pi * f * t + phase)
    return out


def clean_recording(cfg: Config, key: Key) -> tuple[np.ndarray, np.ndarray]:
    """(data in volts, per-channel background RMS in volts) of one clean recording."""
    rng = np.random.default_rng([cfg.seed, *key])
    subject_scale = np.random.default_rng([cfg.seed, key[0]]).uniform(0.7, 1.4)
    n_times = int(cfg.duration_s * cfg.sfreq)
    gains = rng.uniform(0.8, 1.2, size=(cfg.n_channels, 1))
    common = pink(rng, 1, n_times)
    bg = cfg.background_uv * subject_scale * gains * (
        0.8 * pink(rng, cfg.n_channels, n_times) + 0.6 * common)
    level = rng.uniform(*cfg.ambient_line_uv) * rng.uniform(0.8, 1.2, size=cfg.n_channels)
    ambient = sines(cfg, level / np.sqrt(2), (1.0,), rng)
    return (bg + ambient) * 1e-6, bg.std(axis=1) * 1e-6


def contaminate(cfg: Config, data: np.ndarray, bg_rms: np.ndarray, n_bad: int,
                amp: float, seed: list[int]) -> tuple[np.ndarray, list[int]]:
    """Add detached-electrode line noise at amp x background RMS to n_bad channels.

    The channels depend on the seed only (same across amplitudes); phases on amp too.
    """
    chans = sorted(np.random.default_rng(seed).choice(cfg.n_channels, n_bad, replace=False))
    rng = np.random.default_rng([*seed, int(round(amp * 1000))])
    out = data.copy()
    out[chans] += sines(cfg, amp * bg_rms[chans], HARMONIC_GAINS, rng)
    return out, [int(c) for c in chans]


# ---- detectors ----------------------------------------------------------------------

def run_ours(cfg: Config, data: np.ndarray, name: str) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    feats = scan_array(data, cfg.sfreq, cfg.ch_names, cfg.line_freq, name, OURS)
    return feats.table, time.perf_counter() - t0


def run_pyprep(cfg: Config, data: np.ndarray) -> tuple[set[str], float]:
    raw = mne.io.RawArray(data, mne.create_info(cfg.ch_names, cfg.sfreq, "eeg"),
                          verbose="error")
    t0 = time.perf_counter()
    nc = pyprep.NoisyChannels(raw, random_state=cfg.seed, ransac=False, correlation=False)
    nc.find_bad_by_deviation()
    nc.find_bad_by_hfnoise()
    nc.find_bad_by_nan_flat()
    bads = set(nc.get_bads())
    return bads, time.perf_counter() - t0


def flag_dataset(tables: dict[Key, pd.DataFrame]) -> tuple[set[Cell], pd.DataFrame, float]:
    """Pool all recordings' tables, flag; the flagged (recording, channel) cells."""
    t0 = time.perf_counter()
    table = pd.concat([t.assign(recording=rec_name(k), subject=f"{k[0]:02d}")
                       for k, t in tables.items()], ignore_index=True)
    flags = flag_channels(table, OURS)
    seconds = time.perf_counter() - t0
    bad = flags[flags["flagged"]]
    return set(zip(bad["recording"], bad["channel"])), flags, seconds


# ---- scoring ------------------------------------------------------------------------

@dataclass
class Score:
    tp: int
    fp: int
    fn: int
    negatives: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def fpr(self) -> float:
        return self.fp / self.negatives


def reason_kinds(reasons: pd.Series) -> str:
    """'flat x32, line noise x1': our reasons, by kind."""
    kinds = ("non-finite", "flat", "line noise", "within the recording", "other recordings")
    counts = {k: int(reasons.str.contains(k).sum()) for k in kinds}
    return ", ".join(f"{k} x{n}" for k, n in counts.items() if n)


def score(truth: set[Cell], found: set[Cell], n_cells: int) -> Score:
    return Score(len(truth & found), len(found - truth), len(truth - found), n_cells - len(truth))


@dataclass
class Row:
    amp: float
    ours: Score
    prep: Score
    excess_db: float  # median line excess over the dataset median, injected channels
    fp_why: str  # our false positives by reason


@dataclass
class Timings:
    ours_scan: list[float] = field(default_factory=list)
    ours_flag_per_rec: list[float] = field(default_factory=list)
    prep: list[float] = field(default_factory=list)


# ---- the benchmark ------------------------------------------------------------------

def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_scenario(cfg: Config, idx: int, sc: Scenario, clean: dict, base_ours: dict,
                 base_prep: dict, timings: Timings) -> list[Row]:
    rows = []
    n_cells = len(cfg.keys) * cfg.n_channels
    for amp in cfg.amplitudes:
        tables, prep_cells, truth = dict(base_ours), set(), set()
        for key in cfg.keys:
            name = rec_name(key)
            if key not in sc.contaminated:
                prep_cells |= {(name, ch) for ch in base_prep[key]}
                continue
            data, bg_rms = clean[key]
            dirty, chans = contaminate(cfg, data, bg_rms, sc.contaminated[key], amp,
                                       [cfg.seed, 100 + idx, *key])
            truth |= {(name, cfg.ch_names[c]) for c in chans}
            tables[key], sec = run_ours(cfg, dirty, name)
            timings.ours_scan.append(sec)
            bads, sec = run_pyprep(cfg, dirty)
            timings.prep.append(sec)
            prep_cells |= {(name, ch) for ch in bads}
        found, flags, sec = flag_dataset(tables)
        timings.ours_flag_per_rec.append(sec / len(tables))
        cells = flags.set_index(["recording", "channel"])
        rows.append(Row(amp, score(truth, found, n_cells), score(truth, prep_cells, n_cells),
                        float(cells.loc[sorted(truth), "line_excess_db"].median()),
                        reason_kinds(cells.loc[sorted(found - truth), "reasons"])))
        progress(f"  {sc.name} {amp:g}x done")
    return rows


def fmt(x: float, width: int = 5) -> str:
    return f"{'n/a':>{width}}" if np.isnan(x) else f"{x:{width}.2f}"


def print_table(sc: Scenario, rows: list[Row], n_pos: int) -> None:
    print(f"\nScenario '{sc.name}': {sc.title} ({n_pos} contaminated channels)")
    print(f"{'amp x':>7} | {'ours P':>6} {'R':>5} {'F1':>5} {'FP':>3} {'excess dB':>9} "
          f"| {'PyPREP P':>8} {'R':>5} {'F1':>5} {'FP':>3}")
    for r in rows:
        print(f"{r.amp:>7g} | {fmt(r.ours.precision, 6)} {fmt(r.ours.recall)} "
              f"{fmt(r.ours.f1)} {r.ours.fp:>3} {r.excess_db:>9.1f} "
              f"| {fmt(r.prep.precision, 8)} {fmt(r.prep.recall)} {fmt(r.prep.f1)} "
              f"{r.prep.fp:>3}")
    for r in rows:
        if r.fp_why:
            print(f"  ours' false positives at {r.amp:g}x: {r.fp_why}")


def fpr_line(label: str, ours: tuple[int, int], prep: tuple[int, int]) -> str:
    return (f"  {label:<44} ours {ours[0]:>3}/{ours[1]:<5} = {ours[0] / ours[1]:6.2%}   "
            f"PyPREP {prep[0]:>3}/{prep[1]:<5} = {prep[0] / prep[1]:6.2%}")


def summarize_fpr(clean_ours: Score, clean_prep: Score,
                  results: dict[str, list[Row]]) -> tuple[float, str]:
    """Print false-positive rates on clean channels; return ours' worst and where."""
    print("\nFalse-positive rate on clean channels (FP / clean channels)")
    print(fpr_line("all-clean dataset (no contamination)", (clean_ours.fp, clean_ours.negatives),
                   (clean_prep.fp, clean_prep.negatives)))
    worst, where = clean_ours.fpr, "all-clean dataset"
    for name, rows in results.items():
        sel = [r for r in rows if r.amp >= TARGET_MIN_AMP]
        o = (sum(r.ours.fp for r in sel), sum(r.ours.negatives for r in sel))
        p = (sum(r.prep.fp for r in sel), sum(r.prep.negatives for r in sel))
        print(fpr_line(f"'{name}' datasets, amplitudes >= {TARGET_MIN_AMP}x", o, p))
        for r in sel:
            if r.ours.fpr > worst:
                worst, where = r.ours.fpr, f"'{name}' at {r.amp:g}x"
    return worst, where


def summarize_runtime(t: Timings) -> float:
    ours = float(np.median(t.ours_scan) + np.median(t.ours_flag_per_rec))
    prep = float(np.median(t.prep))
    print("\nMedian runtime per recording")
    print(f"  ours   {ours * 1e3:8.1f} ms  (scan_array {np.median(t.ours_scan) * 1e3:.1f} ms + "
          f"flag_channels share {np.median(t.ours_flag_per_rec) * 1e3:.1f} ms; "
          f"{len(t.ours_scan)} scans)")
    print(f"  PyPREP {prep * 1e3:8.1f} ms  ({len(t.prep)} recordings)")
    print(f"  ratio  PyPREP / ours = {prep / ours:.1f}x")
    return prep / ours


def print_targets(results: dict[str, list[Row]], worst_fpr: tuple[float, str],
                  speedup: float) -> None:
    print("\nTargets")
    low = [(n, r.amp, r.ours.f1) for n, rows in results.items() for r in rows
           if r.amp >= TARGET_MIN_AMP and not r.ours.f1 >= TARGET_F1]
    ok = not low and worst_fpr[0] <= TARGET_FPR
    print(f"  [{'MET' if ok else 'NOT MET'}] F1 >= {TARGET_F1} for every scenario at "
          f">= {TARGET_MIN_AMP}x with <= {TARGET_FPR:.0%} FP on clean channels "
          f"(worst dataset FP rate {worst_fpr[0]:.2%}, {worst_fpr[1]})")
    for n, a, f in low:
        print(f"      '{n}' at {a:g}x: F1 {fmt(f).strip()}")
    worse = [(n, r.amp, r.ours.f1, r.prep.f1) for n, rows in results.items() for r in rows
             if np.nan_to_num(r.ours.f1) < np.nan_to_num(r.prep.f1)]
    print(f"  [{'MET' if not worse else 'NOT MET'}] F1 >= PyPREP's at every amplitude and "
          "scenario")
    for n, a, fo, fp in worse:
        print(f"      '{n}' at {a:g}x: ours {fmt(fo).strip()} < PyPREP {fmt(fp).strip()}")
    print(f"  [{'MET' if speedup >= TARGET_SPEEDUP else 'NOT MET'}] runtime at most 1/"
          f"{TARGET_SPEEDUP:g} of PyPREP's (PyPREP / ours = {speedup:.1f}x)")


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"nproc {len(os.sched_getaffinity(0))}, {model}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="60 s recordings and 5 amplitudes instead of 300 s and 11")
    ap.add_argument("--segment-s", type=float, help="scan segments of this length instead "
                    f"of the default {Outliers().segment_s:g} s (how the scan was chosen)")
    args = ap.parse_args(argv)
    if args.segment_s:
        global OURS
        OURS = Outliers(segment_s=args.segment_s)
    cfg = QUICK if args.quick else Config()
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as they are done
    mne.set_log_level("ERROR")
    logging.getLogger("pyprep").setLevel(logging.ERROR)

    print(f"oddpipe outlier quality benchmark{' (--quick)' if args.quick else ''}: "
          f"{cfg.n_subjects} subjects x {cfg.n_runs} recordings, {cfg.n_channels} ch, "
          f"{cfg.duration_s:g} s at {cfg.sfreq:g} Hz, seed {cfg.seed}")
    print(f"Background 1/f ~{cfg.background_uv:g} uV RMS (subject x0.7-1.4, channel x0.8-1.2), "
          f"{cfg.line_freq:g} Hz ambient {cfg.ambient_line_uv[0]:g}-{cfg.ambient_line_uv[1]:g} uV "
          "everywhere.")
    print("Injected: line noise at 60/120/180/240 Hz (gains 1, 0.4, 0.2, 0.13), added on top; "
          "amp = its RMS / the channel's background RMS.")
    print(f"Ours: oddpipe scan_array + flag_channels, {'default ' if not args.segment_s else ''}"
          f"outliers params ({OURS.n_segments} segments of {OURS.segment_s:g} s); PyPREP "
          f"{pyprep.__version__} NoisyChannels deviation + hfnoise + nan_flat, no RANSAC.")
    print("P/R/F1 per dataset; FP = false positives in the whole dataset; excess dB = median "
          f"line_excess_db of injected channels (threshold {OURS.line_excess_db:g}).")

    timings = Timings()
    clean, base_ours, base_prep = {}, {}, {}
    for key in cfg.keys:
        clean[key] = clean_recording(cfg, key)
        base_ours[key], sec = run_ours(cfg, clean[key][0], rec_name(key))
        timings.ours_scan.append(sec)
        base_prep[key], sec = run_pyprep(cfg, clean[key][0])
        timings.prep.append(sec)
    progress("clean recordings done")
    n_cells = len(cfg.keys) * cfg.n_channels
    found, _, sec = flag_dataset(base_ours)
    timings.ours_flag_per_rec.append(sec / len(base_ours))
    clean_ours = score(set(), found, n_cells)
    clean_prep = score(set(), {(rec_name(k), ch) for k, b in base_prep.items() for ch in b},
                       n_cells)

    results = {}
    for idx, sc in enumerate(scenarios(cfg.n_channels)):
        results[sc.name] = run_scenario(cfg, idx, sc, clean, base_ours, base_prep, timings)
        print_table(sc, results[sc.name], sum(sc.contaminated.values()))

    worst_fpr = summarize_fpr(clean_ours, clean_prep, results)
    speedup = summarize_runtime(timings)
    print_targets(results, worst_fpr, speedup)
    flags = (" --quick" if args.quick else "") + (
        f" --segment-s {args.segment_s:g}" if args.segment_s else "")
    print(f"\nReproduce: .venv/bin/python bench/outliers_quality.py{flags}"
          "  (figures are seeded; runtimes vary)")
    print(f"Machine: {machine()}; Python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"mne {mne.__version__}, pyprep {pyprep.__version__}")


if __name__ == "__main__":
    main()
