"""DVC stage outliers_report: the outliers stage's decisions and evidence -> one HTML page
(heatmap, decisions, ranking, PSDs, histograms) a person checks in a minute."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from oddpipe.io import read_json, read_tsv
from oddpipe.outliers import load_evidence
from oddpipe.outliers_report import write_report
from oddpipe.params import Params
from stages._common import parser, run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--outliers", type=Path, default=Path("data/outliers"))
    p.add_argument("--metrics", type=Path, default=Path("metrics/outliers.json"))
    p.add_argument("--out", type=Path, default=Path("reports/outliers.html"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        flags = read_tsv(args.outliers / "outliers.tsv")
        decisions = read_json(args.outliers / "outliers.json")["recordings"]
        write_report(args.out, flags, decisions, read_json(args.metrics),
                     load_evidence(args.outliers / "evidence.npz"))
        log.info("evidence for %d flagged channels in %s", int(flags["flagged"].sum()), args.out)

    return run_stage("outliers_report", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
