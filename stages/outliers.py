"""DVC stage outliers: ingested recordings + inspection sample -> outliers.json / .tsv,
metrics and the evidence the outliers_report stage draws. It never imports pandas (see
oddpipe.io)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from oddpipe.io import read_columns, write_columns, write_json
from oddpipe.outliers import (check_tables, detect, evidence_arrays, save_evidence,
                              summary_metrics)
from oddpipe.parallel import Runner
from oddpipe.params import Params
from stages._common import parser, run_stage, write_stage_record

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--ingest", type=Path, default=Path("data/ingest"))
    p.add_argument("--sample", type=Path, default=Path("data/sample"))
    p.add_argument("--out", type=Path, default=Path("data/outliers"))
    p.add_argument("--metrics", type=Path, default=Path("metrics/outliers.json"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        ex = params.execution
        recordings = read_columns(args.ingest / "recordings.tsv")
        sample = read_columns(args.sample / "sample.tsv")
        check_tables(recordings, sample, args.ingest / "recordings.tsv",
                     args.sample / "sample.tsv")
        result = detect(recordings, sample, args.ingest, params.outliers, Runner.of(ex),
                        scratch_parent=args.out)
        metrics = summary_metrics(result, recordings)
        write_columns(args.out / "outliers.tsv", result.columns)
        write_json(args.out / "outliers.json", {"recordings": result.decisions})
        write_json(args.metrics, metrics)
        save_evidence(args.out / "evidence.npz", evidence_arrays(result))
        write_stage_record(args.out, "outliers", params)
        for rec, d in result.decisions.items():
            if d["flags"]:
                log.warning("%s: %s -> %s", rec, d["flags"], d["action"])
        log.info("%d channels flagged in %d recordings; the evidence is drawn by the "
                 "outliers_report stage", metrics["n_flagged_channels"],
                 metrics["n_flagged_recordings"])

    return run_stage("outliers", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
