"""DVC stage sample: events.tsv -> sample.tsv (inspection sample) and splits.tsv."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from oddpipe.io import read_tsv, write_tsv
from oddpipe.params import Params
from oddpipe.sampling import inspection_sample, split_events
from stages._common import parser, run_stage, write_stage_record

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--ingest", type=Path, default=Path("data/ingest"))
    p.add_argument("--out", type=Path, default=Path("data/sample"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        sp = params.sample
        events = read_tsv(args.ingest / "events.tsv")
        sample = inspection_sample(events, sp.inspect_fraction, sp.inspect_min_per_stratum,
                                   sp.seed)
        splits = split_events(events, sp)
        write_tsv(args.out / "sample.tsv", sample)
        write_tsv(args.out / "splits.tsv", splits)
        write_stage_record(args.out, "sample", params)
        summary = splits.groupby("split").agg(events=("y", "size"), targets=("y", "sum"),
                                              recordings=("recording", "nunique"))
        log.info("inspection sample: %d events; splits:\n%s", len(sample), summary)

    return run_stage("sample", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
