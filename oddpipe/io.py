"""Small, safe file helpers shared by the stages: atomic JSON, BIDS-style TSV."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from oddpipe.errors import OddpipeError


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, then rename); NaN or inf is an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


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
    table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.10g")
    os.replace(tmp, path)


# Identifiers stay strings: "01" must not become 1.
ID_COLUMNS = {"recording": str, "subject": str, "session": str, "run": str, "code": str,
              "channel": str, "name": str, "split": str, "label": str}


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype=ID_COLUMNS)
