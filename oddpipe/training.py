"""Training loop: class-imbalance aware, seeded, early stopping on validation AUC, and a
loud stop (naming epoch and step) on a non-finite loss or gradient."""
from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from tqdm import tqdm

from oddpipe.errors import NonFiniteError, OddpipeError
from oddpipe.normalize import apply_normalizer
from oddpipe.params import Train

log = logging.getLogger(__name__)

NONFINITE_HINT = (
    "likely causes: input scale (is normalization on? normalize.method), outliers "
    "(see reports/outliers.html), or a learning rate too high (train.lr)"
)


@dataclass
class EpochSet:
    """Epochs (in memory, or a float32 .npy on disk), their dropped-channel mask, labels."""

    data: np.ndarray | Path
    mask: np.ndarray
    y: np.ndarray

    @property
    def X(self) -> np.ndarray:
        """All epochs: in memory, or a read-only memmap (for shapes and whole passes)."""
        if isinstance(self.data, Path):
            return np.load(self.data, mmap_mode="r", allow_pickle=False)
        return self.data

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Epochs idx (sorted), as float32. From disk with plain reads: the pages stay in
        the page cache, never mapped into this process (a memmap maps whole folios
        around every row it touches, up to the whole file), so memory stays flat."""
        if not isinstance(self.data, Path):
            return np.asarray(self.data[idx], dtype=np.float32)
        return read_rows(self.data, idx)

    def batch(self, idx: np.ndarray, norm: dict | None) -> torch.Tensor:
        idx = np.sort(idx)  # files read fastest in order
        x = self.rows(idx)
        if norm is not None:
            x = apply_normalizer(x, self.mask[idx], norm)
        return torch.from_numpy(x)


def read_rows(path: Path, idx: np.ndarray) -> np.ndarray:
    """Rows idx (sorted) of a C-order .npy, one read per run of consecutive rows."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(fh)
        if fortran:
            raise OddpipeError(f"{path}: Fortran-ordered epochs; rerun the filter stage")
        start, row = fh.tell(), int(np.prod(shape[1:])) * dtype.itemsize
        out = np.empty((len(idx), *shape[1:]), dtype=dtype)
        runs = np.split(np.arange(len(idx)), np.flatnonzero(np.diff(idx) != 1) + 1)
        for run in runs:
            if len(run):
                fh.seek(start + int(idx[run[0]]) * row)
                fh.readinto(memoryview(out[run[0]:run[-1] + 1]).cast("B"))
    return out.astype(np.float32, copy=False)


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OddpipeError("execution.device is 'cuda' but no CUDA device is present; use 'auto'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pos_weight(y: np.ndarray, mode: str) -> torch.Tensor:
    """Weight of the positive class so both classes weigh the same in the loss."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise OddpipeError(f"the training split holds one class only ({len(y)} epochs); "
                           "check the event mapping (ingest.events) and the splits")
    return torch.tensor((len(y) - n_pos) / n_pos if mode in ("balanced", "weighted_loss")
                        else 1.0)


def epoch_order(y: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Indices for one epoch: a permutation, or (oversample) as many draws with both
    classes equally likely."""
    if mode != "oversample":
        return rng.permutation(len(y))
    weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((y == 0).sum(), 1))
    return rng.choice(len(y), size=len(y), replace=True, p=weight / weight.sum())


def check_inputs(data: EpochSet, norm: dict | None, params: Train, channels: list[str],
                 n_check: int = 2000) -> list[str]:
    """What the network will see, checked before training: finite values, per-channel
    std inside params.input_std_range, no huge values. Returns the problems found."""
    idx = np.linspace(0, len(data.y) - 1, min(n_check, len(data.y))).astype(int)
    x = data.batch(idx, norm).numpy()
    if not np.isfinite(x).all():
        return [f"{int((~np.isfinite(x)).sum())} non-finite input values"]
    problems = []
    live = ~data.mask[idx]
    low, high = params.input_std_range
    for c, name in enumerate(channels):
        values = x[live[:, c], c, :]
        std = float(values.std()) if values.size else 1.0
        if not low <= std <= high:
            problems.append(f"channel {name}: std {std:.3g} outside [{low}, {high}]")
    peak = float(np.abs(x).max())
    if peak > params.input_max_abs:
        problems.append(f"max |value| {peak:.3g} above {params.input_max_abs}")
    return problems


def guard_inputs(data: EpochSet, norm: dict | None, params: Train, channels: list[str]) -> None:
    """Fail (or warn, by train.input_check) before training on inputs that would explode."""
    problems = check_inputs(data, norm, params, channels)
    if not problems:
        return
    message = (f"training input looks wrong: {'; '.join(problems[:5])}"
               f"{f' (+{len(problems) - 5} more)' if len(problems) > 5 else ''}; "
               f"{NONFINITE_HINT.replace('likely causes', 'check')}")
    if params.input_check == "fail":
        raise OddpipeError(message)
    log.warning(message)


@torch.no_grad()
def predict_logits(model: nn.Module, data: EpochSet, norm: dict | None, device: torch.device,
                   batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [model(data.batch(np.arange(i, min(i + batch_size, len(data.y))), norm).to(device))
           for i in range(0, len(data.y), batch_size)]
    return torch.cat(out).float().cpu().numpy() if out else np.empty(0, np.float32)


def _check_finite(value: torch.Tensor, what: str, epoch: int, step: int) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteError(f"non-finite {what} at epoch {epoch}, step {step}; {NONFINITE_HINT}")


def train_epoch(model, opt, loss_fn, data: EpochSet, norm, params: Train, rng, device,
                epoch: int) -> float:
    model.train()
    order = epoch_order(data.y, params.imbalance, rng)
    total, n = 0.0, 0
    steps = range(0, len(order), params.batch_size)
    for step, start in enumerate(tqdm(steps, desc=f"epoch {epoch}", leave=False, disable=None)):
        idx = np.sort(order[start:start + params.batch_size])
        x = data.batch(idx, norm).to(device)
        y = torch.from_numpy(data.y[idx].astype(np.float32)).to(device)
        loss = loss_fn(model(x), y)
        _check_finite(loss, "loss", epoch, step)
        opt.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        _check_finite(grad_norm, "gradient", epoch, step)
        opt.step()
        total += float(loss.detach()) * len(idx)
        n += len(idx)
    return total / max(n, 1)


def validate(model, loss_fn, data: EpochSet, norm, device) -> dict:
    logits = predict_logits(model, data, norm, device)
    if not np.isfinite(logits).all():
        raise NonFiniteError(f"non-finite validation predictions; {NONFINITE_HINT}")
    y = data.y
    loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(y.astype(np.float32))))
    return {"val_loss": loss, "val_auc": float(roc_auc_score(y, logits)),
            "val_balanced_accuracy": float(balanced_accuracy_score(y, logits > 0))}


def fit(model: nn.Module, train: EpochSet, val: EpochSet, norm: dict | None, params: Train,
        device: torch.device) -> History:
    """Train with early stopping on validation AUC; the model ends with the best weights."""
    rng = np.random.default_rng(params.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight(train.y, params.imbalance).to(device))
    history, best_state = History(), copy.deepcopy(model.state_dict())
    for epoch in range(1, params.max_epochs + 1):
        train_loss = train_epoch(model, opt, loss_fn, train, norm, params, rng, device, epoch)
        row = {"epoch": epoch, "train_loss": train_loss,
               **validate(model, loss_fn.cpu(), val, norm, device)}
        loss_fn.to(device)
        history.rows.append(row)
        log.info("epoch %d: train loss %.4f, val loss %.4f, val AUC %.3f, val bal. acc %.3f",
                 epoch, train_loss, row["val_loss"], row["val_auc"], row["val_balanced_accuracy"])
        score = row["val_auc" if params.early_stop_metric == "auc" else "val_balanced_accuracy"]
        if score > history.best_score:
            history.best_score, history.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= params.patience:
            log.info("early stop: no val AUC gain for %d epochs", params.patience)
            break
    model.load_state_dict(best_state)
    return history
