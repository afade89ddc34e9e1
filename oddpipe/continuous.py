"""The continuous-data contract between ingest and the stages that read it.

One float32 (channels, times) `.npy` per recording, in volts, opened memory-mapped, plus
one `channels.tsv` (name, type) for the whole ingest output (every recording holds the
same channels in the same order).

Why `.npy` rather than FIF: any segment of a memory-mapped array costs no parsing (the
outliers scan reads 20 short segments of every recording, and opening a FIF alone took
longer than that), a long file is written chunk by chunk with bounded memory, and it is
the same contract as the epochs. An MNE Raw is one call away (`to_raw`).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oddpipe.errors import OddpipeError
from oddpipe.io import new_file, read_columns, write_columns

if TYPE_CHECKING:
    import mne

CHANNELS_FILE = "channels.tsv"
CHUNK_VALUES = 4_000_000  # a recording of up to this many samples x channels is held whole
# (16 MB as float32); a longer one streams into a memory-mapped .npy
READ_VALUES = 1 << 20  # samples x channels per MNE read: malloc reuses its 8 MB float64
# buffer from read to read, where a whole-file buffer is faulted in afresh (bench/RESULTS.md)


def data_path(out_dir: Path, recording: str) -> Path:
    return Path(out_dir) / f"{recording}.npy"


def create(path: Path, n_channels: int, n_times: int) -> np.memmap:
    return np.lib.format.open_memmap(new_file(path), mode="w+", dtype=np.float32,
                                     shape=(int(n_channels), int(n_times)))  # plain ints: the header is parsed with ast.literal_eval


def fits_one_chunk(n_times: int, n_channels: int) -> bool:
    return n_times * max(n_channels, 1) <= CHUNK_VALUES


def read_into(raw: "mne.io.BaseRaw", picks: list[str], out: np.ndarray) -> np.ndarray:
    """Fill `out` (channels, times) with the picked channels, a few MB per read."""
    step = max(1, min(READ_VALUES, CHUNK_VALUES) // max(len(picks), 1))
    for start in range(0, raw.n_times, step):
        stop = min(start + step, raw.n_times)
        out[:, start:stop] = raw.get_data(picks=picks, start=start, stop=stop)
    return out


def read_float32(raw: "mne.io.BaseRaw", picks: list[str]) -> np.ndarray:
    """The picked channels in memory as float32 (for a file that fits one chunk)."""
    return read_into(raw, picks, np.empty((len(picks), raw.n_times), dtype=np.float32))


def stream_raw(raw: "mne.io.BaseRaw", picks: list[str], path: Path) -> int:
    """Copy the picked channels of an unloaded Raw to a .npy chunk by chunk: memory stays
    bounded however long the file is. Returns the number of samples written."""
    if fits_one_chunk(raw.n_times, len(picks)):  # a sequential write, no memmap page faults
        return write_array(read_float32(raw, picks), path)
    out = create(path, len(picks), raw.n_times)
    read_into(raw, picks, out)
    out.flush()
    del out
    return raw.n_times


def write_array(data: np.ndarray, path: Path) -> int:
    try:
        with open(new_file(path), "wb") as fh:  # a file object: np.save would not append .npy
            np.save(fh, np.ascontiguousarray(data, dtype=np.float32), allow_pickle=False)
    except OSError as exc:  # numpy's "not enough free space" has no errno nor file name
        raise OddpipeError(f"cannot write {path} ({exc.strerror or exc}); check that "
                           f"{Path(path).parent} still exists, is writable and its disk "
                           "has space") from None
    return data.shape[1]


class WriteBehind:
    """Writes arrays on one background thread: the next recording's read (MNE parsing, which
    holds the GIL) overlaps this one's write (the kernel filling the page cache, with the GIL
    released), so one process keeps two cores busy. One write waits at most: memory holds
    two recordings' arrays, whatever their number. Use it as a context manager; leaving it
    waits for the last write."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oddpipe-write")
        self._pending: Future | None = None

    def write(self, data: np.ndarray, path: Path) -> None:
        self.wait()
        self._pending = self._pool.submit(write_array, data, path)

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


def open_data(path: Path) -> np.ndarray:
    """The (channels, times) float32 array of one recording, memory-mapped, read-only."""
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:  # truncated, empty, not .npy, or pickled objects
        raise OddpipeError(f"{path}: not a readable (channels, times) array ({exc}); rerun "
                           "the ingest stage (dvc repro ingest)") from None
    if data.ndim != 2 or data.dtype != np.float32:
        raise OddpipeError(f"{path}: expected a (channels, times) float32 array, found "
                           f"{data.dtype} {data.shape}; rerun the ingest stage")
    return data


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
