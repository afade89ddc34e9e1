"""DVC stage ingest: raw recordings -> per-recording .npy + channels.tsv, recordings.tsv, events.tsv."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from oddpipe.ingest import run_ingest
from oddpipe.io import write_tsv
from oddpipe.parallel import Runner
from oddpipe.params import Params
from stages._common import parser, run_stage, write_stage_record

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, default=Path("data/ingest"))
    p.add_argument("--report", type=Path, default=Path("reports/ingest.tsv"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        ex = params.execution
        recordings, events, report = run_ingest(params.ingest, args.out, Runner.of(ex),
                                                report_path=args.report)
        write_tsv(args.out / "recordings.tsv", recordings)
        write_tsv(args.out / "events.tsv", events)
        write_stage_record(args.out, "ingest", params)
        bad = report[report["status"] != "ok"]
        for _, row in bad.iterrows():
            log.warning("skipped %s: %s", row["file"], row["reason"])
        log.info("%d recordings, %d events (%d targets), %d files skipped; see %s",
                 len(recordings), len(events), int(events["y"].sum()), len(bad), args.report)

    return run_stage("ingest", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
