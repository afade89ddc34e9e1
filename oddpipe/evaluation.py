"""Evaluation that cannot fool its user: every score beside its baseline, a threshold
chosen on validation only, a reference shrinkage-LDA, and no NaN ever written."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import (
    accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix,
    f1_score, matthews_corrcoef, precision_recall_curve, roc_auc_score, roc_curve,
)

from oddpipe.errors import OddpipeError
from oddpipe.normalize import apply_normalizer
from oddpipe.training import EpochSet

DEGENERATE_SHARE = 0.99
LDA_MAX_TRAIN = 20_000  # training epochs for the reference LDA (the demo has 4,279)


def choose_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best balanced accuracy (Youden's J) on validation."""
    fpr, tpr, thresholds = roc_curve(y, score)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], np.finfo(np.float64).max))


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """Imbalance-aware metrics, always beside accuracy and the majority-class baseline."""
    n_nan = int((~np.isfinite(score)).sum())
    if n_nan:
        raise OddpipeError(f"{n_nan} of {len(score)} predictions are not finite; the model "
                           "diverged (see metrics/train.json and reports/outliers.html)")
    if len(np.unique(y)) < 2:
        raise OddpipeError(f"the evaluated split holds one class only ({len(y)} epochs); "
                           "ROC AUC is undefined: add recordings or change sample.seed")
    pred = (score >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    prevalence = float(y.mean())
    majority = max(prevalence, 1 - prevalence)
    accuracy = float(accuracy_score(y, pred))
    share_target = float(pred.mean())
    return {
        "n_test": int(len(y)), "target_fraction": round(prevalence, 6),
        "accuracy": accuracy, "majority_baseline_accuracy": majority,
        "lift_over_majority": accuracy - majority,
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "roc_auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
        "average_precision_baseline": prevalence,
        "f1": float(f1_score(y, pred, zero_division=0)),
        "mcc": float(matthews_corrcoef(y, pred)),
        "sensitivity": float(tp / (tp + fn)), "specificity": float(tn / (tn + fp)),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "fraction_predicted_target": share_target,
        "degenerate_predictions": bool(max(share_target, 1 - share_target) >= DEGENERATE_SHARE),
        "n_nan_predictions": n_nan, "threshold": float(threshold),
    }


def lda_train_subset(n: int, max_n: int = LDA_MAX_TRAIN, seed: int = 0) -> np.ndarray:
    """The training epochs the reference LDA learns from: all of them, or a seeded random
    max_n (its few hundred features saturate long before; memory stays flat)."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))


def lda_features(data: EpochSet, norm: dict, tmin: float, sfreq: float, n_bins: int,
                 batch: int = 512, idx: np.ndarray | None = None) -> np.ndarray:
    """Normalized epochs (all, or those in idx) averaged into n_bins post-stimulus time bins
    per channel."""
    start = max(0, int(round(-tmin * sfreq)))
    n_bins = min(n_bins, data.X.shape[2] - start)  # never an empty bin
    edges = np.linspace(start, data.X.shape[2], n_bins + 1).round().astype(int)
    idx = np.arange(len(data.y)) if idx is None else idx
    out = []
    for i in range(0, len(idx), batch):
        part = idx[i:i + batch]
        x = apply_normalizer(data.rows(part), data.mask[part], norm)
        out.append(np.stack([x[:, :, a:b].mean(axis=2) for a, b in zip(edges[:-1], edges[1:])],
                            axis=2).reshape(len(part), -1))
    return np.concatenate(out)


def reference_lda(train: np.ndarray, y_train: np.ndarray) -> LinearDiscriminantAnalysis:
    """Shrinkage LDA, the long-standing P300 standard (Blankertz et al., 2011)."""
    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(train, y_train)


def per_subject(table: pd.DataFrame, score: np.ndarray, threshold: float,
                name: str) -> pd.DataFrame:
    """Per-subject metrics; AUC is left empty (n/a) where a subject has one class only."""
    rows = []
    for subject, idx in table.groupby("subject").indices.items():
        y, s = table["y"].to_numpy()[idx], score[idx]
        pred = s >= threshold
        two = len(np.unique(y)) == 2
        rows.append({"subject": subject, "model": name, "n": len(idx), "n_target": int(y.sum()),
                     "roc_auc": roc_auc_score(y, s) if two else np.nan,
                     "balanced_accuracy": balanced_accuracy_score(y, pred) if two else np.nan,
                     "accuracy": accuracy_score(y, pred)})
    return pd.DataFrame(rows)


def curves(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, pd.DataFrame]:
    fpr, tpr, _ = roc_curve(y, score)
    precision, recall, _ = precision_recall_curve(y, score)
    pred = (score >= threshold).astype(int)
    label = np.array(["nontarget", "target"])
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr}),
        "pr": pd.DataFrame({"recall": recall, "precision": precision}),
        "confusion": pd.DataFrame({"actual": label[y], "predicted": label[pred]}),
    }


def evaluate_scores(val_y: np.ndarray, val_score: np.ndarray, test_y: np.ndarray,
                    test_score: np.ndarray) -> dict:
    """Metrics on test with the threshold chosen on validation, never on test."""
    threshold = choose_threshold(val_y, val_score)
    return binary_metrics(test_y, test_score, threshold)
