"""Training: a loud, located stop on non-finite values; seeded runs repeat exactly;
class weights balance the classes."""
import numpy as np
import pytest
import torch

from oddpipe.errors import NonFiniteError, OddpipeError
from oddpipe.models import build_model
from oddpipe.params import Train
from oddpipe.training import EpochSet, fit, pos_weight, seed_everything

CPU = torch.device("cpu")
N_CH, N_TIMES, SFREQ = 4, 64, 64.0


def synthetic(n=160, target_fraction=0.25, seed=0):
    """Noise epochs; targets carry a small positive deflection in the second half."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < target_fraction).astype(np.int64)
    y[:2] = [0, 1]
    X = rng.standard_normal((n, N_CH, N_TIMES)).astype(np.float32)
    X[y == 1, :, N_TIMES // 2:] += 0.8
    return EpochSet(X, np.zeros((n, N_CH), bool), y)


def model_for(kind, seed=0):
    seed_everything(seed)
    return build_model({"model": kind, "n_channels": N_CH, "n_times": N_TIMES,
                        "sfreq": SFREQ, "dropout": 0.25})


def params(**kw):
    base = dict(model="linear", max_epochs=3, batch_size=32, patience=5, seed=0)
    return Train(**{**base, **kw})


def test_inf_input_stops_at_first_step():
    train, val = synthetic(seed=0), synthetic(seed=1)
    train.X[:, 0, 5] = np.inf  # every example: the very first batch meets it
    with pytest.raises(NonFiniteError, match=r"non-finite (loss|gradient) at epoch 1, step 0;"):
        fit(model_for("linear"), train, val, None, params(), CPU)


def test_inf_in_one_example_names_its_step():
    train, val = synthetic(n=160, seed=0), synthetic(seed=1)
    bad = 100
    train.X[bad, 2, 10] = np.inf
    # fit draws the batch order from default_rng(train.seed); find the batch holding `bad`
    order = np.random.default_rng(0).permutation(len(train.y))
    step = int(np.flatnonzero(order == bad)[0]) // 32
    with pytest.raises(NonFiniteError) as info:
        fit(model_for("linear"), train, val, None, params(), CPU)
    assert f"at epoch 1, step {step};" in str(info.value)
    assert "train.lr" in str(info.value) and "normalize.method" in str(info.value)


def test_absurd_learning_rate_stops_with_a_message():
    train, val = synthetic(seed=0), synthetic(seed=1)
    with pytest.raises(NonFiniteError, match=r"at epoch \d+, step \d+;.*train\.lr"):
        fit(model_for("linear"), train, val, None, params(lr=1e36, weight_decay=0.0), CPU)


@pytest.mark.parametrize("kind", ["linear", "cnn"])
def test_same_seed_same_history(kind):
    train, val = synthetic(n=96, seed=0), synthetic(n=64, seed=1)
    runs = []
    for _ in range(2):
        model = model_for(kind, seed=0)
        history = fit(model, train, val, None, params(model=kind, max_epochs=2), CPU)
        runs.append((history.rows, history.best_epoch,
                     [p.detach().clone() for p in model.parameters()]))
    (rows_a, best_a, w_a), (rows_b, best_b, w_b) = runs
    assert len(rows_a) == 2
    assert rows_a == rows_b and best_a == best_b
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b))
    assert all(np.isfinite(v) for row in rows_a for v in row.values())


def test_linear_model_learns_the_synthetic_effect():
    train, val = synthetic(n=320, seed=0), synthetic(seed=1)
    history = fit(model_for("linear"), train, val, None, params(max_epochs=5), CPU)
    assert history.best_score > 0.9


def test_pos_weight_balances_classes():
    y = np.array([1] * 10 + [0] * 90)
    assert float(pos_weight(y, "balanced")) == pytest.approx(9.0)
    assert float(pos_weight(y, "none")) == 1.0
    assert float(pos_weight(np.array([1, 0, 0, 0]), "balanced")) == pytest.approx(3.0)


@pytest.mark.parametrize("y", [np.zeros(20, int), np.ones(20, int)])
def test_pos_weight_single_class_raises(y):
    with pytest.raises(OddpipeError, match="one class only"):
        pos_weight(y, "balanced")
