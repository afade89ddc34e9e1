"""Outlier detection on raw data: line noise, amplitude and flat/non-finite checks per
recording x channel, compared within the recording, across a subject's recordings and
across the dataset; decisions with reasons.

Runs before any filter: a notch would hide the line noise that identifies a detached
electrode.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from oddpipe import continuous
from oddpipe.errors import OddpipeError
from oddpipe.parallel import SERIAL, Runner, map_recordings
from oddpipe.params import Outliers

if TYPE_CHECKING:
    import mne

log = logging.getLogger(__name__)

PEAK_HALF_WIDTH_HZ = 0.5
NEIGHBOUR_HZ = (2.0, 6.0)
MAD_FLOOR = 0.1  # log10 units: a 26 % amplitude spread is never "tight"
AUTO_MIN_DB = 10.0  # a line peak 10x above its neighbours is "clear"


@dataclass
class RecordingFeatures:
    """Per-channel features of one recording, and its mean PSD for the report."""

    recording: str
    table: pd.DataFrame
    freqs: np.ndarray
    psd: np.ndarray  # (channels, freqs)
    window_log_std: np.ndarray | None = None  # (windows, channels), inspection sample only


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


def array_segments(data: np.ndarray, starts: np.ndarray, seg_len: int) -> np.ndarray:
    """(segments, channels, times) from a (channels, times) array or memmap, in its float
    precision: float32 (ingest's) halves the memory traffic of every step, and its rounding
    floor (-140 dB under the largest component) lies far below any ratio we measure."""
    segs = np.empty((len(starts), data.shape[0], seg_len),
                    dtype=np.float32 if data.dtype == np.float32 else np.float64)
    for i, s in enumerate(starts):
        segs[i] = data[:, s:s + seg_len]
    return segs


def detrend_linear(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Remove the mean and the linear trend along the last axis (DC and slow drift)."""
    t = np.arange(x.shape[-1], dtype=x.dtype)
    t -= t.mean()
    mean = x.mean(axis=-1, keepdims=True)
    slope = (x @ t) / (t @ t)  # t sums to 0, so the mean does not bias the slope
    out = x if inplace else x.copy()
    out -= mean
    out -= slope[..., None] * t
    return out


def hann_periodogram(segs: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean one-sided PSD (V^2/Hz) of Hann-windowed segments, one FFT each: the finest bins
    a segment allows, so a sinusoid stands out (a Welch call per segment is ~4x slower)."""
    n = segs.shape[-1]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(segs.dtype)  # Hann
    spec = np.abs(np.fft.rfft(segs * window, axis=-1)) ** 2 / (sfreq * (window ** 2).sum())
    spec[..., 1:(n + 1) // 2] *= 2  # one-sided: fold the negative frequencies in
    return np.fft.rfftfreq(n, 1 / sfreq), spec.mean(axis=0)


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
    """(channels, harmonics): peak power over the median of neighbouring bins, in dB."""
    ratios = np.zeros((psd.shape[0], len(harmonics)))
    near_any = np.zeros(len(freqs), dtype=bool)
    for f in harmonics:
        near_any |= np.abs(freqs - f) < 1.0
    for k, f in enumerate(harmonics):
        dist = np.abs(freqs - f)
        peak = psd[:, dist <= PEAK_HALF_WIDTH_HZ].max(axis=1)
        ring = (dist >= NEIGHBOUR_HZ[0]) & (dist <= NEIGHBOUR_HZ[1]) & ~near_any
        floor = np.median(psd[:, ring], axis=1)
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


def segment_features(segs: np.ndarray, sfreq: float, line_freq: float | str,
                     ch_names: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Features of (segments, channels, times) data: non-finite first, then amplitude, PSD.

    line_freq may be "auto". Returns (table, freqs, mean PSD, per-window log10 std).
    """
    finite = np.isfinite(segs)
    nonfinite = (~finite).sum(axis=(0, 2))
    # A fresh copy, detrended in place; non-finite samples are zeroed for the statistics
    # (their count alone flags the channel).
    segs = np.where(finite, segs, 0.0) if nonfinite.any() else segs.copy()
    segs = detrend_linear(segs, inplace=True)
    seg_std = segs.std(axis=-1)  # (segments, channels)
    std = np.median(seg_std, axis=0)
    freqs, psd = hann_periodogram(segs, sfreq)
    if line_freq == "auto":
        used, note = detect_line_freq(freqs, psd, sfreq)
    else:
        used, note = float(line_freq), observable_lines(float(line_freq), sfreq)[1]
    ratio_max, ratio_fund = (line_ratio_db(freqs, psd, used, sfreq) if used
                             else (np.zeros(len(ch_names)), np.zeros(len(ch_names))))
    table = pd.DataFrame({
        "channel": ch_names, "n_nonfinite": nonfinite, "std": std,
        "ptp": np.ptp(segs, axis=-1).max(axis=0),
        "log_std": np.log10(np.maximum(std, 1e-30)),
        "line_freq": used if used else np.nan, "line_note": note,
        "line_ratio_db": ratio_max, "line_ratio_fundamental_db": ratio_fund,
    })
    window_log_std = np.log10(np.maximum(seg_std, 1e-30))
    return table, freqs, psd, window_log_std


def scan_array(data: np.ndarray, sfreq: float, ch_names: list[str], line_freq: float | str,
               recording: str, params: Outliers) -> RecordingFeatures:
    """(b) the scan on a (channels, times) array or memmap: n systematic segments."""
    seg_len = int(round(params.segment_s * sfreq))
    starts = scan_starts(data.shape[1], seg_len, params.n_segments)
    table, freqs, psd, _ = segment_features(array_segments(data, starts, seg_len), sfreq,
                                            line_freq, ch_names)
    return RecordingFeatures(recording, table, freqs, psd)


def scan_and_sample(path: Path, recording: str, sfreq: float, ch_names: list[str],
                    line_freq: float | str, samples: np.ndarray,
                    params: Outliers) -> tuple[RecordingFeatures, RecordingFeatures | None]:
    """Both checks of one ingested recording, read from its memory-mapped array."""
    data = continuous.open_data(path)
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
    table, freqs, psd, _ = segment_features(read_segments(raw, starts, seg_len, picks), sfreq,
                                            line_freq, [raw.ch_names[i] for i in picks])
    return RecordingFeatures(recording, table, freqs, psd)


def _scan_job(job: tuple, params: Outliers) -> tuple[RecordingFeatures, RecordingFeatures | None]:
    return scan_and_sample(*job, params)


def too_short(recordings: pd.DataFrame, params: Outliers) -> dict[str, str]:
    """Recordings shorter than one analysis segment: left out with a reason, the rest go on."""
    short = recordings[recordings["duration_s"] < params.segment_s]
    return {r.recording: (f"too short to scan ({r.duration_s:.2f} s < outliers.segment_s "
                          f"{params.segment_s} s, from {r.source}); lower outliers.segment_s "
                          "to keep it") for r in short.itertuples()}


def sample_array(data: np.ndarray, sfreq: float, ch_names: list[str], recording: str,
                 samples: np.ndarray, line_freq: float | str,
                 window: tuple[float, float] = (-0.2, 0.8)) -> RecordingFeatures | None:
    """(a) the story's check: the same features on windows around sampled events."""
    seg_len = int(round((window[1] - window[0]) * sfreq))
    starts = samples + int(round(window[0] * sfreq))
    starts = starts[(starts >= 0) & (starts + seg_len <= data.shape[1])]
    if len(starts) == 0:
        return None
    table, freqs, psd, win = segment_features(array_segments(data, starts, seg_len), sfreq,
                                              line_freq, ch_names)
    return RecordingFeatures(recording, table, freqs, psd, win)


def robust_z(values: pd.Series, keys: list[pd.Series]) -> pd.Series:
    """Per group: (x - median) / (1.4826 MAD), with a floor on the spread so tight groups
    stay calm. Grouped medians, not a Python function per group (10x faster)."""
    med = values.groupby(keys).transform("median")
    mad = 1.4826 * (values - med).abs().groupby(keys).transform("median")
    return (values - med) / mad.clip(lower=MAD_FLOOR)


def add_relative_features(table: pd.DataFrame, line_excess_db: float) -> pd.DataFrame:
    """Compare each channel with its recording, its subject's other recordings, the dataset."""
    t = table.copy()
    t["line_excess_db"] = t["line_ratio_db"] - t["line_ratio_db"].median()
    # "Flat" is judged against the recording's channels without line noise: when half a
    # recording carries huge mains, its median would make every clean channel look flat.
    quiet = t["std"].where(t["line_excess_db"] <= line_excess_db)
    reference = quiet.groupby(t["recording"]).transform("median")
    reference = reference.fillna(quiet.median()).fillna(t["std"].median())
    t["rel_std"] = t["std"] / reference.where(reference > 0, 1.0)
    t["z_within"] = robust_z(t["log_std"], [t["recording"]])
    n_rec = t.groupby("subject")["recording"].transform("nunique")
    z_cross = robust_z(t["log_std"], [t["subject"], t["channel"]])
    t["z_cross"] = z_cross.where(n_rec >= 3)  # two files cannot outvote each other
    return t


def channel_reasons(row: pd.Series, params: Outliers) -> list[str]:
    """Why a channel is flagged; empty when it is fine. Non-finite and flat come first."""
    if row["n_nonfinite"] > 0:
        return [f"{int(row['n_nonfinite'])} non-finite samples"]
    if row["std"] < params.flat_floor or row["rel_std"] < params.flat_rel:
        return [f"flat (std {row['std']:.3g}, {row['rel_std']:.2%} of the recording's "
                "median channel)"]
    reasons = []
    if row["line_excess_db"] > params.line_excess_db:
        reasons.append(f"line noise {row['line_excess_db']:.0f} dB above the dataset median")
    if row["z_within"] > params.amp_z:
        reasons.append(f"amplitude z {row['z_within']:.1f} within the recording")
    if pd.notna(row["z_cross"]) and row["z_cross"] > params.amp_z:
        reasons.append(f"amplitude z {row['z_cross']:.1f} against the subject's other recordings")
    return reasons


def flag_channels(table: pd.DataFrame, params: Outliers) -> pd.DataFrame:
    t = add_relative_features(table, params.line_excess_db)
    reasons = t.apply(lambda r: channel_reasons(r, params), axis=1)
    t["flagged"] = reasons.map(bool)
    t["reasons"] = reasons.map("; ".join)
    return t


def decide(flags: pd.DataFrame, params: Outliers,
           unscanned: dict[str, str] | None = None) -> dict[str, dict]:
    """Per recording: flags with reasons, the fraction flagged, and the action taken.

    Unscanned recordings (too short) are dropped whole, with their reason.
    """
    decisions = {rec: {"subject": "", "action": "drop_recording", "line_freq": None,
                       "line_note": "", "drop_channels": [], "bad_fraction": 1.0,
                       "flags": {"*": reason}} for rec, reason in (unscanned or {}).items()}
    for rec, part in flags.groupby("recording", sort=True):
        bad = part[part["flagged"]]
        fraction = len(bad) / len(part)
        if params.action == "report_only" or bad.empty:
            action, dropped = ("keep", [])
        elif params.action == "drop_recording" or fraction > params.max_bad_fraction:
            action, dropped = ("drop_recording", list(part["channel"]))
        else:
            action, dropped = ("drop_channels", list(bad["channel"]))
        line = part["line_freq"].iloc[0]
        decisions[rec] = {
            "subject": str(part["subject"].iloc[0]), "action": action,
            "line_freq": None if pd.isna(line) else float(line),
            "line_note": str(part["line_note"].iloc[0]),
            "drop_channels": dropped, "bad_fraction": round(fraction, 4),
            "flags": dict(zip(bad["channel"], bad["reasons"])),
        }
    return dict(sorted(decisions.items()))


def parse_line_freq(value: object) -> float | str:
    return "auto" if str(value) == "auto" else float(value)


def global_line_noise(flags: pd.DataFrame, min_db: float = AUTO_MIN_DB) -> dict:
    """Is line noise everywhere? Then flags rank channels instead of drowning the report."""
    noisy = flags["line_ratio_db"] > min_db
    fraction = float(noisy.mean()) if len(flags) else 0.0
    return {"line_noise_global": bool(fraction > 0.5),
            "fraction_channels_line_noise": round(fraction, 4),
            "median_line_ratio_db": round(float(flags["line_ratio_db"].median()), 2)}


@dataclass
class OutlierResult:
    flags: pd.DataFrame  # every recording x channel: features, flagged, reasons
    decisions: dict[str, dict]
    scans: dict[str, RecordingFeatures]
    samples: dict[str, RecordingFeatures]


def _features_table(feats: list[RecordingFeatures], recordings: pd.DataFrame) -> pd.DataFrame:
    subjects = dict(zip(recordings["recording"], recordings["subject"]))
    return pd.concat([f.table.assign(recording=f.recording, subject=subjects[f.recording])
                      for f in feats], ignore_index=True)


def detect(recordings: pd.DataFrame, sample: pd.DataFrame, ingest_dir: Path, params: Outliers,
           runner: Runner = SERIAL) -> OutlierResult:
    """Scan every recording, check the inspection sample, decide on the scan."""
    short = too_short(recordings, params)
    for rec, reason in short.items():
        log.warning("%s: %s", rec, reason)
    scannable = recordings[~recordings["recording"].isin(short)]
    if scannable.empty:
        raise OddpipeError("every recording is shorter than outliers.segment_s "
                           f"({params.segment_s} s); lower it")
    channels, _ = continuous.read_channels(ingest_dir)
    jobs = [(Path(ingest_dir) / r.data, r.recording, float(r.sfreq), channels,
             parse_line_freq(r.line_freq),
             sample.loc[sample["recording"] == r.recording, "sample"].to_numpy())
            for r in scannable.itertuples()]
    pairs = map_recordings(partial(_scan_job, params=params), jobs, runner)
    scans = [scan for scan, _ in pairs]
    samples = [sample for _, sample in pairs if sample is not None]
    flags = flag_channels(_features_table(scans, recordings), params)
    sample_flags = (flag_channels(_features_table(samples, recordings), params) if samples
                    else flags[["recording", "channel"]].assign(
                        line_ratio_db=np.nan, log_std=np.nan, flagged=np.nan))
    merged = flags.merge(
        sample_flags[["recording", "channel", "line_ratio_db", "log_std", "flagged"]]
        .rename(columns=lambda c: c if c in ("recording", "channel") else f"sample_{c}"),
        on=["recording", "channel"], how="left")
    decisions = decide(flags, params, short)
    for rec in short:
        decisions[rec]["subject"] = str(
            recordings.loc[recordings["recording"] == rec, "subject"].iloc[0])
    return OutlierResult(merged, decisions,
                         {f.recording: f for f in scans}, {f.recording: f for f in samples})


def evidence_arrays(result: OutlierResult) -> dict[str, np.ndarray]:
    """What the report draws, small enough to keep beside the decisions: per recording the
    median channel's PSD and each flagged channel's PSD, and the inspection-sample window
    amplitudes. Keys are "<recording>|<what>"."""
    arrays: dict[str, np.ndarray] = {}
    flagged = result.flags[result.flags["flagged"].astype(bool)]
    for rec, feats in result.scans.items():
        names = list(feats.table["channel"])
        bad = list(flagged.loc[flagged["recording"] == rec, "channel"])
        arrays[f"{rec}|freqs"] = feats.freqs.astype(np.float32)
        arrays[f"{rec}|median_psd"] = np.median(feats.psd, axis=0).astype(np.float32)
        arrays[f"{rec}|flagged_channels"] = np.array(bad, dtype=str)
        arrays[f"{rec}|flagged_psd"] = feats.psd[[names.index(c) for c in bad]].astype(np.float32)
    for rec, feats in result.samples.items():
        arrays[f"{rec}|sample_channels"] = np.array(list(feats.table["channel"]), dtype=str)
        arrays[f"{rec}|sample_log_std"] = feats.window_log_std.astype(np.float32)
    return arrays


def save_evidence(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to the name
        np.savez(fh, **arrays)


def load_evidence(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, zipfile.BadZipFile) as exc:  # not an .npz, or pickled objects
        raise OddpipeError(f"{path}: not a readable evidence file ({exc}); rerun the outliers "
                           "stage (dvc repro outliers)") from None


def summary_metrics(result: OutlierResult, events: pd.DataFrame) -> dict:
    """Small numbers for dvc metrics diff: what was flagged and what it cost."""
    f, d = result.flags, result.decisions
    dropped = [r for r, v in d.items() if v["action"] == "drop_recording"]
    sampled = f["sample_flagged"].notna()
    scan_set = set(zip(f.loc[f["flagged"], "recording"], f.loc[f["flagged"], "channel"]))
    s = f[sampled & (f["sample_flagged"] == True)]  # noqa: E712 (pandas object column)
    sample_set = set(zip(s["recording"], s["channel"]))
    return {
        "n_recordings": len(d),
        "n_channels_checked": int(len(f)),
        "n_flagged_channels": len(scan_set),
        "n_flagged_recordings": int(f.loc[f["flagged"], "recording"].nunique()),
        "n_dropped_recordings": len(dropped),
        "n_dropped_channels": int(sum(len(v["drop_channels"]) for v in d.values()
                                      if v["action"] == "drop_channels")),
        "max_line_excess_db": round(float(f["line_excess_db"].max()), 2),
        "max_line_ratio_db": round(float(f["line_ratio_db"].max()), 2),
        **global_line_noise(f),
        "fraction_events_removed": round(float(events["recording"].isin(dropped).mean()), 4),
        "sample_recordings_covered": int(f.loc[sampled, "recording"].nunique()),
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
        seg_s = min(params.segment_s, raw.n_times / raw.info["sfreq"])  # short clips: whole
        feats.append(scan_recording(raw, Path(path).stem, line_freq,
                                    params.model_copy(update={"segment_s": seg_s}), picks))
    recordings = pd.DataFrame({"recording": [f.recording for f in feats],
                               "subject": [f.recording for f in feats]})
    flags = flag_channels(_features_table(feats, recordings), params)
    return OutlierResult(flags, decide(flags, params), {f.recording: f for f in feats}, {})
