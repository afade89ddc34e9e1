"""DVC stage filter: raw FIF, outliers.json, splits -> epochs per split (.npy) + tables."""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from oddpipe.filtering import run_filter
from oddpipe.io import read_json, read_tsv, write_json, write_tsv
from oddpipe.parallel import Runner
from oddpipe.params import Params
from stages._common import parser, run_stage, write_stage_record

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--ingest", type=Path, default=Path("data/ingest"))
    p.add_argument("--sample", type=Path, default=Path("data/sample"))
    p.add_argument("--outliers", type=Path, default=Path("data/outliers"))
    p.add_argument("--out", type=Path, default=Path("data/filter"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        recordings = read_tsv(args.ingest / "recordings.tsv")
        events = read_tsv(args.ingest / "events.tsv").merge(
            read_tsv(args.sample / "splits.tsv")[["event_id", "split"]], on="event_id")
        decisions = read_json(args.outliers / "outliers.json")["recordings"]
        shutil.rmtree(args.out, ignore_errors=True)  # no stale split survives a rerun
        ex = params.execution
        result = run_filter(recordings, events, decisions, args.ingest, args.out,
                            params.filter, Runner.of(ex))
        for split, table in result["tables"].items():
            write_tsv(args.out / f"{split}.tsv", table)
            log.info("%s: %d epochs, %d targets", split, len(table), int(table["y"].sum()))
        for rec, n in result["info"]["dropped_nonfinite"].items():
            if n:  # non-finite samples the outliers scan did not see
                log.warning("%s: %d epochs dropped over non-finite samples", rec, n)
        for rec in result["info"]["dropped_recordings"]:
            log.warning("%s left out by the outliers stage: %s", rec, decisions[rec]["flags"])
        write_json(args.out / "epochs.json", result["info"])
        write_stage_record(args.out, "filter", params)

    return run_stage("filter", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
