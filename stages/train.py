"""DVC stage train: epochs + normalizer -> model weights, metrics/train.json, learning curve."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd
import torch

from oddpipe.datasets import load_split
from oddpipe.io import new_file, read_json, write_json
from oddpipe.models import build_model
from oddpipe.params import Params
from oddpipe.training import fit, guard_inputs, resolve_device, seed_everything
from stages._common import parser, run_stage, write_stage_record

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--epochs", type=Path, default=Path("data/filter"))
    p.add_argument("--normalizer", type=Path, default=Path("data/normalize/normalizer.json"))
    p.add_argument("--out", type=Path, default=Path("data/train"))
    p.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    p.add_argument("--curve", type=Path, default=Path("plots/learning_curve.csv"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        tp = params.train
        seed_everything(tp.seed)
        info = read_json(args.epochs / "epochs.json")
        norm = read_json(args.normalizer)
        train, _ = load_split(args.epochs, "train")
        val, _ = load_split(args.epochs, "val")
        config = {"model": tp.model, "n_channels": len(info["channels"]),
                  "n_times": info["n_times"], "sfreq": info["sfreq"], "dropout": tp.dropout}
        model = build_model(config)
        device = resolve_device(params.execution.device)
        log.info("training %s on %s: %d train / %d val epochs", tp.model, device,
                 len(train.y), len(val.y))
        guard_inputs(train, norm, tp, info["channels"])
        history = fit(model, train, val, norm, tp, device)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(model.cpu().state_dict(), new_file(args.out / "model.pt"))
        write_json(args.out / "model.json", config)
        curve = pd.DataFrame(history.rows)
        args.curve.parent.mkdir(parents=True, exist_ok=True)
        curve.to_csv(args.curve, index=False, float_format="%.6g")
        write_json(args.metrics, {
            "best_epoch": history.best_epoch, "early_stop_metric": tp.early_stop_metric,
            "best_val_auc": round(history.rows[history.best_epoch - 1]["val_auc"], 6),
            "epochs_run": len(history.rows), "n_train": int(len(train.y)),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
        })
        write_stage_record(args.out, "train", params)

    return run_stage("train", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
