"""Small, safe file helpers shared by the stages: atomic JSON, BIDS-style TSV.

TSV comes in two forms: pandas DataFrames, and plain columns (a dict of numpy arrays,
written and read with the csv module in the same format) for the stages that never import
pandas: at 0.45 s its import alone outweighed the outliers stage's work on the demo.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oddpipe.errors import OddpipeError

if TYPE_CHECKING:
    import pandas as pd

Columns = dict[str, np.ndarray]  # a table as named, equally long columns
NA = "n/a"
FLOAT_FORMAT = "%.10g"


def new_file(path: Path) -> Path:
    """path, with any file there removed first, so that writing it makes a new file: DVC
    hardlinks outputs to its cache (.dvc/config cache.type), and writing into that file
    would change the cached copy of the previous run (or fail: DVC makes it read-only)."""
    Path(path).unlink(missing_ok=True)
    return Path(path)


@contextmanager
def naming_write_errors(path: Path | str) -> Iterator[None]:
    """A failed write names its file and the likely fix (numpy's "not enough free space"
    carries no errno nor file name)."""
    try:
        yield
    except OSError as exc:
        raise OddpipeError(f"cannot write {path} ({exc.strerror or exc}); check that "
                           f"{Path(path).parent} still exists, is writable and its disk "
                           "has space") from None


@contextmanager
def replacing(path: Path, tmp: Path) -> Iterator[None]:
    """Write tmp in the block, then rename it to path; on any failure (a full disk, Ctrl-C)
    tmp is removed and path left as it was."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, then rename); NaN or inf is an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with replacing(path, Path(tmp)):
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)


def read_json(path: Path) -> Any:
    """A stage's JSON output; a broken one names the file and the stage to rerun."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        stage = Path(path).parent.name  # data/<stage>/... and metrics/<stage>.json
        stage = Path(path).stem if stage == "metrics" else stage
        raise OddpipeError(f"{path}: not valid JSON ({exc}); rerun the stage that wrote it "
                           f"(dvc repro {stage})") from None


def write_tsv(path: Path, table: pd.DataFrame) -> None:
    """TSV with a header, 'n/a' for missing values (BIDS), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with replacing(path, tmp):
        table.to_csv(tmp, sep="\t", index=False, na_rep=NA, float_format=FLOAT_FORMAT)


def cell(value: Any) -> str:
    """One value as write_tsv writes it: floats to 10 significant digits, missing as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if isinstance(value, float):
        return FLOAT_FORMAT % value
    return str(value)


def write_columns(path: Path, columns: Columns) -> None:
    """Columns as TSV, in write_tsv's format (csv quoting rules, as pandas uses)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with replacing(path, tmp), open(tmp, "w", newline="") as fh:
        out = csv.writer(fh, delimiter="\t", lineterminator="\n")
        out.writerow(columns)
        out.writerows(zip(*([cell(v) for v in np.asarray(c).tolist()]
                            for c in columns.values())))


# Identifiers stay strings: "01" must not become 1.
ID_COLUMNS = {"recording": str, "subject": str, "session": str, "run": str, "code": str,
              "channel": str, "name": str, "split": str, "label": str}


def read_tsv(path: Path) -> pd.DataFrame:
    import pandas as pd  # here: importing oddpipe.io stays cheap for the stages without it

    return pd.read_csv(path, sep="\t", na_values=[NA], keep_default_na=False,
                       dtype=ID_COLUMNS)


def read_columns(path: Path) -> Columns:
    """A TSV as columns: identifiers (ID_COLUMNS) stay strings, others become int or float
    arrays when every value parses (n/a as NaN), else strings."""
    with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM from a spreadsheet
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise OddpipeError(f"{path}: empty table, no header; rerun the stage that wrote it")
        values: list[list[str]] = [[] for _ in header]  # column by column: no row lists kept
        for row in reader:
            if len(row) != len(header):
                raise OddpipeError(f"{path}: line {reader.line_num} has {len(row)} fields, the "
                                   f"header {len(header)}; rerun the stage that wrote it")
            for col, v in zip(values, row):
                col.append(v)
    return {name: typed(name, col) for name, col in zip(header, values)}


def _number(value: object) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _count(value: object) -> bool:
    x = _number(value)
    return x is not None and np.isfinite(x) and x >= 0 and x % 1 == 0


def _positive(value: object) -> bool:
    x = _number(value)
    return x is not None and np.isfinite(x) and x > 0


KINDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "text": ("text", lambda v: str(v) != ""),
    "count": ("a whole number >= 0", _count),
    "positive": ("a number > 0", _positive),
    "frequency": ("a frequency in Hz or auto", lambda v: v == "auto" or _positive(v)),
}


def require_columns(table: Columns, path: Path, spec: dict[str, str], fix: str) -> None:
    """The columns a stage reads, each of its kind (see KINDS), and at least one row: else
    one message naming the file, the column, the line and the value, and the fix."""
    missing = [c for c in spec if c not in table]
    if missing:
        raise OddpipeError(f"{path}: no column {', '.join(missing)}; {fix}")
    for name, kind in spec.items():
        what, ok = KINDS[kind]
        bad = next((i for i, v in enumerate(table[name].tolist()) if not ok(v)), None)
        if bad is not None:
            raise OddpipeError(f"{path}: column {name}, line {bad + 2}: "
                               f"{table[name][bad]!r} is not {what}; {fix}")
    if not len(next(iter(table.values()), [])):
        raise OddpipeError(f"{path}: no rows, only a header; {fix}")


def typed(name: str, values: list[str]) -> np.ndarray:
    if name not in ID_COLUMNS:
        for kind in (int, float):
            try:
                return np.array([kind("nan" if v == NA else v) for v in values])
            except ValueError:
                continue
    return np.array(values, dtype=object)
