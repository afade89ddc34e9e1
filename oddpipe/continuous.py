"""The continuous-data contract between ingest and the stages that read it.

One `.npy` of (channels, times) per recording, opened memory-mapped, plus one
`channels.tsv` (name, type) for the whole ingest output (every recording holds the same
channels in the same order). The array holds either

- int16 counts, the recording's own 16-bit samples as the file stored them (EDF), whose
  calibration is the recording's entry in the output's `calibration.json`: per channel,
  volts = counts * scale_v + offset_v; or
- float32 volts, for everything else (float formats, 24-bit BDF, resampled recordings).

One calibration file for all recordings rather than one beside each: at 16x the demo a
file apiece cost ingest 0.6 s (5 %) in creating 320 more files (bench/RESULTS.md).

Read either through `open_data`, which gives volts. Why counts: they are exact (the
file's own values, not a rounding of them) and half the bytes of float32: at 16x the demo
3.69 GB became 1.85 GB that ingest writes, DVC hashes and every later stage reads
(bench/RESULTS.md).

Why `.npy` rather than FIF: any segment of a memory-mapped array costs no parsing (the
outliers scan reads 20 short segments of every recording, and opening a FIF alone took
longer than that), a long file is written chunk by chunk with bounded memory, and it is
the same contract as the epochs. An MNE Raw is one call away (`to_raw`).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oddpipe.errors import OddpipeError
from oddpipe.io import naming_write_errors, new_file, read_columns, write_columns, write_json

if TYPE_CHECKING:
    import mne

Calibration = tuple[np.ndarray, np.ndarray]  # (scale_v, offset_v), float64 per channel

CHANNELS_FILE = "channels.tsv"
CALIBRATION_FILE = "calibration.json"
CHUNK_VALUES = 4_000_000  # a recording of up to this many samples x channels is held whole
# (8-16 MB); a longer one streams into a memory-mapped .npy
READ_VALUES = 1 << 20  # samples x channels per MNE read: malloc reuses its 8 MB float64
# buffer from read to read, where a whole-file buffer is faulted in afresh (bench/RESULTS.md)
VERIFY_SAMPLES = 512  # samples per channel on which counts x calibration must be MNE's volts
COUNT_TOLERANCE = 1e-6  # counts; float64 rounding of MNE's calibration is below 1e-10


@dataclass(frozen=True)
class Signals:
    """One recording's (channels, times) samples as stored, and how to make volts of them:
    float32 volts (scale None), or int16 counts with volts = counts * scale + offset."""

    data: np.ndarray
    scale: np.ndarray | None = None  # (channels,) float64, volts per count
    offset: np.ndarray | None = None  # (channels,) float64, volts at count 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def is_counts(self) -> bool:
        return self.scale is not None

    @property
    def calibration(self) -> Calibration | None:
        return None if self.scale is None else (self.scale, self.offset)

    def volts(self, start: int = 0, stop: int | None = None,
              dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Samples start:stop of every channel, in volts. Stored float32 read as float32 is
        the stored block itself (for a map, a read-only view): copy it to edit it."""
        block = self.data[:, start:stop]
        if self.scale is None:
            return np.asarray(block, dtype=dtype)
        out = np.multiply(block, self.scale[:, None])  # float64: exact counts x calibration
        out += self.offset[:, None]
        return out.astype(dtype, copy=False)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """np.asarray(signals): every sample in volts (float32 unless dtype says)."""
        return self.volts(dtype=dtype or np.float32)

    def take(self, rows: list[int]) -> "Signals":
        """The given channels, in that order, stored as they are."""
        if self.scale is None:
            return Signals(self.data[rows])
        return Signals(self.data[rows], self.scale[rows], self.offset[rows])


def data_path(out_dir: Path, recording: str) -> Path:
    return Path(out_dir) / f"{recording}.npy"


def create(path: Path, n_channels: int, n_times: int,
           dtype: np.dtype | type = np.float32) -> np.memmap:
    return np.lib.format.open_memmap(new_file(path), mode="w+", dtype=dtype,
                                     shape=(int(n_channels), int(n_times)))  # plain ints: the header is parsed with ast.literal_eval


def fits_one_chunk(n_times: int, n_channels: int) -> bool:
    return n_times * max(n_channels, 1) <= CHUNK_VALUES


def edf_calibration(raw: "mne.io.BaseRaw",
                    picks: list[str]) -> Calibration | None:
    """(scale, offset) per picked channel when MNE reads them from an EDF's 16-bit samples,
    where it computes volts = ((count * cal) + offset) * unit * _cals from the header; None
    for any other reader, a loaded Raw (get_data gives its volts, maybe filtered, not the
    file's), a projector, a stim channel (MNE masks its bits), a channel at a lower rate
    (MNE upsamples it) or _cals other than 1 (an identity read gives counts x _cals).
    These are MNE's reader internals: read_into confirms them against MNE's volts, and a
    file that does not fit is stored as float32."""
    extras = getattr(raw, "_raw_extras", None)
    if type(raw).__name__ != "RawEDF" or not extras or len(extras) != 1 or raw.preload or (
            raw._projector is not None or raw._comp is not None):
        return None
    try:
        ex, orig = extras[0], header_index(raw, picks)
        idx = [raw.ch_names.index(p) for p in picks]
        if ex["subtype"] != "edf" or np.dtype(ex["dtype_np"]) != np.int16 or lower_rate(
                raw, picks) or np.isin(orig, ex["stim_channel_idxs"]).any() or (
                np.asarray(raw._cals)[idx] != 1).any():
            return None
        unit = ex["units"][orig]
        scale, offset = ex["cal"][orig] * unit, ex["offsets"][orig] * unit
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None
    usable = np.isfinite(scale).all() and np.isfinite(offset).all() and (scale != 0).all()
    return (scale.astype(np.float64), offset.astype(np.float64)) if usable else None


def header_index(raw: "mne.io.BaseRaw", picks: list[str]) -> np.ndarray:
    """The picks as MNE's EDF reader indexes its header arrays (through _read_picks:
    mne-bids drops channels a channels.tsv does not list)."""
    return np.asarray(raw._read_picks[0])[[raw.ch_names.index(p) for p in picks]]


def lower_rate(raw: "mne.io.BaseRaw", picks: list[str]) -> list[str]:
    """The picks an EDF/BDF/GDF stores at a lower rate than the file's, which MNE's reader
    upsamples on every read: right only when one read covers the whole file (MNE warns of
    edge artifacts otherwise; the samples of a read that starts later are misplaced too).
    Empty for any other reader."""
    extras = getattr(raw, "_raw_extras", None)
    if type(raw).__name__ not in ("RawEDF", "RawBDF", "RawGDF") or not extras or len(
            extras) != 1 or raw.preload:
        return []
    try:
        ex = extras[0]
        slow = ex["n_samps"][ex["sel"][header_index(raw, picks)]] != ex["max_samp"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return []
    return [p for p, s in zip(picks, slow) if s]


@contextmanager
def reading_counts(raw: "mne.io.BaseRaw") -> Iterator[None]:
    """MNE's EDF reader with an identity calibration: inside, raw.get_data gives the file's
    own 16-bit values (float64, exact), through MNE's own record and channel mapping. Why:
    turning MNE's volts back into counts cost a third of ingest's read (bench/RESULTS.md).
    Another thread reading this Raw meanwhile would get counts too: none does."""
    extras = raw._raw_extras[0]
    n = len(extras["cal"])
    raw._raw_extras[0] = dict(extras, cal=np.ones(n), offsets=np.zeros(n), units=np.ones(n))
    try:
        yield
    finally:
        raw._raw_extras[0] = extras


def read_into(raw: "mne.io.BaseRaw", picks: list[str], out: np.ndarray,
              cal: Calibration | None = None) -> bool:
    """Fill `out` (channels, times) with the picked channels, a few MB per read: volts, or
    with cal int16 counts. False (out of no use) when counts x cal are not MNE's volts.
    Channels MNE upsamples are read whole, in one read (memory: those channels only)."""
    whole = lower_rate(raw, picks)
    rows = [i for i, p in enumerate(picks) if p not in whole]
    rest = slice(None) if not whole else rows
    step = max(1, min(READ_VALUES, CHUNK_VALUES) // max(len(rows), 1))
    with reading_counts(raw) if cal is not None else nullcontext():
        for start in range(0, raw.n_times, step) if rows else ():
            stop = min(start + step, raw.n_times)
            out[rest, start:stop] = raw.get_data(picks=[picks[i] for i in rows], start=start,
                                                 stop=stop)
    if whole:
        out[[picks.index(p) for p in whole]] = raw.get_data(picks=whole)
    return cal is None or calibrated(raw, picks, out, cal)


def calibrated(raw: "mne.io.BaseRaw", picks: list[str], counts: np.ndarray,
               cal: Calibration) -> bool:
    """Whether counts x cal are MNE's own volts, within a millionth of a count. The counts
    and the calibration come from MNE's internals; a reader that changed, or a scale
    mapped to the wrong channel, shows where a channel takes two different counts (two
    points fix its line; a channel constant throughout needs one): checked on a block in
    mid-file, and for a channel flat there, at its first sample that differs."""
    start = max(0, raw.n_times // 2 - VERIFY_SAMPLES // 2)
    stop = min(raw.n_times, start + VERIFY_SAMPLES)
    block = np.asarray(counts[:, start:stop])
    if not volts_match(raw, picks, block, cal, start):
        return False
    for row in np.flatnonzero(block.min(axis=1) == block.max(axis=1)):
        other = np.flatnonzero(np.asarray(counts[row]) != block[row, 0])[:1]
        if len(other) and not volts_match(raw, [picks[row]], counts[row:row + 1, other],
                                          (cal[0][row:row + 1], cal[1][row:row + 1]),
                                          int(other[0])):
            return False
    return True


def volts_match(raw: "mne.io.BaseRaw", picks: list[str], counts: np.ndarray,
                cal: Calibration, start: int) -> bool:
    """counts x cal against MNE's volts of the same samples (start onwards)."""
    scale, offset = (np.asarray(c, dtype=np.float64)[:, None] for c in cal)
    volts = raw.get_data(picks=picks, start=start, stop=start + counts.shape[1])
    error = np.abs(counts * scale + offset - volts)
    return bool((error <= COUNT_TOLERANCE * np.abs(scale)).all())  # NaN fails too


def read_float32(raw: "mne.io.BaseRaw", picks: list[str]) -> np.ndarray:
    """The picked channels in memory as float32 volts (a file that fits one chunk)."""
    out = np.empty((len(picks), raw.n_times), dtype=np.float32)
    read_into(raw, picks, out)
    return out


def read_signals(raw: "mne.io.BaseRaw", picks: list[str]) -> Signals:
    """The picked channels in memory (a file that fits one chunk): the file's own 16-bit
    counts where it has them, else float32 volts."""
    cal = edf_calibration(raw, picks)
    if cal is not None:
        counts = np.empty((len(picks), raw.n_times), dtype=np.int16)
        if read_into(raw, picks, counts, cal):
            return Signals(counts, *cal)
    return Signals(read_float32(raw, picks))


def stream_raw(raw: "mne.io.BaseRaw", picks: list[str], path: Path) -> Calibration | None:
    """Copy the picked channels of an unloaded Raw to a .npy chunk by chunk: memory stays
    bounded however long the file is. Returns the calibration of stored counts, None for
    float32 volts."""
    if fits_one_chunk(raw.n_times, len(picks)):  # a sequential write, no memmap page faults
        signals = read_signals(raw, picks)
        write_signals(signals, path)
        return signals.calibration
    cal = edf_calibration(raw, picks)
    if cal is not None and _stream(raw, picks, path, cal):
        return cal
    _stream(raw, picks, path, None)
    return None


def _stream(raw: "mne.io.BaseRaw", picks: list[str], path: Path,
            cal: Calibration | None) -> bool:
    out = create(path, len(picks), raw.n_times, np.float32 if cal is None else np.int16)
    done = read_into(raw, picks, out, cal)
    out.flush()
    del out
    return done


def write_array(data: np.ndarray, path: Path) -> int:
    """float32 volts as a recording's .npy."""
    return write_signals(Signals(np.asarray(data, dtype=np.float32)), path)


def write_signals(signals: Signals, path: Path) -> int:
    """A recording's .npy (its calibration, for counts, goes into calibration.json once
    every recording is known: write_calibrations). Returns its number of samples."""
    dtype = np.int16 if signals.is_counts else np.float32
    with naming_write_errors(path), open(new_file(path), "wb") as fh:  # np.save would add .npy
        np.save(fh, np.ascontiguousarray(signals.data, dtype=dtype), allow_pickle=False)
    return signals.shape[1]


def write_calibrations(out_dir: Path, calibrations: dict[str, Calibration]) -> None:
    """calibration.json: per recording stored as counts, its scale_v and offset_v (exact
    float64, as JSON writes a float's repr)."""
    write_json(Path(out_dir) / CALIBRATION_FILE, {
        "volts": "counts * scale_v + offset_v, per channel",
        "recordings": {rec: {"scale_v": [float(v) for v in scale],
                             "offset_v": [float(v) for v in offset]}
                       for rec, (scale, offset) in calibrations.items()}})


def remove_tables(out_dir: Path) -> None:
    """channels.tsv and calibration.json, before a run writes new arrays: an interrupted
    run then fails to open ('missing; rerun') instead of reading its arrays with the
    previous run's channel order or calibration."""
    for name in (CHANNELS_FILE, CALIBRATION_FILE):
        (Path(out_dir) / name).unlink(missing_ok=True)


def n_samples(path: Path) -> int:
    """The samples per channel of a recording's .npy, from its header."""
    return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[1])


class WriteBehind:
    """Writes recordings on one background thread: the next recording's read (MNE parsing,
    which holds the GIL) overlaps this one's write (the kernel filling the page cache, with
    the GIL released), so one process keeps two cores busy. One write waits at most: memory
    holds two recordings' arrays, whatever their number. Use it as a context manager;
    leaving it waits for the last write."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oddpipe-write")
        self._pending: Future | None = None

    def write(self, signals: Signals, path: Path) -> None:
        self.wait()
        self._pending = self._pool.submit(write_signals, signals, path)

    def wait(self) -> None:
        """Until the last write is done; raises its error (a full disk, say)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:  # the body's error is the one to report
                self._pending.exception()
        finally:
            self._pool.shutdown()


RERUN = "rerun the ingest stage (dvc repro ingest)"


def open_data(path: Path) -> Signals:
    """One recording, memory-mapped, read-only: its samples and, for counts, their
    calibration (Signals gives volts either way)."""
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:  # truncated, empty, not .npy, or pickled objects
        raise OddpipeError(f"{path}: not a readable (channels, times) array ({exc}); "
                           f"{RERUN}") from None
    if data.ndim != 2 or data.dtype not in (np.float32, np.int16):
        raise OddpipeError(f"{path}: expected a (channels, times) array of float32 volts or "
                           f"int16 counts, found {data.dtype} {data.shape}; {RERUN}")
    if data.dtype == np.int16:
        scale, offset = calibration_of(path)
        if len(scale) != data.shape[0]:
            raise OddpipeError(f"{path}: {data.shape[0]} channels, but {CALIBRATION_FILE} "
                               f"calibrates {len(scale)} for it; {RERUN}")
        return Signals(data, scale, offset)
    return Signals(data)


def calibration_of(path: Path) -> Calibration:
    """The calibration of a recording stored as counts, from calibration.json beside it
    (parsed once per process for the same content)."""
    table = Path(path).parent / CALIBRATION_FILE
    try:
        content = table.read_bytes()
    except OSError as exc:
        raise OddpipeError(f"{table}: {'missing' if not table.exists() else exc.strerror}; "
                           f"int16 counts ({Path(path).name}) are read with their "
                           f"calibration; {RERUN}") from None
    cal = read_calibrations(str(table), content).get(Path(path).stem)
    if cal is None:
        raise OddpipeError(f"{table}: no calibration for {Path(path).stem}, whose "
                           f"{Path(path).name} holds int16 counts; {RERUN}")
    return cal


def numbers(values: Any) -> bool:
    """A JSON list of numbers (no strings, no booleans)."""
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


@lru_cache(maxsize=4)
def read_calibrations(path: str, content: bytes) -> dict[str, Calibration]:
    """Every recording's (scale_v, offset_v) in a calibration.json's content, read-only
    arrays: equally long lists of finite numbers, no zero scale. Keyed by the content
    itself: a file's name, inode and times can all repeat (ingest renames a new file into
    place; some filesystems keep whole seconds)."""
    try:
        table = json.loads(content)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise OddpipeError(f"{path}: not readable JSON ({exc}); {RERUN}") from None
    recordings = table.get("recordings") if isinstance(table, dict) else None
    if not isinstance(recordings, dict):
        raise OddpipeError(f"{path}: expected an object 'recordings' (recording -> scale_v, "
                           f"offset_v); {RERUN}")
    return {rec: calibration_entry(path, rec, cal) for rec, cal in recordings.items()}


def calibration_entry(path: str, recording: str, cal: Any) -> Calibration:
    if not (isinstance(cal, dict) and numbers(cal.get("scale_v"))
            and numbers(cal.get("offset_v"))):
        raise OddpipeError(f"{path}: {recording}: expected lists of numbers scale_v and "
                           f"offset_v; {RERUN}")
    try:
        scale, offset = (np.array(cal[k], dtype=np.float64) for k in ("scale_v", "offset_v"))
    except OverflowError:
        raise OddpipeError(f"{path}: {recording}: a number beyond float64's range; "
                           f"{RERUN}") from None
    if len(scale) != len(offset) or not (
            np.isfinite(scale).all() and np.isfinite(offset).all() and (scale != 0).all()):
        raise OddpipeError(f"{path}: {recording}: expected one finite, non-zero scale_v and "
                           f"one finite offset_v per channel; {RERUN}")
    scale.flags.writeable = offset.flags.writeable = False  # shared by every reader
    return scale, offset


def write_channels(out_dir: Path, names: list[str], types: list[str]) -> None:
    write_columns(Path(out_dir) / CHANNELS_FILE, {"name": np.array(names, dtype=object),
                                                  "type": np.array(types, dtype=object)})


def read_channels(out_dir: Path) -> tuple[list[str], list[str]]:
    table = read_columns(Path(out_dir) / CHANNELS_FILE)
    return [str(n) for n in table["name"]], [str(t) for t in table["type"]]


def to_raw(data: np.ndarray, names: list[str], types: list[str],
           sfreq: float) -> "mne.io.RawArray":
    """An MNE Raw of one recording (float64 in memory, as MNE filters need). A float64
    array is wrapped, not copied: filters applied to the Raw change it in place."""
    import mne  # imported here: the outliers stage reads arrays and never needs MNE

    info = mne.create_info(names, sfreq, types, verbose="error")
    return mne.io.RawArray(np.asarray(data, dtype=np.float64), info, copy="info",
                           verbose="error")
