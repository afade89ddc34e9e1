"""DVC stage evaluate: model + test epochs -> metrics/eval.json, ROC / PR / confusion plots,
a per-subject table, and a shrinkage-LDA reference on the same split."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd
import torch

from oddpipe.datasets import load_split
from oddpipe.evaluation import (
    curves, evaluate_scores, lda_features, lda_train_subset, per_subject, reference_lda,
)
from oddpipe.io import read_json, write_json, write_tsv
from oddpipe.models import build_model
from oddpipe.params import Params
from oddpipe.training import predict_logits, resolve_device
from stages._common import parser, run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--epochs", type=Path, default=Path("data/filter"))
    p.add_argument("--normalizer", type=Path, default=Path("data/normalize/normalizer.json"))
    p.add_argument("--model", type=Path, default=Path("data/train"))
    p.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    p.add_argument("--plots", type=Path, default=Path("plots"))
    p.add_argument("--report", type=Path, default=Path("reports/eval_per_subject.tsv"))
    args = p.parse_args(argv)

    def body(params: Params) -> None:
        info = read_json(args.epochs / "epochs.json")
        norm = read_json(args.normalizer)
        sets = {s: load_split(args.epochs, s) for s in ("train", "val", "test")}
        model = build_model(read_json(args.model / "model.json"))
        model.load_state_dict(torch.load(args.model / "model.pt", weights_only=True))
        device = resolve_device(params.execution.device)
        model.to(device)
        net = {s: predict_logits(model, sets[s][0], norm, device) for s in ("val", "test")}
        lda_train = lda_train_subset(len(sets["train"][0].y))
        feats = {s: lda_features(sets[s][0], norm, info["tmin"], info["sfreq"],
                                 params.evaluate.lda_bins,
                                 idx=lda_train if s == "train" else None) for s in sets}
        lda = reference_lda(feats["train"], sets["train"][0].y[lda_train])
        ref = {s: lda.decision_function(feats[s]) for s in ("val", "test")}
        y = {s: sets[s][0].y for s in ("val", "test")}
        metrics = evaluate_scores(y["val"], net["val"], y["test"], net["test"])
        lda_m = evaluate_scores(y["val"], ref["val"], y["test"], ref["test"])
        metrics.update({f"lda_{k}": lda_m[k] for k in
                        ("roc_auc", "balanced_accuracy", "average_precision", "f1")},
                       lda_n_train=int(len(lda_train)))
        write_json(args.metrics, {k: round(v, 6) if isinstance(v, float) else v
                                  for k, v in metrics.items()})
        args.plots.mkdir(parents=True, exist_ok=True)
        for name, table in curves(y["test"], net["test"], metrics["threshold"]).items():
            table.to_csv(args.plots / f"{name}.csv", index=False, float_format="%.6g")
        test_table = sets["test"][1]
        write_tsv(args.report, pd.concat([
            per_subject(test_table, net["test"], metrics["threshold"], params.train.model),
            per_subject(test_table, ref["test"], lda_m["threshold"], "lda")]))
        log.info("test: ROC AUC %.3f (LDA %.3f), balanced accuracy %.3f, accuracy %.3f "
                 "vs majority baseline %.3f", metrics["roc_auc"], metrics["lda_roc_auc"],
                 metrics["balanced_accuracy"], metrics["accuracy"],
                 metrics["majority_baseline_accuracy"])

    return run_stage("evaluate", body, args.params)


if __name__ == "__main__":
    sys.exit(main())
