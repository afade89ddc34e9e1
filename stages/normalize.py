"""DVC stage normalize: train epochs -> normalizer.json, metrics/normalize.json."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from oddpipe.filtering import inflation_factors
from oddpipe.io import read_json, write_json
from oddpipe.normalize import fit_normalizer
from oddpipe.params import Params
from stages._common import parser, run_stage, write_stage_record

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--epochs", type=Path, default=Path("data/filter"))
    p.add_argument("--out", type=Path, default=Path("data/normalize"))
    p.add_argument("--metrics", type=Path, default=Path("metrics/normalize.json"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        info = read_json(args.epochs / "epochs.json")
        X = args.epochs / "train_X.npy"
        mask = np.load(args.epochs / "train_mask.npy", allow_pickle=False)
        norm = fit_normalizer(X, mask, info["channels"], params.normalize.method)
        write_json(args.out / "normalizer.json", norm)
        scale = np.asarray(norm["scale"])
        moments = {k: np.asarray(v) for k, v in info["train_moments"].items()}
        inflation = dict(zip(info["channels"], inflation_factors(moments).round(4).tolist()))
        write_json(args.metrics, {
            "scale_inflation_if_flagged_kept": inflation,
            "max_scale_inflation_if_flagged_kept": max(inflation.values()),
            "method": norm["method"], "n_train_epochs": int(mask.shape[0]),
            "masked_fraction": round(float(mask.mean()), 6),
            "scale_min": float(scale.min()), "scale_max": float(scale.max()),
            "scale_max_over_min": round(float(scale.max() / scale.min()), 4),
        })
        write_stage_record(args.out, "normalize", params)
        log.info("%s normalizer over %d train epochs; scale %.3g..%.3g", norm["method"],
                 mask.shape[0], scale.min(), scale.max())

    return run_stage("normalize", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
