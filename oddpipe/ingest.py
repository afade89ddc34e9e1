"""Ingest: read raw recordings with MNE, map events to labels, pick channels by name.

Each file is opened once: header, channels and events are read, and a usable file's data
are streamed, chunk by chunk, into a part: the file's own 16-bit counts where it stores
them (EDF), float32 volts otherwise. Once every file is known, each part becomes its
recording's .npy: the channels all files share, at one rate (the contract is
in oddpipe/continuous.py). Memory stays flat: one file's chunk at a time.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import mne
import numpy as np
import pandas as pd

from oddpipe import bids, continuous
from oddpipe.errors import OddpipeError
from oddpipe.io import write_tsv
from oddpipe.parallel import SERIAL, Runner, for_work, in_process, map_recordings
from oddpipe.params import Ingest, ReaderScalar

log = logging.getLogger(__name__)

EVENT_COLUMNS = ["sample", "onset_s", "code", "label", "y"]


@dataclass
class FileScan:
    """What the first pass learns about one file; error is set when it is unusable."""

    path: Path
    recording: str
    subject: str = ""
    session: str = ""
    run: str = ""
    sfreq: float = 0.0
    n_times: int = 0
    channels: dict[str, str] = field(default_factory=dict)  # normalized -> original, kept
    available: list[str] = field(default_factory=list)  # every data channel found, normalized
    reader_options: dict[str, ReaderScalar] = field(default_factory=dict)
    line_freq: float | None = None  # a BIDS sidecar's PowerLineFrequency; None: not given
    bids_root: Path | None = None  # set when read through mne-bids (sidecars applied)
    events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EVENT_COLUMNS))
    n_unmapped: int = 0
    counts: "EventCounts | None" = None
    event_source: str = ""
    orig_sfreq: float = 0.0
    error: str | None = None
    part: Path | None = None  # its kept channels, written while the file was open
    cal: continuous.Calibration | None = None  # the part's, when it holds int16 counts
    types: list[str] = field(default_factory=list)  # channel types, in channels' order


def normalize_channel_name(name: str) -> str:
    """Strip whitespace, an 'EEG ' prefix and a '-REF' suffix so names match across files."""
    name = re.sub(r"^EEG[ _]+", "", name.strip(), flags=re.IGNORECASE)
    return re.sub(r"[-_]REF$", "", name, flags=re.IGNORECASE).strip()


def listed(path: Path) -> bool:
    """A match to ingest: a file, and what a person would take for one (a folder with a
    suffix, a broken link, a file in a folder this user may list but not enter), so its row
    says why it cannot be read instead of it vanishing."""
    try:
        return path.is_file() or (path.is_dir() and bool(path.suffix)) or (
            path.is_symlink() and not path.exists())
    except PermissionError:
        return True


def list_files(raw_dir: Path, pattern: str) -> list[Path]:
    if not Path(raw_dir).is_dir():
        what = "a file, not a folder" if Path(raw_dir).exists() else "no such folder"
        raise OddpipeError(f"{raw_dir}: {what}; point ingest.raw_dir at your recordings")
    files = sorted(p for p in Path(raw_dir).glob(pattern) if listed(p))
    if not files:
        raise OddpipeError(
            f"{raw_dir}: no files match ingest.pattern '{pattern}'; "
            "point ingest.raw_dir at your recordings or fix the pattern"
        )
    return files


# Side files named after their header: opened through it, never as recordings of their own.
COMPANIONS = {".set": {".fdt"}, ".eeg": {".21e", ".pnt", ".log", ".11d"}}


def vhdr_files(header: Path) -> set[str]:
    """The data and marker files a BrainVision header names."""
    text = header.read_text(encoding="latin-1")
    return set(re.findall(r"^\s*(?:DataFile|MarkerFile)\s*=\s*(.+?)\s*$", text, re.MULTILINE))


def companion_header(path: Path) -> Path | None:
    """The header a side file belongs to (BrainVision .eeg/.dat/.vmrk, EEGLAB .fdt,
    Nihon Kohden .21E/.PNT/.LOG/.11D), or None for a recording in its own right."""
    try:
        return _companion_header(path)
    except PermissionError:  # a folder this user may not enter: the file's row says so
        return None


def _companion_header(path: Path) -> Path | None:
    for ext in (".vhdr", ".VHDR"):
        header = path.with_suffix(ext)
        if header != path and header.is_file() and path.name in vhdr_files(header):
            return header
    for ext, sides in COMPANIONS.items():
        if path.suffix.lower() in sides:
            for header in (path.with_suffix(ext), path.with_suffix(ext.upper())):
                if header.is_file():
                    return header
    return None


def list_recordings(params: Ingest) -> list[Path]:
    """The files to ingest: a BIDS root's eeg/ieeg recordings, or the files matching
    ingest.pattern less side files whose header is listed too (a side file listed alone is
    kept, so its row says which header to read)."""
    raw_dir = Path(params.raw_dir)
    if params.layout == "bids":
        return bids.find_recordings(raw_dir)
    files = list_files(raw_dir, params.pattern)
    listed = set(files)
    kept = [f for f in files if companion_header(f) not in listed]
    if len(kept) < len(files):
        log.info("%d side files (BrainVision data/markers, EEGLAB .fdt, ...) are read through "
                 "their headers", len(files) - len(kept))
    return kept


def reader_options_for(rel_path: str, options: dict[str, dict[str, ReaderScalar]]
                       ) -> dict[str, ReaderScalar]:
    """The first ingest.reader_options glob matching the path below raw_dir (fnmatch,
    case-sensitive; '*' also crosses folders), so two files of one format can differ."""
    for glob, kwargs in options.items():
        if fnmatch.fnmatchcase(rel_path, glob):
            return dict(kwargs)
    return {}


def parse_entities(rel_path: str, regex: str) -> dict[str, str]:
    match = re.search(regex, rel_path)
    if not match or not match.groupdict().get("subject"):
        raise OddpipeError(
            f"cannot find a subject in the path with ingest.path_regex '{regex}'; "
            "adjust the regex (it needs a named group 'subject')"
        )
    return {k: v or "" for k, v in match.groupdict().items()}


def _stim_events(raw: mne.io.BaseRaw, params: Ingest) -> np.ndarray:
    """Stim-channel onsets; an event at sample 0 is kept; high status bits masked by param."""
    return mne.find_events(raw, stim_channel=params.stim_channel, shortest_event=1,
                           initial_event=True, consecutive=True, mask=params.stim_mask,
                           mask_type="and", verbose="error")


def sidecar_candidates(path: Path) -> list[Path]:
    stem = path.name.split(".")[0]
    candidates = [path.with_name(f"{stem}_events.tsv")]
    if "_" in stem:
        candidates.append(path.with_name(f"{stem.rsplit('_', 1)[0]}_events.tsv"))
    return candidates


def events_sidecar(path: Path) -> Path:
    """The BIDS-style <stem>_events.tsv beside a recording (datatype suffix replaced)."""
    candidates = sidecar_candidates(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise OddpipeError(f"no events sidecar ({' or '.join(c.name for c in candidates)}); "
                       "add one or set ingest.event_source")


def tsv_code_column(table: pd.DataFrame, column: str, name: str) -> str:
    """The requested column, or 'value' when it is absent or all n/a (as mne-bids does)."""
    for col in (column, "value"):
        if col in table and (table[col] != "n/a").any():
            if col != column:
                log.warning("%s: column '%s' is absent or all n/a; codes come from 'value'",
                            name, column)
            return col
    raise OddpipeError(f"{name} has no '{column}' or 'value' column with codes; set "
                       "ingest.tsv_column to the column that holds them")


def read_sidecar(sidecar: Path) -> pd.DataFrame:
    """An events.tsv as text cells; an empty or unparsable one is named."""
    try:
        table = pd.read_csv(sidecar, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise OddpipeError(f"{sidecar.name} is empty; write its events (onset, trial_type) "
                           "or remove it") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise OddpipeError(f"{sidecar.name} is not a readable UTF-8 TSV ({first_line(exc)}); "
                           "fix the file") from None
    if not isinstance(table.index, pd.RangeIndex):  # pandas made the extra fields an index
        raise OddpipeError(f"{sidecar.name}: some lines have more fields than its header; "
                           "fix the file (one tab-separated field per column)")
    return table


def tsv_onsets(table: pd.DataFrame, sidecar: Path) -> np.ndarray:
    """Onsets in seconds; text, an empty cell, nan or inf is named with its line
    (cast as it was, a non-finite onset became a garbage sample number)."""
    onsets = pd.to_numeric(table["onset"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(onsets))
    if len(bad):
        line = table.index[bad[0]] + 2  # line 1 is the header
        raise OddpipeError(f"{sidecar.name}: onset {table['onset'].iat[bad[0]]!r} on line "
                           f"{line} is not a time in seconds ({len(bad)} such); write a "
                           "number, or n/a for an event without a time")
    return onsets


def _tsv_events(raw: mne.io.BaseRaw, path: Path, column: str) -> tuple[np.ndarray, list[str]]:
    sidecar = events_sidecar(path)
    table = read_sidecar(sidecar)
    if "onset" not in table:
        raise OddpipeError(f"{sidecar.name} has no 'onset' column; it is not an events.tsv")
    col = tsv_code_column(table, column, sidecar.name)
    table = table[table["onset"] != "n/a"]  # an event without a time cannot be placed
    if "sample" in table and table["sample"].str.isdigit().all():
        samples = table["sample"].astype(int).to_numpy()
    else:
        samples = np.round(tsv_onsets(table, sidecar) * raw.info["sfreq"]).astype(int)
    return samples, list(table[col])


def _annotation_events(raw: mne.io.BaseRaw) -> tuple[np.ndarray, list[str]]:
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    names = {code: desc for desc, code in event_id.items()}
    return events, [names[c] for c in events[:, 2]]


def read_events(raw: mne.io.BaseRaw, params: Ingest,
                path: Path | None = None) -> tuple[np.ndarray, list[str], str]:
    """Events as (samples from first_samp, codes as strings, source used)."""
    bids_tsv = params.layout == "bids" and any(c.is_file() for c in sidecar_candidates(path))
    if params.event_source == "tsv" or (params.event_source == "auto" and bids_tsv):
        samples, codes = _tsv_events(raw, path, params.tsv_column)
        return samples, codes, "tsv"
    if params.stim_channel is not None and params.stim_channel not in raw.ch_names:
        raise OddpipeError(f"has no stim channel '{params.stim_channel}' (it has "
                           f"{', '.join(raw.ch_names)}); fix ingest.stim_channel or set it "
                           "to null (found by type)")
    has_stim = params.stim_channel is not None or bool(
        mne.pick_types(raw.info, stim=True, exclude=[]).size
    )
    if params.event_source in ("stim", "auto") and has_stim:
        events = _stim_events(raw, params)
        if len(events) or params.event_source == "stim":
            return events[:, 0] - raw.first_samp, [str(c) for c in events[:, 2]], "stim"
    if params.event_source in ("annotations", "auto") and len(raw.annotations):
        events, codes = _annotation_events(raw)
        return events[:, 0] - raw.first_samp, codes, "annotations"
    return np.empty(0, dtype=int), [], "none"


@dataclass
class EventCounts:
    unmapped: int = 0    # codes in no class: counted, ignored
    duplicates: int = 0  # the same code twice at one sample: collapsed
    conflicts: int = 0   # a target and a non-target at one sample: both left out
    outside: int = 0     # before the first or after the last sample: left out


def label_events(samples: np.ndarray, codes: list[str], sfreq: float,
                 params: Ingest) -> tuple[pd.DataFrame, EventCounts]:
    """Map codes to target (1) / non-target (0), in time order; labels never guess.

    Plain arrays, not pandas group-bys: this runs once per file, and on a demo file the
    group-bys cost as much as reading its events."""
    targets = {str(v) for v in params.events.target}
    nontargets = {str(v) for v in params.events.nontarget}
    mapped = [i for i, c in enumerate(codes) if c in targets or c in nontargets]
    counts = EventCounts(unmapped=len(codes) - len(mapped))
    order = np.argsort(np.asarray(samples, dtype=np.int64)[mapped], kind="stable")
    rows = [mapped[i] for i in order]
    first: dict[tuple[int, str], int] = {}  # (sample, code) -> its first row, in time order
    for i in rows:
        first.setdefault((int(samples[i]), codes[i]), i)
    unique = list(first.values())
    counts.duplicates = len(rows) - len(unique)
    sample = np.asarray([int(samples[i]) for i in unique], dtype=np.int64)
    y = np.asarray([int(codes[i] in targets) for i in unique], dtype=np.int64)
    keep = ~mixed_classes(sample, y)
    counts.conflicts = int((~keep).sum())
    kept = [codes[i] for i, k in zip(unique, keep) if k]
    table = pd.DataFrame({"sample": sample[keep], "onset_s": sample[keep] / sfreq,
                          "code": pd.Series(kept, dtype=str),
                          "label": pd.Series(["target" if c in targets else "nontarget"
                                              for c in kept], dtype=str),
                          "y": y[keep]}, columns=EVENT_COLUMNS)
    return table, counts


def mixed_classes(sample: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For time-sorted events: True where the event's sample also holds the other class."""
    if not len(sample):
        return np.zeros(0, dtype=bool)
    first = np.flatnonzero(np.r_[True, sample[1:] != sample[:-1]])
    group = np.cumsum(np.r_[True, sample[1:] != sample[:-1]]) - 1
    return (np.minimum.reduceat(y, first) != np.maximum.reduceat(y, first))[group]


def data_channels(raw: mne.io.BaseRaw, ch_types: list[str]) -> dict[str, str]:
    """Normalized name -> original name of the data channels; two channels that normalize
    to one name are an error, never a silent loss."""
    picks = mne.pick_types(raw.info, exclude=[], **{t: True for t in ch_types})
    channels: dict[str, str] = {}
    for i in picks:
        name = normalize_channel_name(raw.ch_names[i])
        if name in channels:
            raise OddpipeError(f"channels '{channels[name]}' and '{raw.ch_names[i]}' both match "
                               f"the name '{name}'; rename one of them in the file")
        channels[name] = raw.ch_names[i]
    return channels


def first_line(exc: Exception) -> str:
    """The message of an exception; some MNE readers embed a traceback, whose
    'SomeError: ...' line is the message."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if lines[0].startswith("File "):
        raised = [ln for ln in lines if re.match(r"^\w+(Error|Exception): ", ln)]
        return re.sub(r"^\w+(Error|Exception): ", "", (raised or lines)[-1])
    return lines[0]


def edf_records_unknown(path: Path) -> bool:
    """An EDF/BDF header may leave its record count at -1 (the recording was not stopped,
    as BioSemi writes): MNE counts the records from the file size, which is no truncation."""
    if path.suffix.lower() not in (".edf", ".bdf"):
        return False
    with open(path, "rb") as fh:
        header = fh.read(256)
    return header[236:244].strip() == b"-1"


def select_channels(found: dict[str, str], wanted: str | list[str]) -> dict[str, str]:
    """The channels kept from one file: all it has (common: intersected across files later)
    or exactly the ingest.channels names, in their order; lacking one is an error."""
    if wanted == "common":
        return found
    names = [normalize_channel_name(n) for n in wanted]
    if len(set(names)) < len(names):
        raise OddpipeError(f"ingest.channels {wanted} name one channel twice once cleaned up "
                           f"({names}); list each channel once")
    missing = [n for n in names if n not in found]
    if missing:
        raise OddpipeError(f"lacks channel(s) {', '.join(missing)} of ingest.channels (it has "
                           f"{', '.join(found)}); fix the names, drop them from ingest.channels "
                           "or use channels: common")
    return {n: found[n] for n in names}


CNT_HINT = ("set it: ingest.reader_options: {'*.cnt': {data_format: int16}} "
            "(or int32; a wrong width shows as an implausible amplitude; use a narrower glob "
            "when files differ)")


def read_cnt(path: Path, options: dict[str, ReaderScalar]) -> mne.io.BaseRaw:
    """Neuroscan CNT through its own reader: mne.io.read_raw tries the ANT reader first, and
    the sample width often cannot be detected from the header."""
    try:
        return mne.io.read_raw_cnt(path, preload=False, verbose="warning", **options)
    except (RuntimeError, ValueError) as exc:
        if "data_format" in options:
            raise
        raise OddpipeError(f"Neuroscan CNT {path.name}: MNE cannot detect its sample width "
                           f"({first_line(exc)}); {CNT_HINT}") from None


def _read(path: Path, options: dict[str, ReaderScalar]) -> mne.io.BaseRaw:
    if path.suffix.lower() == ".cnt":
        return read_cnt(path, options)
    try:
        return mne.io.read_raw(path, preload=False, verbose="warning", **options)
    except (NotImplementedError, RuntimeError):  # some readers (BCI2000) need preload
        return mne.io.read_raw(path, preload=True, verbose="warning", **options)


def open_raw(path: Path, options: dict[str, ReaderScalar] | None = None,
             bids_root: Path | None = None) -> mne.io.BaseRaw:
    """Open a file with MNE (options: its ingest.reader_options; through mne-bids with its
    sidecars when bids_root is given); a header that disagrees with the file size is an
    error, not a warning hidden in the log (a truncated file would pass as shorter)."""
    with mne.utils.catch_logging(verbose="warning") as log_text, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the text is caught above and judged below
        raw = (bids.read_raw(Path(path), bids_root, options or {}) if bids_root is not None
               else _read(Path(path), options or {}))
    text = log_text.getvalue()
    if "does not match the file size" in text and edf_records_unknown(Path(path)):
        text = ""
    if "does not match the file size" in text or "truncat" in text.lower():
        raise OddpipeError(f"the file looks truncated (MNE: {text.strip().splitlines()[0]}); "
                           "copy it again from the source")
    return raw


def describe_codes(codes: list[str], limit: int = 8) -> str:
    found = sorted(set(codes))
    more = f" (+{len(found) - limit} more)" if len(found) > limit else ""
    return ", ".join(repr(c) for c in found[:limit]) + more


def typical_rms(raw: mne.io.BaseRaw, picks: list[str], n_segments: int = 10,
                data: continuous.Signals | None = None) -> float:
    """Median over channels of the std of a few 1 s segments (detrended by their mean);
    taken from `data`, the picked channels already read, when given: from its stored
    samples, counts times their scale (the std of volts, without converting them)."""
    seg = min(int(raw.info["sfreq"]), raw.n_times)
    starts = np.linspace(0, raw.n_times - seg, n_segments).astype(int)
    segments = np.stack([raw.get_data(picks=picks, start=s, stop=s + seg) if data is None
                         else data.data[:, s:s + seg] for s in starts])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels: judged below
        std = segments.std(axis=-1, dtype=np.float64)  # float32 data: the same sums as float64
        if data is not None and data.is_counts:
            std *= np.abs(data.scale)
        return float(np.nanmedian(np.nanmedian(std, axis=0)))


def check_amplitude(raw: mne.io.BaseRaw, channels: dict[str, str], params: Ingest,
                    data: continuous.Signals | None = None) -> str | None:
    """A unit mistake (counts or microvolts labelled as volts) is reported, never rescaled."""
    rms = typical_rms(raw, list(channels.values()), data=data)
    low, high = params.plausible_rms_v
    if low <= rms <= high:
        return None
    if not np.isfinite(rms):
        return ("samples are not finite (NaN or inf) in most channels; check the export, "
                "or leave this file out")
    if rms == 0:
        return ("most channels are flat (typical channel RMS 0 V): no signal was recorded or "
                "exported; check the file, or leave it out")
    return (f"implausible amplitude: typical channel RMS {rms:.3g} V, expected {low:g}-{high:g} V "
            "for EEG/iEEG; check the file's units or gain (it is not rescaled), or widen "
            "ingest.plausible_rms_v")


def _fill_scan(scan: FileScan, raw: mne.io.BaseRaw,
               params: Ingest) -> continuous.Signals | None:
    """Fill scan from the open file; returns the kept channels' data when the file fits in
    one chunk (read once: the amplitude check and the part file both use it)."""
    scan.sfreq, scan.n_times = float(raw.info["sfreq"]), raw.n_times
    found = data_channels(raw, params.ch_types)
    scan.available = list(found)
    samples, codes, scan.event_source = read_events(raw, params, scan.path)
    samples, codes, outside = within(samples, codes, scan.n_times)
    scan.events, scan.counts = label_events(samples, codes, scan.sfreq, params)
    scan.counts.outside = outside
    if outside:
        log.warning("%s: %d events outside the recording (0-%.1f s) left out",
                    path_label(scan), outside, scan.n_times / scan.sfreq)
    scan.n_unmapped = scan.counts.unmapped
    if scan.counts.duplicates or scan.counts.conflicts:
        log.warning("%s: %d duplicate events collapsed, %d events at a sample holding both "
                    "classes left out", path_label(scan), scan.counts.duplicates,
                    scan.counts.conflicts)
    if not found:
        scan.error = (f"no channels of type {params.ch_types} (it has "
                      f"{describe_types(raw)}); set ingest.ch_types")
        return None
    scan.channels = select_channels(found, params.channels)
    picks = list(scan.channels.values())
    data = continuous.read_signals(raw, picks) \
        if continuous.fits_one_chunk(raw.n_times, len(picks)) else None
    if error := check_amplitude(raw, scan.channels, params, data):
        scan.error = error
    elif scan.events.empty and outside and not codes:
        scan.error = (f"no usable events: all {outside} lie outside the recording (0-"
                      f"{scan.n_times / scan.sfreq:.1f} s); are the onsets in milliseconds, "
                      "or the events of another file?")
    elif scan.events.empty:
        scan.error = (f"no usable events (source: {scan.event_source}, {len(codes)} found"
                      f"{': ' + describe_codes(codes) if codes else ''}; none mapped); "
                      "check ingest.events and ingest.event_source")
    elif scan.events["y"].nunique() < 2:
        scan.error = one_class_reason(scan.events, codes)
    return data


def within(samples: np.ndarray, codes: list[str],
           n_times: int) -> tuple[np.ndarray, list[str], int]:
    """The events inside the recording, and how many were not (a sidecar's onsets may be
    in the wrong unit or belong to another file; an epoch cannot be cut there)."""
    samples = np.asarray(samples, dtype=int)
    inside = (samples >= 0) & (samples < n_times)
    return samples[inside], [c for c, k in zip(codes, inside) if k], int((~inside).sum())


def describe_types(raw: mne.io.BaseRaw) -> str:
    types = raw.get_channel_types()
    return ", ".join(f"{types.count(t)} {t}" for t in dict.fromkeys(types))


def one_class_reason(events: pd.DataFrame, codes: list[str]) -> str:
    """A recording with one class only: an oddball run has both, so the mapping is likely
    wrong for this file (or the file is not a target/non-target recording)."""
    present = "target" if events["y"].iat[0] == 1 else "nontarget"
    absent = "nontarget" if present == "target" else "target"
    return (f"only one class present: {len(events)} {present} event(s) and no {absent} event "
            f"(codes found: {describe_codes(codes)}); map the {absent} codes in "
            f"ingest.events.{absent}, or leave this file out")


def path_label(scan: FileScan) -> str:
    return str(scan.path)


FOLDER_FORMATS = {".ds", ".mff"}  # recordings MNE reads as a folder (CTF, EGI)


def file_problem(path: Path) -> str | None:
    """What makes a listed path no recording before MNE tries it (MNE's own message
    for these is an unrelated AttributeError, or none at all)."""
    try:
        path.stat()
    except PermissionError:
        return (f"permission denied: this user cannot open it or enter its folder; give read "
                f"access (chmod -R a+rX {shown(path.parent)}) or copy the recordings elsewhere")
    except OSError:
        pass  # a broken link: said below
    if not path.exists():
        return f"a broken symbolic link (to {shown(path.readlink())}); fix or remove it"
    if path.is_dir() and path.suffix.lower() not in FOLDER_FORMATS:
        return "a folder, not a recording file; move it out or narrow ingest.pattern"
    if not shown(path.name) == path.name:
        return ("its name is not valid UTF-8 (the recording name goes into UTF-8 tables); "
                "rename the file")
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes); copy it again from the source"
    return None


def shown(path: Path | str) -> str:
    """A path as UTF-8 text: undecodable bytes of a file name shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def scan_file(path: Path, raw_dir: Path, params: Ingest, part: Path | None = None,
              writer: continuous.WriteBehind | None = None) -> FileScan:
    """The one pass over one file: entities, header, channels and labelled events, then,
    when it is usable and a part path is given, its kept channels copied there while the
    file is still open (by writer, when given: the part is complete once it has waited).

    Any problem with this one file is recorded in scan.error; it never stops the others.
    """
    rel = path.relative_to(raw_dir).as_posix()
    scan = FileScan(path=path, recording=path.stem,
                    reader_options=reader_options_for(rel, params.reader_options))
    if problem := file_problem(path):
        scan.error = problem
        return scan
    try:
        raw = open_scan(scan, rel, raw_dir, params)
    except OddpipeError as exc:
        scan.error = str(exc)
        return scan
    except Exception as exc:  # MNE raises many types for unreadable files
        given = f" with ingest.reader_options {scan.reader_options}" if scan.reader_options else ""
        scan.error = (f"MNE cannot read it{given} ({type(exc).__name__}: "
                      f"{first_line(exc) or 'no detail'}); check that the format is one "
                      "mne.io.read_raw reads and the file is complete")
        return scan
    data = None
    try:
        data = _fill_scan(scan, raw, params)
    except OddpipeError as exc:
        scan.error = str(exc)
    except Exception as exc:  # e.g. a stim channel this file lacks
        scan.error = f"cannot read its events or channels ({type(exc).__name__}: {exc})"
    if part is not None and not scan.error:  # a disk error is no file's fault: it stops
        write_part(scan, raw, part, data, writer)
    return scan


def _scan_job(job: tuple[Path, Path], raw_dir: Path, params: Ingest,
              writer: continuous.WriteBehind | None = None) -> FileScan:
    return scan_file(job[0], raw_dir, params, job[1], writer)


def write_part(scan: FileScan, raw: mne.io.BaseRaw, path: Path,
               data: continuous.Signals | None = None,
               writer: continuous.WriteBehind | None = None) -> None:
    """Copy the kept channels, at the file's own rate: `data` when already read, else
    streamed in chunks (memory stays bounded for long files); run_ingest turns it into the
    recording's array."""
    picks = list(scan.channels.values())
    scan.types = raw.get_channel_types(picks=picks)
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (writer.write if writer else continuous.write_signals)(data, path)
        scan.cal = data.calibration
    else:
        scan.cal = continuous.stream_raw(raw, picks, path)
    scan.part = path


def open_scan(scan: FileScan, rel: str, raw_dir: Path, params: Ingest) -> mne.io.BaseRaw:
    """Entities and the opened recording: from BIDS entities and sidecars, or from
    ingest.path_regex and the file alone."""
    if params.layout == "bids":
        scan.__dict__.update(bids.entities(scan.path, raw_dir))
        scan.bids_root = raw_dir
        raw = open_raw(scan.path, scan.reader_options, raw_dir)
        scan.line_freq = bids.line_freq(raw)
        return raw
    if header := companion_header(scan.path):
        raise OddpipeError(f"a side file of {header.name}, not a recording; match the header "
                           f"with ingest.pattern (e.g. '**/*{header.suffix}')")
    scan.__dict__.update(parse_entities(rel, params.path_regex))
    return open_raw(scan.path, scan.reader_options)


def shared_channels(scans: list[FileScan]) -> list[str]:
    """Channels every scan keeps, in the first scan's order."""
    if not scans:
        return []
    shared = set(scans[0].channels).intersection(*(set(s.channels) for s in scans[1:]))
    return [n for n in scans[0].channels if n in shared]


def common_channels(scans: list[FileScan]) -> list[str]:
    """Channels every usable file has, in the first file's order (matched by name).

    What each file lacks against the union is logged, never dropped silently.
    """
    shared = shared_channels(scans)
    if not shared:
        listing = "; ".join(f"{s.path.name}: {sorted(s.channels)}" for s in scans)
        raise OddpipeError(f"the recordings share no data channel by name ({listing}); "
                           "rename channels or ingest the sets separately")
    union = set().union(*(set(s.channels) for s in scans))
    for s in scans:
        lacking = sorted(union - set(s.channels))
        if lacking:
            log.warning("%s lacks %s: every recording is reduced to the %d common channels",
                        s.path, lacking, len(shared))
    return shared


def check_rates(scans: list[FileScan], target: float | None = None) -> float:
    """The working rate: the files' common rate, or ingest.sfreq when set."""
    rates = sorted({s.sfreq for s in scans})
    if target is None and len(rates) > 1:
        groups = {r: [s.path.name for s in scans if s.sfreq == r] for r in rates}
        raise OddpipeError(f"recordings have different sampling rates: {groups}; "
                           "set ingest.sfreq to resample them all to one rate")
    return target or rates[0]


def retime(scan: FileScan, sfreq: float) -> None:
    """Move a scan's events and length to the rate its data will be resampled to."""
    scan.orig_sfreq = scan.sfreq
    if scan.sfreq == sfreq:
        return
    ratio = sfreq / scan.sfreq
    scan.events = scan.events.assign(sample=np.round(scan.events["sample"] * ratio).astype(int))
    scan.n_times, scan.sfreq = int(round(scan.n_times * ratio)), sfreq


def needs_rewrite(scan: FileScan, channels: list[str]) -> bool:
    """Whether a part must be reordered or resampled; otherwise it is renamed."""
    return list(scan.channels) != channels or scan.orig_sfreq != scan.sfreq


def conform(scan: FileScan, channels: list[str],
            out_dir: Path) -> tuple[Path, int, continuous.Calibration | None]:
    """The recording's array from its part: the chosen channels in their order (counts stay
    counts), at the working rate (anti-aliased resampling, to float32 volts). Usually a
    rename: nothing to change. Returns its path, samples and calibration (None: volts)."""
    path = continuous.data_path(out_dir, scan.recording)
    if not needs_rewrite(scan, channels):
        os.replace(scan.part, path)
        return path, continuous.n_samples(path), scan.cal
    order = [list(scan.channels).index(n) for n in channels]
    stored = np.load(scan.part, mmap_mode="r", allow_pickle=False)
    part = continuous.Signals(stored, *(scan.cal or (None, None))).take(order)
    if scan.orig_sfreq == scan.sfreq:
        n_times, cal = continuous.write_signals(part, path), part.calibration
    else:  # the whole recording in memory: resampling needs it
        data = mne.filter.resample(part.volts(dtype=np.float64),
                                   up=scan.sfreq / scan.orig_sfreq, npad="auto",
                                   verbose="error")
        n_times, cal = continuous.write_array(data, path), None
    del stored, part
    Path(scan.part).unlink()
    return path, n_times, cal


PARTS_DIR = ".parts"  # a folder of its own: no recording's name can be a part's


def discard_parts(out_dir: Path) -> None:
    shutil.rmtree(Path(out_dir) / PARTS_DIR, ignore_errors=True)


def mark_duplicate_names(scans: list[FileScan]) -> None:
    """Files that give one recording name (same stem, other folder) are each an error, so
    ingest.on_error decides and the other files are kept under skip."""
    groups: dict[str, list[FileScan]] = {}
    for s in scans:
        if not s.error:
            groups.setdefault(s.recording, []).append(s)
    for name, group in groups.items():
        for s in group if len(group) > 1 else []:
            others = ", ".join(shown(o.path) for o in group if o is not s)
            s.error = (f"gives the recording name '{name}' as {others} does; rename one "
                       "of them (recording names are file names without their extension)")


def chosen_channels(scans: list[FileScan], wanted: str | list[str]) -> list[str]:
    """ingest.channels cleaned up, or for common what the usable files share."""
    if wanted != "common":
        return [normalize_channel_name(n) for n in wanted]
    return shared_channels([s for s in scans if not s.error])


def channel_differences(scan: FileScan, chosen: list[str]) -> dict[str, str]:
    """What a file lacks and adds against the chosen channels, comma-separated; empty when
    the file could not be opened or nothing is chosen."""
    if not scan.available or not chosen:
        return {"channels_missing": "", "channels_extra": ""}
    return {"channels_missing": ",".join(n for n in chosen if n not in scan.available),
            "channels_extra": ",".join(n for n in scan.available if n not in chosen)}


def report_rows(scans: list[FileScan], wanted: str | list[str] = "common") -> pd.DataFrame:
    """One row per file found: status, reason, events per class, channels (and how they
    differ from the chosen set), rate, duration, a sidecar's line frequency."""
    chosen = chosen_channels(scans, wanted)
    rows = [{
        "file": shown(s.path), "recording": shown(s.recording),
        "status": "error" if s.error else "ok",
        "reason": s.error or "", "event_source": s.event_source,
        "n_target": int((s.events["y"] == 1).sum()), "n_nontarget": int((s.events["y"] == 0).sum()),
        "n_unmapped": s.n_unmapped,
        "n_duplicates": s.counts.duplicates if s.counts else 0,
        "n_conflicts": s.counts.conflicts if s.counts else 0,
        "n_outside": s.counts.outside if s.counts else 0,
        "n_channels": len(s.channels), **channel_differences(s, chosen), "sfreq": s.sfreq,
        "duration_s": s.n_times / s.sfreq if s.sfreq else 0.0, "line_freq": s.line_freq,
    } for s in scans]
    return pd.DataFrame(rows)


def usable_scans(scans: list[FileScan], on_error: str) -> list[FileScan]:
    """Apply the on_error policy: fail names every bad file; skip keeps the others."""
    bad = [s for s in scans if s.error]
    if bad and on_error == "fail":
        raise OddpipeError("unusable input (ingest.on_error: fail):\n" +
                           "\n".join(f"  {shown(s.path)}: {s.error}" for s in bad))
    good = [s for s in scans if not s.error]
    if not good:
        raise OddpipeError("no usable recording:\n" +
                           "\n".join(f"  {shown(s.path)}: {s.error}" for s in bad))
    return good


def recording_row(scan: FileScan, data: Path, n_channels: int, line_freq: float) -> dict:
    return {
        "recording": scan.recording, "subject": scan.subject, "session": scan.session,
        "run": scan.run, "source": str(scan.path), "data": data.name, "sfreq": scan.sfreq,
        "orig_sfreq": scan.orig_sfreq,
        "n_channels": n_channels, "n_times": scan.n_times,
        "duration_s": scan.n_times / scan.sfreq,
        # a BIDS sidecar describes this recording; params.line_freq is the dataset's default
        "line_freq": line_freq if scan.line_freq is None else scan.line_freq,
        "event_source": scan.event_source, "n_target": int(scan.events["y"].sum()),
        "n_nontarget": int((scan.events["y"] == 0).sum()), "n_unmapped": scan.n_unmapped,
    }


def events_table(scans: list[FileScan]) -> pd.DataFrame:
    """All labelled events with a global event_id, the key every later table joins on."""
    parts = [s.events.assign(recording=s.recording, subject=s.subject) for s in scans]
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "event_id", np.arange(len(table)))
    return table[["event_id", "recording", "subject", *EVENT_COLUMNS]]


def check_targets(scans: list[FileScan], params: Ingest) -> None:
    """Both classes must exist somewhere; no seed or split can fix a missing class."""
    counts = pd.concat([s.events for s in scans])["y"].value_counts()
    for y, name, codes in ((1, "target", params.events.target),
                           (0, "nontarget", params.events.nontarget)):
        if counts.get(y, 0) == 0:
            raise OddpipeError(f"no {name} event in any usable file (ingest.events.{name}: "
                               f"{codes}); check the codes against reports/ingest.tsv")


# Two loky workers that import MNE take about a second to start; one process with a thread
# writing behind its reads uses the second core without that cost. Below this much raw
# data ingest stays in one process (bench/RESULTS.md: with int16 output there is less to
# write behind; a fresh process at n_jobs 2, medians of 3: 116 MB 1.38 s in one process
# against 1.76 s with workers, 463 MB 3.54 s against 3.08 s; the line through both breaks
# even near 270 MB).
PARALLEL_BYTES = 300_000_000


def recording_files(path: Path) -> list[Path]:
    """The files that hold a listed recording's samples: the file and its side files (a
    BrainVision header's data and markers, EEGLAB's .fdt, Nihon Kohden's), or the files of a
    folder format (CTF .ds, EGI .mff)."""
    if path.is_dir():
        return list(path.rglob("*")) if path.suffix.lower() in FOLDER_FORMATS else []
    if path.suffix.lower() == ".vhdr":
        return [path, *(path.parent / name for name in vhdr_files(path))]
    sides = COMPANIONS.get(path.suffix.lower(), set())
    return [path, *(path.with_suffix(s) for side in sides for s in (side, side.upper()))]


def raw_bytes(files: list[Path]) -> int:
    """Bytes of the listed recordings with their side files."""
    total = 0
    for path in files:
        try:
            total += sum(p.stat().st_size for p in set(recording_files(path)) if p.is_file())
        except OSError:  # vanished or unreadable: its row in the report says so
            continue
    return total


def worth_workers(files: list[Path]) -> tuple[bool, str]:
    size = raw_bytes(files)
    return size >= PARALLEL_BYTES, f"{len(files)} files, {size / 1e6:.0f} MB"


def scan_all(jobs: list[tuple[Path, Path]], raw_dir: Path, params: Ingest, runner: Runner,
             cores: int) -> list[FileScan]:
    """scan_file for every (file, part) job. In one process allowed a second core (cores:
    execution.n_jobs), the next file's read overlaps this one's write (bench/RESULTS.md);
    n_jobs 1 keeps to one core. Loky workers already keep the cores busy, and would return
    before a write behind them ended."""
    writer = continuous.WriteBehind() if cores != 1 and in_process(runner) else None
    with writer or nullcontext():
        return map_recordings(partial(_scan_job, raw_dir=raw_dir, params=params,
                                      writer=writer), jobs, runner)


def run_ingest(params: Ingest, out_dir: Path, runner: Runner = SERIAL,
               report_path: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Scan, choose channels, write one .npy per usable recording, channels.tsv and
    calibration.json (the counts' calibrations).

    Returns (recordings, events, report); report lists every file found, usable or not,
    and is written to report_path first, so the reasons survive a failure.
    """
    raw_dir = Path(params.raw_dir)
    files = list_recordings(params)
    cores, runner = runner.n_jobs, for_work(runner, partial(worth_workers, files))
    out_dir.mkdir(parents=True, exist_ok=True)
    continuous.remove_tables(out_dir)  # an earlier run's must not describe this run's arrays
    jobs = [(f, out_dir / PARTS_DIR / f"{i:06d}.npy") for i, f in enumerate(files)]
    try:
        scans = scan_all(jobs, raw_dir, params, runner, cores)
        mark_duplicate_names(scans)
        report = report_rows(scans, params.channels)
        if report_path is not None:
            write_tsv(report_path, report)
        good, channels = choose(scans, params)
        # renames alone are not worth shipping to workers (9 ms of IPC on the demo)
        work = runner if any(needs_rewrite(s, channels) for s in good) else SERIAL
        written = map_recordings(partial(conform, channels=channels, out_dir=out_dir), good,
                                 work)
    finally:  # after a failure or an interrupt, or the parts a rename did not consume
        discard_parts(out_dir)
    for scan, (_, n_times, _) in zip(good, written):
        scan.n_times = n_times  # after resampling, from the data written
    types = dict(zip(good[0].channels, good[0].types))
    continuous.write_channels(out_dir, channels, [types[n] for n in channels])
    continuous.write_calibrations(out_dir, {s.recording: cal for s, (_, _, cal)
                                            in zip(good, written) if cal is not None})
    recordings = pd.DataFrame([recording_row(s, path, len(channels), params.line_freq)
                               for s, (path, _, _) in zip(good, written)])
    return recordings, events_table(good), report


def choose(scans: list[FileScan], params: Ingest) -> tuple[list[FileScan], list[str]]:
    """The usable recordings (on_error policy), at one rate, and the channels they share."""
    good = usable_scans(scans, params.on_error)
    check_targets(good, params)
    sfreq = check_rates(good, params.sfreq)
    for scan in good:
        retime(scan, sfreq)
    return good, common_channels(good)
