"""Outlier detection on raw data: line noise, amplitude and flat/non-finite checks per
recording x channel, compared within the recording, across a subject's recordings and
across the dataset; decisions with reasons.

Runs before any filter: a notch would hide the line noise that identifies a detached
electrode.

Tables here are plain columns (oddpipe.io.Columns), and the stage never imports pandas: on
the demo its import cost more than the whole detection. DataFrames are accepted as input,
and `.table` / `.flags` give DataFrames for interactive use.
"""
from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe.io import Columns, new_file, require_columns
from oddpipe.parallel import SERIAL, Runner, for_work, map_recordings
from oddpipe.params import Outliers

if TYPE_CHECKING:
    import mne
    import pandas as pd

log = logging.getLogger(__name__)

PEAK_HALF_WIDTH_HZ = 0.5
NEIGHBOUR_HZ = (2.0, 6.0)
MAD_FLOOR = 0.1  # log10 units: a 26 % amplitude spread is never "tight"
AUTO_MIN_DB = 10.0  # a line peak 10x above its neighbours is "clear"


def as_columns(table: "pd.DataFrame | Columns") -> Columns:
    """A DataFrame or columns, as columns (numpy arrays)."""
    return {str(name): np.asarray(values) for name, values in table.items()}


def to_frame(columns: Columns) -> "pd.DataFrame":
    import pandas as pd  # only for callers who want a DataFrame; the stage never does

    return pd.DataFrame(columns)


@dataclass
class RecordingFeatures:
    """Per-channel features of one recording and what the report draws from it. The stage
    keeps per recording only the median channel's PSD; the channels' PSDs come back for
    the flagged recordings alone, so memory grows with what is flagged, not with the data."""

    recording: str
    columns: Columns  # one row per channel
    freqs: np.ndarray
    psd: np.ndarray | None = None  # (channels, freqs) float32
    window_log_std: np.ndarray | None = None  # (windows, channels), inspection sample only
    median_psd: np.ndarray | None = None  # (freqs,) float32, the median channel's

    def reduced(self) -> "RecordingFeatures":
        """The same features without the channels' PSDs (their median kept)."""
        middle = self.median_psd if self.psd is None else median(self.psd, axis=0)
        return RecordingFeatures(self.recording, self.columns, self.freqs, None,
                                 self.window_log_std, middle)

    @property
    def table(self) -> "pd.DataFrame":
        return to_frame(self.columns)


def scan_starts(n_times: int, seg_len: int, n_segments: int) -> np.ndarray:
    """Start samples of n systematic segments spread evenly over the recording."""
    if n_times < seg_len:
        raise OddpipeError(
            f"recording has {n_times} samples, shorter than one analysis segment "
            f"({seg_len}); lower outliers.segment_s"
        )
    return np.linspace(0, n_times - seg_len, n_segments).round().astype(int)


def read_segments(raw: "mne.io.BaseRaw", starts: np.ndarray, seg_len: int,
                  picks: list[int] | None = None) -> np.ndarray:
    return np.stack([raw.get_data(picks=picks, start=s, stop=s + seg_len) for s in starts])


def array_segments(data: np.ndarray, starts: np.ndarray, seg_len: int) -> Iterator[np.ndarray]:
    """(channels, times) segments of a (channels, times) array or memmap, one at a time, as
    stored: ingest's float32 volts or int16 counts (SegmentStats works on them in float32,
    exact for counts; the caller scales the features), a float64 array in float64. float32
    halves the memory traffic of every step, and its rounding floor (-140 dB under the
    largest component) lies far below any ratio we measure."""
    for s in starts:
        yield data[:, s:s + seg_len]


def stored(data: "np.ndarray | continuous.Signals") -> tuple[np.ndarray, np.ndarray | None]:
    """(samples as stored, volts per count or None for volts) of an array or a recording."""
    if isinstance(data, continuous.Signals):
        return data.data, data.scale
    return data, None


def hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


F32_MAX = float(np.finfo(np.float32).max)


def stored_psd(psd: np.ndarray) -> np.ndarray:
    """The PSD as kept for the report: float32, a broken channel's clipped at its max."""
    with np.errstate(under="ignore"):  # a flat channel's 1e-50 V^2/Hz is 0 in float32
        return np.minimum(psd, F32_MAX).astype(np.float32)


def one_sided_psd(power_sum: np.ndarray, n_segments: int, window: np.ndarray,
                  sfreq: float) -> np.ndarray:
    """Mean one-sided PSD (V^2/Hz) from the summed |FFT|^2 of Hann-windowed segments."""
    psd = power_sum / (n_segments * sfreq * (window ** 2).sum())
    psd[..., 1:(len(window) + 1) // 2] *= 2  # fold the negative frequencies in
    return psd


def observable_lines(line_freq: float, sfreq: float) -> tuple[np.ndarray, str]:
    """Frequencies where this line frequency shows up, and a note on what was skipped.

    Harmonics whose neighbourhood reaches Nyquist are skipped; a line frequency above
    Nyquist is checked at its alias when that is observable.
    """
    nyquist, top = sfreq / 2, sfreq / 2 - NEIGHBOUR_HZ[1]
    if line_freq < top:
        harmonics = np.arange(line_freq, top, line_freq)
        skipped = np.arange(line_freq * (len(harmonics) + 1), nyquist + 1e-9, line_freq)
        note = (f"harmonics at {', '.join(f'{f:g}' for f in skipped)} Hz skipped "
                f"(too close to Nyquist, {nyquist:g} Hz)") if len(skipped) else ""
        return harmonics, note
    alias = abs(line_freq - sfreq * round(line_freq / sfreq))
    if NEIGHBOUR_HZ[1] < alias < top:
        return np.array([alias]), (f"{line_freq:g} Hz is at or above Nyquist ({nyquist:g} Hz); "
                                   f"checked its alias at {alias:g} Hz")
    return np.empty(0), (f"{line_freq:g} Hz is not observable at {sfreq:g} Hz "
                         f"(alias {alias:g} Hz too close to 0 Hz or Nyquist); line noise not checked")


def harmonic_ratios_db(freqs: np.ndarray, psd: np.ndarray, harmonics: np.ndarray) -> np.ndarray:
    """(channels, harmonics): peak power over the median of neighbouring bins, in dB; 0
    where a short segment's bins miss the peak or its neighbourhood (nothing measured)."""
    ratios = np.zeros((psd.shape[0], len(harmonics)))
    near_any = np.zeros(len(freqs), dtype=bool)
    for f in harmonics:
        near_any |= np.abs(freqs - f) < 1.0
    for k, f in enumerate(harmonics):
        dist = np.abs(freqs - f)
        if not (dist <= PEAK_HALF_WIDTH_HZ).any():
            continue
        peak = psd[:, dist <= PEAK_HALF_WIDTH_HZ].max(axis=1)
        ring = (dist >= NEIGHBOUR_HZ[0]) & (dist <= NEIGHBOUR_HZ[1]) & ~near_any
        floor = median(psd[:, ring], axis=1)
        ratios[:, k] = 10 * np.log10(np.maximum(peak, 1e-300) / np.maximum(floor, 1e-300))
    ratios[~np.isfinite(ratios)] = 0.0
    return ratios


def line_ratio_db(freqs: np.ndarray, psd: np.ndarray, line_freq: float,
                  sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Line-noise ratio per channel: (max over observable harmonics, fundamental) in dB;
    0 where nothing is observable."""
    harmonics, _ = observable_lines(line_freq, sfreq)
    if not len(harmonics):
        zeros = np.zeros(psd.shape[0])
        return zeros, zeros
    ratios = harmonic_ratios_db(freqs, psd, harmonics)
    return ratios.max(axis=1), ratios[:, 0]


def detect_line_freq(freqs: np.ndarray, psd: np.ndarray, sfreq: float,
                     min_db: float = AUTO_MIN_DB) -> tuple[float | None, str]:
    """50 or 60 Hz when one channel at least shows a clear peak there, else None: never
    a guess on noise."""
    scores = {}
    for f in (50.0, 60.0):
        harmonics, _ = observable_lines(f, sfreq)
        if len(harmonics):
            scores[f] = float(harmonic_ratios_db(freqs, psd, harmonics[:1]).max())
    if not scores or max(scores.values()) < min_db:
        shown = ", ".join(f"{f:g} Hz: {v:.1f} dB" for f, v in scores.items()) or "unobservable"
        return None, f"line frequency auto: no clear peak ({shown}); line noise not checked"
    best = max(scores, key=scores.get)
    return best, f"line frequency auto: {best:g} Hz ({scores[best]:.0f} dB peak)"


BATCH_VALUES = 131_072  # samples x channels per step: the temporaries stay in the CPU cache
# (65,536: 0.120-0.124 s for the demo's scan; 131,072 and 262,144: 0.111-0.118 s; 1,048,576:
# 0.24 s, its 24 MB of buffers faulted in afresh for every recording; bench/RESULTS.md)


class SegmentStats:
    """What segment_features gathers, a small batch of segments at a time, in buffers
    allocated once: the batch stays in the CPU cache through every step, and no step pays
    page faults for a fresh temporary (glibc maps every block over 128 kB anew). On the demo
    this halved the scan's time against whole-array steps."""

    def __init__(self, n_channels: int, seg_len: int, dtype: np.dtype) -> None:
        self.batch = max(1, BATCH_VALUES // (n_channels * seg_len))
        shape = (self.batch, n_channels, seg_len)
        self.window = hann(seg_len)
        self.ramp = (np.arange(seg_len) - (seg_len - 1) / 2).astype(dtype)  # sums to 0
        self.basis = np.stack([np.ones(seg_len, dtype=dtype), self.ramp])  # the trend's
        self.data = np.empty(shape, dtype=dtype)
        self.trend = np.empty(shape, dtype=dtype)
        self.scratch = np.empty(shape)  # float64: the windowed data
        self.spec = np.empty(shape[:2] + (seg_len // 2 + 1,), dtype=np.complex128)
        self.nonfinite = np.zeros(n_channels, dtype=np.int64)
        self.stds: list[np.ndarray] = []  # (segments, channels) blocks
        self.ptp = np.zeros(n_channels)
        # Summed re^2, im^2 of the windowed segments' FFTs, interleaved: paired up once at
        # the end (the power property), not once per batch.
        self.parts = np.zeros((n_channels, 2 * (seg_len // 2 + 1)))

    def add_all(self, segs: Iterable[np.ndarray]) -> None:
        k = 0
        for seg in segs:
            self.data[k] = seg
            k += 1
            if k == self.batch:
                self.add(k)
                k = 0
        if k:
            self.add(k)

    def add(self, k: int) -> None:
        """Add the first k segments of self.data; they are detrended in place."""
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # caught below
            self._add(k)

    def _add(self, k: int) -> None:
        x, trend, scratch, spec = self.data[:k], self.trend[:k], self.scratch[:k], self.spec[:k]
        total = x.sum(axis=-1)  # non-finite wherever a sample is: one pass finds both
        if not np.isfinite(total).all():  # zeroed for the statistics: the count flags them
            finite = np.isfinite(x)
            self.nonfinite += (~finite).sum(axis=(0, 2))
            np.copyto(x, 0.0, where=~finite)
            total = x.sum(axis=-1)
        # Linear detrend (DC and slow drift): ramp sums to 0, so the slope is unbiased.
        slope = (x @ self.ramp) / (self.ramp @ self.ramp)
        if not (np.isfinite(total).all() and np.isfinite(slope).all()):
            x, trend, total, slope = self.promoted(x)  # the sums overflowed (~1e35 V)
        basis = self.basis if x.dtype == self.basis.dtype else self.basis.astype(x.dtype)
        coef = np.stack([total / x.shape[-1], slope], axis=-1).astype(x.dtype)
        x -= np.matmul(coef, basis, out=trend)  # mean + slope * ramp: one BLAS pass
        sums = sum_squares(x)
        if not np.isfinite(sums).all():  # x - trend or its square overflowed
            np.clip(x, -F32_MAX, F32_MAX, out=x)  # float64 input: its spectrum stays finite
            sums = np.einsum("sct,sct->sc", x, x, dtype=np.float64)
        self.stds.append(np.sqrt(sums / x.shape[-1]))
        high, low = x.max(axis=-1).astype(np.float64), x.min(axis=-1)  # float64: no overflow
        self.ptp = np.maximum(self.ptp, (high - low).max(axis=0))
        np.multiply(x, self.window, out=scratch)
        np.fft.rfft(scratch, axis=-1, out=spec)
        parts = spec.view(np.float64)  # re, im, re, im, ...: |z|^2 without hypot's sqrt
        self.parts += np.einsum("scf,scf->cf", parts, parts)

    @property
    def power(self) -> np.ndarray:
        """(channels, freqs): the summed |FFT|^2 of the windowed segments."""
        return self.parts[:, 0::2] + self.parts[:, 1::2]

    def promoted(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The batch as float64 within float32's range, with its sums: a broken channel of
        huge (finite) values then gets huge, finite features, so it is flagged instead of
        turning into NaN (float64 input beyond 1e154 would overflow its squares)."""
        x = np.clip(x, -F32_MAX, F32_MAX, dtype=np.float64)
        ramp = self.ramp.astype(np.float64)
        return x, np.empty_like(x), x.sum(axis=-1), (x @ ramp) / (ramp @ ramp)


def sum_squares(x: np.ndarray) -> np.ndarray:
    """(segments, channels) sums of squares over time, as float64: BLAS dot products in
    x's precision. For float32 a tenth of the time of a float64 einsum, and its ~1e-6
    rounding lies far below any amplitude z we use. Not finite where a square overflowed
    (beyond ~1e19 V in float32): the caller redoes those in float64."""
    rows = x.reshape(-1, 1, x.shape[-1])
    return np.matmul(rows, rows.transpose(0, 2, 1)).reshape(x.shape[:-1]).astype(np.float64)


def segment_features(segs: Iterable[np.ndarray], sfreq: float, line_freq: float | str,
                     ch_names: list[str], scale: np.ndarray | None = None
                     ) -> tuple[Columns, np.ndarray, np.ndarray, np.ndarray]:
    """Features of (channels, times) segments (or a (segments, channels, times) array):
    non-finite first, then amplitude, PSD. line_freq may be "auto". scale: volts per count
    of each channel, for segments of counts (std, ptp and the PSD scale with it; the
    detrend removes any offset, and line ratios compare a channel with itself).

    Returns (columns, freqs, mean PSD, per-window log10 std).
    """
    segs = iter(segs)
    first = next(segs)
    dtype = np.promote_types(first.dtype, np.float32)  # float16's sums would lose 5 %
    stats = SegmentStats(first.shape[0], first.shape[-1], dtype)
    stats.add_all(itertools.chain([first], segs))
    gain = np.ones(stats.ptp.shape) if scale is None else np.abs(scale)
    seg_std = np.concatenate(stats.stds) * gain  # (segments, channels)
    std = median(seg_std, axis=0)
    freqs = np.fft.rfftfreq(len(stats.window), 1 / sfreq)
    psd = one_sided_psd(stats.power, len(seg_std), stats.window, sfreq) * (gain ** 2)[:, None]
    if line_freq == "auto":
        used, note = detect_line_freq(freqs, psd, sfreq)
    else:
        used, note = float(line_freq), observable_lines(float(line_freq), sfreq)[1]
    n = len(ch_names)
    ratio_max, ratio_fund = (line_ratio_db(freqs, psd, used, sfreq) if used
                             else (np.zeros(n), np.zeros(n)))
    columns = {
        "channel": np.array(ch_names, dtype=object), "n_nonfinite": stats.nonfinite,
        "std": std, "ptp": stats.ptp * gain, "log_std": np.log10(np.maximum(std, 1e-30)),
        "line_freq": np.full(n, used if used else np.nan),
        "line_note": np.full(n, note, dtype=object),
        "line_ratio_db": ratio_max, "line_ratio_fundamental_db": ratio_fund,
    }
    return columns, freqs, psd, np.log10(np.maximum(seg_std, 1e-30))


def scan_array(data: "np.ndarray | continuous.Signals", sfreq: float, ch_names: list[str], line_freq: float | str,
               recording: str, params: Outliers) -> RecordingFeatures:
    """(b) the scan on a (channels, times) array or memmap: n systematic segments."""
    seg_len = int(round(params.segment_s * sfreq))
    starts = scan_starts(data.shape[1], seg_len, params.n_segments)
    samples, scale = stored(data)
    columns, freqs, psd, _ = segment_features(array_segments(samples, starts, seg_len), sfreq,
                                              line_freq, ch_names, scale)
    return RecordingFeatures(recording, columns, freqs, stored_psd(psd))


def scan_and_sample(path: Path, recording: str, sfreq: float, ch_names: list[str],
                    line_freq: float | str, samples: np.ndarray,
                    params: Outliers) -> tuple[RecordingFeatures, RecordingFeatures | None]:
    """Both checks of one ingested recording, read from its memory-mapped array."""
    data = continuous.open_data(path)
    if data.shape[0] != len(ch_names):
        raise OddpipeError(f"{path}: {data.shape[0]} channels, channels.tsv lists "
                           f"{len(ch_names)}; rerun the ingest stage (dvc repro ingest)")
    return (scan_array(data, sfreq, ch_names, line_freq, recording, params),
            sample_array(data, sfreq, ch_names, recording, samples, line_freq))


def scan_recording(raw: "mne.io.BaseRaw | str", recording: str, line_freq: float | str,
                   params: Outliers, picks: list[int] | None = None) -> RecordingFeatures:
    """(b) the scan of any file MNE reads (picked channels): the QC path without ingest."""
    import mne  # only here: the stage itself reads arrays

    if not isinstance(raw, mne.io.BaseRaw):
        raw = mne.io.read_raw_fif(raw, preload=False, verbose="error")
    picks = list(range(len(raw.ch_names))) if picks is None else picks
    sfreq = raw.info["sfreq"]
    seg_len = int(round(params.segment_s * sfreq))
    starts = scan_starts(raw.n_times, seg_len, params.n_segments)
    columns, freqs, psd, _ = segment_features(read_segments(raw, starts, seg_len, picks),
                                              sfreq, line_freq, [raw.ch_names[i] for i in picks])
    return RecordingFeatures(recording, columns, freqs, stored_psd(psd))


def _scan_job(job: tuple, params: Outliers,
              spill: Path) -> tuple[RecordingFeatures, RecordingFeatures | None]:
    """Both checks of one recording; its channels' PSDs wait on disk (in spill) until the
    pooled decision says whether the report needs them."""
    index, job = job[0], job[1:]
    scan, sample = scan_and_sample(*job, params)
    np.save(spill / f"{index}.npy", scan.psd)
    return scan.reduced(), sample


@contextmanager
def spill_dir(parent: Path | None) -> Iterator[Path]:
    """A fresh scratch folder for the channels' PSDs, removed afterwards. The stage makes it
    inside its output folder, which Dask workers see too; the library default is in the
    system's temp folder."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".channel-psds-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def too_short(recordings: Columns, params: Outliers) -> dict[str, str]:
    """Recordings shorter than one analysis segment: left out with a reason, the rest go on."""
    return {str(rec): (f"too short to scan ({dur:.2f} s < outliers.segment_s "
                       f"{params.segment_s} s, from {src}); lower outliers.segment_s "
                       "to keep it")
            for rec, dur, src in zip(recordings["recording"], recordings["duration_s"],
                                     recordings["source"]) if dur < params.segment_s}


def sample_array(data: "np.ndarray | continuous.Signals", sfreq: float, ch_names: list[str], recording: str,
                 samples: np.ndarray, line_freq: float | str,
                 window: tuple[float, float] = (-0.2, 0.8)) -> RecordingFeatures | None:
    """(a) the story's check: the same features on windows around sampled events."""
    seg_len = int(round((window[1] - window[0]) * sfreq))
    starts = samples + int(round(window[0] * sfreq))
    starts = starts[(starts >= 0) & (starts + seg_len <= data.shape[1])]
    if len(starts) == 0:
        return None
    samples, scale = stored(data)
    columns, freqs, _, win = segment_features(array_segments(samples, starts, seg_len), sfreq,
                                              line_freq, ch_names, scale)
    return RecordingFeatures(recording, columns, freqs, window_log_std=win.astype(np.float32))


def group_ids(*keys: np.ndarray) -> np.ndarray:
    """Row -> group number, for rows grouped by the given key columns."""
    combined = [tuple(k) for k in zip(*keys)]
    index = {key: i for i, key in enumerate(dict.fromkeys(combined))}
    return np.array([index[k] for k in combined], dtype=np.int64)


def median(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """np.median of an array without NaN, by a sort. np.median imports numpy.ma on its
    first call (10-15 ms, a tenth of the outliers stage's work on the demo)."""
    s = np.sort(a, axis=axis)
    n = s.shape[axis]
    if n == 0:  # as np.median: NaN (no neighbouring bins, say)
        return np.full(np.delete(s.shape, axis), np.nan)
    return (s.take((n - 1) // 2, axis=axis) + s.take(n // 2, axis=axis)) / 2


def group_median(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row: the median of its group's values, NaN skipped (NaN for an all-NaN group).
    groups are group_ids' numbers (0, 1, ...). One sort by (group, value), no loop."""
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    present = ~np.isnan(values)
    v, g = values[present], groups[present]
    order = np.lexsort((v, g))
    v, g = v[order], g[order]
    starts = np.flatnonzero(np.diff(g, prepend=-1))
    counts = np.diff(starts, append=len(v))
    per_group = np.full(int(groups.max(initial=-1)) + 1, np.nan)
    per_group[g[starts]] = (v[starts + (counts - 1) // 2] + v[starts + counts // 2]) / 2
    return per_group[groups]


def robust_z(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per group: (x - median) / (1.4826 MAD), with a floor on the spread so tight groups
    stay calm."""
    values = np.asarray(values, dtype=np.float64)
    med = group_median(values, groups)
    mad = 1.4826 * group_median(np.abs(values - med), groups)
    return (values - med) / np.maximum(mad, MAD_FLOOR)


def nan_median(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(median(present)) if len(present) else np.nan


def add_relative_features(table: Columns, params: Outliers) -> Columns:
    """Compare each channel with its recording, its subject's other recordings, the dataset."""
    t = dict(table)
    recording, subject = t["recording"], t["subject"]
    std = np.asarray(t["std"], dtype=np.float64)
    t["line_excess_db"] = t["line_ratio_db"] - nan_median(t["line_ratio_db"])
    # "Flat" is judged against the recording's plausible channels without line noise: when
    # half a recording carries huge mains (or a broken gain), its median would make every
    # clean channel look flat.
    quiet = np.where((t["line_excess_db"] <= params.line_excess_db)
                     & (std <= params.amp_ceiling), std, np.nan)
    by_recording = group_ids(recording)
    reference = group_median(quiet, by_recording)
    reference = np.where(np.isnan(reference), nan_median(quiet), reference)
    reference = np.where(np.isnan(reference), nan_median(std), reference)
    t["rel_std"] = std / np.where(reference > 0, reference, 1.0)
    t["z_within"] = robust_z(t["log_std"], by_recording)
    files = {}
    for s, r in zip(subject, recording):
        files.setdefault(s, set()).add(r)
    n_rec = np.array([len(files[s]) for s in subject])
    z_cross = robust_z(t["log_std"], group_ids(subject, t["channel"]))
    t["z_cross"] = np.where(n_rec >= 3, z_cross, np.nan)  # two files cannot outvote each other
    return t


def channel_reasons(row: dict, params: Outliers) -> list[str]:
    """Why a channel is flagged; empty when it is fine. Non-finite and flat come first."""
    if row["n_nonfinite"] > 0:
        return [f"{int(row['n_nonfinite'])} non-finite samples"]
    if row["std"] < params.flat_floor or row["rel_std"] < params.flat_rel:
        return [f"flat (std {row['std']:.3g}, {row['rel_std']:.2%} of the recording's "
                "median channel)"]
    reasons = []
    if row["std"] > params.amp_ceiling:
        reasons.append(f"implausible amplitude (std {row['std']:.3g} V > outliers.amp_ceiling "
                       f"{params.amp_ceiling:g} V)")
    if row["line_excess_db"] > params.line_excess_db:
        reasons.append(f"line noise {row['line_excess_db']:.0f} dB above the dataset median")
    if row["z_within"] > params.amp_z:
        reasons.append(f"amplitude z {row['z_within']:.1f} within the recording")
    if not np.isnan(row["z_cross"]) and row["z_cross"] > params.amp_z:
        reasons.append(f"amplitude z {row['z_cross']:.1f} against the subject's other recordings")
    return reasons


REASON_INPUTS = ("n_nonfinite", "std", "rel_std", "line_excess_db", "z_within", "z_cross")


def flag_columns(table: Columns, params: Outliers) -> Columns:
    """Every row's relative features, whether it is flagged, and why."""
    t = add_relative_features(table, params)
    reasons = [channel_reasons(dict(zip(REASON_INPUTS, row)), params)
               for row in zip(*(t[c].tolist() for c in REASON_INPUTS))]
    t["flagged"] = np.array([bool(r) for r in reasons])
    t["reasons"] = np.array(["; ".join(r) for r in reasons], dtype=object)
    return t


def flag_channels(table: "pd.DataFrame | Columns", params: Outliers) -> "pd.DataFrame":
    """flag_columns for a DataFrame (or columns), as a DataFrame."""
    return to_frame(flag_columns(as_columns(table), params))


def decide(flags: "pd.DataFrame | Columns", params: Outliers,
           unscanned: dict[str, str] | None = None) -> dict[str, dict]:
    """Per recording: flags with reasons, the fraction flagged, and the action taken.

    Unscanned recordings (too short) are dropped whole, with their reason.
    """
    f = as_columns(flags)
    decisions = {rec: {"subject": "", "action": "drop_recording", "line_freq": None,
                       "line_note": "", "drop_channels": [], "bad_fraction": 1.0,
                       "flags": {"*": reason}} for rec, reason in (unscanned or {}).items()}
    for rec in sorted(set(f["recording"].tolist())):
        rows = np.flatnonzero(f["recording"] == rec)
        bad = rows[f["flagged"][rows].astype(bool)]
        fraction = len(bad) / len(rows)
        if params.action == "report_only" or not len(bad):
            action, dropped = ("keep", [])
        elif params.action == "drop_recording" or fraction > params.max_bad_fraction:
            action, dropped = ("drop_recording", [str(c) for c in f["channel"][rows]])
        else:
            action, dropped = ("drop_channels", [str(c) for c in f["channel"][bad]])
        line = float(f["line_freq"][rows[0]])
        decisions[str(rec)] = {
            "subject": str(f["subject"][rows[0]]), "action": action,
            "line_freq": None if np.isnan(line) else line,
            "line_note": str(f["line_note"][rows[0]]),
            "drop_channels": dropped, "bad_fraction": round(fraction, 4),
            "flags": {str(c): str(r) for c, r in zip(f["channel"][bad], f["reasons"][bad])},
        }
    return dict(sorted(decisions.items()))


def parse_line_freq(value: object) -> float | str:
    return "auto" if str(value) == "auto" else float(value)


RECORDINGS_SPEC = {"recording": "text", "subject": "text", "data": "text", "source": "text",
                   "sfreq": "positive", "duration_s": "positive", "line_freq": "frequency",
                   "n_target": "count", "n_nontarget": "count"}
SAMPLE_SPEC = {"recording": "text", "sample": "count"}


def check_tables(recordings: Columns, sample: Columns, recordings_path: Path,
                 sample_path: Path) -> None:
    """What the stage reads from ingest and sample, checked before any work."""
    fix_ingest, fix_sample = ("rerun the ingest stage (dvc repro ingest)",
                              "rerun the sample stage (dvc repro sample)")
    require_columns(recordings, recordings_path, RECORDINGS_SPEC, fix_ingest)
    require_columns(sample, sample_path, SAMPLE_SPEC, fix_sample)
    names, counts = np.unique(recordings["recording"].astype(str), return_counts=True)
    if (counts > 1).any():
        raise OddpipeError(f"{recordings_path}: recording {names[counts > 1][0]!r} is listed "
                           f"{counts.max()} times; {fix_ingest}")
    stale = sorted(set(sample["recording"]) - set(names))
    if stale:
        raise OddpipeError(f"{sample_path}: recording {stale[0]!r} is not in "
                           f"{recordings_path.name} (an older sample); {fix_sample}")


def global_line_noise(flags: "pd.DataFrame | Columns", min_db: float = AUTO_MIN_DB) -> dict:
    """Is line noise everywhere? Then flags rank channels instead of drowning the report."""
    ratios = np.asarray(flags["line_ratio_db"], dtype=np.float64)
    fraction = float((ratios > min_db).mean()) if len(ratios) else 0.0
    return {"line_noise_global": bool(fraction > 0.5),
            "fraction_channels_line_noise": round(fraction, 4),
            "median_line_ratio_db": round(nan_median(ratios), 2)}


@dataclass
class OutlierResult:
    columns: Columns  # every recording x channel: features, flagged, reasons
    decisions: dict[str, dict]
    scans: dict[str, RecordingFeatures]
    samples: dict[str, RecordingFeatures]

    @property
    def flags(self) -> "pd.DataFrame":
        return to_frame(self.columns)


def features_columns(feats: list[RecordingFeatures], subjects: dict[str, str]) -> Columns:
    """The per-recording feature columns stacked, with recording and subject added."""
    names = list(feats[0].columns)
    columns = {c: np.concatenate([f.columns[c] for f in feats]) for c in names}
    columns["recording"] = np.concatenate(
        [np.full(len(f.columns["channel"]), f.recording, dtype=object) for f in feats])
    columns["subject"] = np.array([subjects[r] for r in columns["recording"]], dtype=object)
    return columns


def with_sample(flags: Columns, sample_flags: Columns | None) -> Columns:
    """The inspection sample's findings beside the scan's, as sample_* columns (missing
    where a recording had no sampled window)."""
    out = dict(flags)
    index = {} if sample_flags is None else {
        key: i for i, key in enumerate(zip(sample_flags["recording"], sample_flags["channel"]))}
    rows = [index.get(key) for key in zip(flags["recording"], flags["channel"])]
    for c in ("line_ratio_db", "log_std"):
        out[f"sample_{c}"] = np.array([np.nan if i is None else sample_flags[c][i]
                                       for i in rows], dtype=np.float64)
    out["sample_flagged"] = np.array([None if i is None else bool(sample_flags["flagged"][i])
                                      for i in rows], dtype=object)
    return out


# A scan reads few values (16 channels x 20 segments of 4 s at 500 Hz: 0.64 M, ~9 ms);
# two loky workers take ~0.8 s to start. Below this many values to scan the stage stays in
# one process: 320 such recordings were still faster in one (bench/RESULTS.md).
PARALLEL_VALUES = 300_000_000


def worth_workers(values: int, n_recordings: int) -> tuple[bool, str]:
    return (values >= PARALLEL_VALUES,
            f"{n_recordings} recordings, {values / 1e6:.0f} M values to scan")


def detect(recordings: "pd.DataFrame | Columns", sample: "pd.DataFrame | Columns",
           ingest_dir: Path, params: Outliers, runner: Runner = SERIAL,
           scratch_parent: Path | None = None) -> OutlierResult:
    """Scan every recording, check the inspection sample, decide on the scan. Memory grows
    with what is flagged, not with the data: per recording only the median channel's PSD
    stays in memory, and the flagged recordings' channel PSDs are read back from scratch."""
    recordings, sample = as_columns(recordings), as_columns(sample)
    short = too_short(recordings, params)
    for rec, reason in short.items():
        log.warning("%s: %s", rec, reason)
    scannable = [i for i, r in enumerate(recordings["recording"]) if r not in short]
    if not scannable:
        raise OddpipeError("every recording is shorter than outliers.segment_s "
                           f"({params.segment_s} s); lower it")
    channels, _ = continuous.read_channels(ingest_dir)
    sampled = np.asarray(sample["sample"], dtype=np.int64)
    jobs = [(i, Path(ingest_dir) / recordings["data"][i], str(recordings["recording"][i]),
             float(recordings["sfreq"][i]), channels,
             parse_line_freq(recordings["line_freq"][i]),
             sampled[sample["recording"] == recordings["recording"][i]])
            for i in scannable]
    seg_len = max(int(round(params.segment_s * float(recordings["sfreq"][i])))
                  for i in scannable)
    runner = for_work(runner, partial(worth_workers, len(jobs) * len(channels) *
                                      params.n_segments * seg_len, len(jobs)))
    with spill_dir(scratch_parent) as spill:
        pairs = map_recordings(partial(_scan_job, params=params, spill=spill), jobs, runner)
        scans = [scan for scan, _ in pairs]
        result = decide_pooled(scans, [s for _, s in pairs if s is not None], recordings,
                               short, params)
        f = result.columns
        bad = set(f["recording"][f["flagged"].astype(bool)])
        for job, scan in zip(jobs, scans):
            if scan.recording in bad:
                scan.psd = np.load(spill / f"{job[0]}.npy", allow_pickle=False)
    return result


def decide_pooled(scans: list[RecordingFeatures], samples: list[RecordingFeatures],
                  recordings: Columns, short: dict[str, str],
                  params: Outliers) -> OutlierResult:
    """Flags on the pooled scan (and, beside them, on the pooled inspection sample)."""
    subjects = {str(r): str(s) for r, s in zip(recordings["recording"], recordings["subject"])}
    flags = flag_columns(features_columns(scans, subjects), params)
    sample_flags = flag_columns(features_columns(samples, subjects), params) if samples else None
    decisions = decide(flags, params, short)
    for rec in short:
        decisions[rec]["subject"] = subjects[rec]
    return OutlierResult(with_sample(flags, sample_flags), decisions,
                         {f.recording: f for f in scans}, {f.recording: f for f in samples})


def evidence_arrays(result: OutlierResult) -> dict[str, np.ndarray]:
    """What the report draws, small enough to keep beside the decisions: per recording the
    median channel's PSD and each flagged channel's PSD, and the inspection-sample window
    amplitudes. Keys are "<recording>|<what>"."""
    arrays: dict[str, np.ndarray] = {}
    f = result.columns
    flagged = f["flagged"].astype(bool)
    for rec, feats in result.scans.items():
        names = [str(c) for c in feats.columns["channel"]]
        bad = [str(c) for c in f["channel"][flagged & (f["recording"] == rec)]]
        arrays[f"{rec}|freqs"] = feats.freqs.astype(np.float32)
        arrays[f"{rec}|median_psd"] = feats.reduced().median_psd
        arrays[f"{rec}|flagged_channels"] = np.array(bad, dtype=str)
        arrays[f"{rec}|flagged_psd"] = (feats.psd[[names.index(c) for c in bad]] if bad
                                        else np.zeros((0, len(feats.freqs)), np.float32))
    for rec, feats in result.samples.items():
        arrays[f"{rec}|sample_channels"] = np.array(
            [str(c) for c in feats.columns["channel"]], dtype=str)
        arrays[f"{rec}|sample_log_std"] = feats.window_log_std
    return arrays


def save_evidence(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(new_file(path), "wb") as fh:  # a file object: np.savez would append .npz
        np.savez(fh, **arrays)


def load_evidence(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, zipfile.BadZipFile) as exc:  # not an .npz, or pickled objects
        raise OddpipeError(f"{path}: not a readable evidence file ({exc}); rerun the outliers "
                           "stage (dvc repro outliers)") from None


def summary_metrics(result: OutlierResult, recordings: "pd.DataFrame | Columns") -> dict:
    """Small numbers for dvc metrics diff: what was flagged and what it cost. Events are
    counted from recordings.tsv (n_target + n_nontarget): events.tsv grows with the data."""
    recordings = as_columns(recordings)
    f, d = result.columns, result.decisions
    dropped = [r for r, v in d.items() if v["action"] == "drop_recording"]
    flagged = f["flagged"].astype(bool)
    sampled = np.array([v is not None for v in f["sample_flagged"]], dtype=bool)
    sample_hit = np.array([v is True for v in f["sample_flagged"]], dtype=bool)
    scan_set = set(zip(f["recording"][flagged], f["channel"][flagged]))
    sample_set = set(zip(f["recording"][sample_hit], f["channel"][sample_hit]))
    n_events = (np.asarray(recordings["n_target"], dtype=np.int64)
                + np.asarray(recordings["n_nontarget"], dtype=np.int64))
    n_removed = n_events[np.isin(np.asarray(recordings["recording"], dtype=object), dropped)]
    return {
        "n_recordings": len(d),
        "n_channels_checked": len(f["channel"]),
        "n_flagged_channels": len(scan_set),
        "n_flagged_recordings": len(set(f["recording"][flagged])),
        "n_dropped_recordings": len(dropped),
        "n_dropped_channels": int(sum(len(v["drop_channels"]) for v in d.values()
                                      if v["action"] == "drop_channels")),
        "max_line_excess_db": round(float(np.nanmax(f["line_excess_db"])), 2),
        "max_line_ratio_db": round(float(np.nanmax(f["line_ratio_db"])), 2),
        **global_line_noise(f),
        "fraction_events_removed": round(float(n_removed.sum() / n_events.sum()), 4)
        if n_events.sum() else 0.0,
        "sample_recordings_covered": len(set(f["recording"][sampled])),
        "sample_found_of_scan_flags": len(scan_set & sample_set),
        "sample_extra_flags": len(sample_set - scan_set),
    }


def scan_files(paths: list[Path], params: Outliers, line_freq: float | str = "auto",
               ch_types: tuple[str, ...] = ("eeg", "seeg", "ecog")) -> OutlierResult:
    """Quality control without events or a pipeline: scan any files MNE reads, each at its
    own rate and with its own channels, and decide as the outliers stage does."""
    feats = []
    import mne  # the QC path reads raw files; the stage reads arrays

    for path in paths:
        raw = mne.io.read_raw(path, preload=False, verbose="error")
        picks = list(mne.pick_types(raw.info, exclude=[], **{t: True for t in ch_types}))
        if raw.n_times < 2:
            raise OddpipeError(f"{path}: {raw.n_times} samples, nothing to scan; leave it out")
        seg_s = min(params.segment_s, raw.n_times / raw.info["sfreq"])  # short clips: whole
        feats.append(scan_recording(raw, Path(path).stem, line_freq,
                                    params.model_copy(update={"segment_s": seg_s}), picks))
    flags = flag_columns(features_columns(feats, {f.recording: f.recording for f in feats}),
                         params)
    return OutlierResult(flags, decide(flags, params), {f.recording: f for f in feats}, {})
