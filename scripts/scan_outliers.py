"""Quality control of any recordings, no events needed: line noise, amplitude and flat
channels per file, with the same report as the outliers stage.

Usage: python scripts/scan_outliers.py FILE [FILE ...] --out reports/qc.html
       [--line-freq auto|50|60] [--metrics qc.json]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oddpipe.io import write_json  # noqa: E402
from oddpipe.outliers import (evidence_arrays, global_line_noise, parse_line_freq,  # noqa: E402
                              scan_files)
from oddpipe.outliers_report import write_report  # noqa: E402
from oddpipe.params import Outliers  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--line-freq", default="auto")
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)
    result = scan_files(args.files, Outliers(), parse_line_freq(args.line_freq))
    flags = result.flags
    metrics = {"n_recordings": len(result.decisions), "n_channels_checked": len(flags),
               "n_flagged_channels": int(flags["flagged"].sum()),
               "max_line_ratio_db": round(float(flags["line_ratio_db"].max()), 2),
               **global_line_noise(flags)}
    write_report(args.out, flags, result.decisions, metrics, evidence_arrays(result))
    if args.metrics:
        write_json(args.metrics, metrics)
    print(f"{metrics['n_flagged_channels']} of {len(flags)} channels flagged; "
          f"line noise global: {metrics['line_noise_global']}; report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
