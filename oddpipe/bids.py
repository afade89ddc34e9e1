"""BIDS roots through mne-bids: find eeg/ieeg recordings, read their entities, open them
with their sidecars (events.tsv as annotations, channels.tsv types and bads, the
PowerLineFrequency of *_eeg.json / *_ieeg.json)."""
from __future__ import annotations

import math
from pathlib import Path

import mne
import mne_bids

from oddpipe.errors import OddpipeError

DATATYPES = ["eeg", "ieeg"]
# Raw formats BIDS allows for EEG/iEEG that mne-bids reads (not .mefd folders or .nwb).
EXTENSIONS = [".vhdr", ".edf", ".EDF", ".bdf", ".set", ".fif", ".cnt", ".CNT", ".EEG"]


def find_recordings(root: Path) -> list[Path]:
    """Every eeg/ieeg recording under root/sub-* (derivatives and sourcedata are not read)."""
    if not (Path(root) / "dataset_description.json").is_file():
        raise OddpipeError(f"{root}: not a BIDS root (no dataset_description.json); point "
                           "ingest.raw_dir at the BIDS root or set ingest.layout: files")
    paths = mne_bids.find_matching_paths(root, datatypes=DATATYPES, suffixes=DATATYPES,
                                         extensions=EXTENSIONS, ignore_nosub=True)
    files = sorted({p.fpath for p in paths if p.fpath.is_file()})
    if not files:
        raise OddpipeError(f"{root}: no eeg or ieeg recording ({', '.join(EXTENSIONS)}) under "
                           "sub-*/[ses-*/](eeg|ieeg)/; check ingest.raw_dir")
    return files


def bids_path(path: Path, root: Path) -> mne_bids.BIDSPath:
    return mne_bids.get_bids_path_from_fname(path, check=False).update(root=root)


def entities(path: Path, root: Path) -> dict[str, str]:
    """subject, session and run from the file name's BIDS entities ('' when absent)."""
    bp = bids_path(path, root)
    return {"subject": bp.subject or "", "session": bp.session or "", "run": str(bp.run or "")}


def read_raw(path: Path, root: Path, options: dict) -> mne.io.BaseRaw:
    """The recording with its sidecars applied; reader options go to the MNE reader.
    Warnings stay on: the caller reads them for signs of a truncated file."""
    return mne_bids.read_raw_bids(bids_path(path, root), extra_params=options or None,
                                  verbose="warning")


def line_freq(raw: mne.io.BaseRaw) -> float | None:
    """PowerLineFrequency from the sidecar as mne-bids put it in info (None: not given)."""
    value = raw.info.get("line_freq")
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None
