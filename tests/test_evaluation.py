"""Evaluation: the majority-class trap is exposed, NaN never passes, the threshold comes
from validation."""
import numpy as np
import pytest

from oddpipe.errors import OddpipeError
from oddpipe.evaluation import binary_metrics, choose_threshold, evaluate_scores


def story_labels(n=1000, n_target=76, seed=0):
    y = np.zeros(n, int)
    y[np.random.default_rng(seed).choice(n, n_target, replace=False)] = 1
    return y


def test_always_nontarget_is_exposed():
    y = story_labels()
    score = np.zeros(len(y))  # a constant score: "non-target" every time
    m = evaluate_scores(y, score, y, score)
    assert m["accuracy"] == pytest.approx(0.924, abs=1e-12)
    assert m["majority_baseline_accuracy"] == pytest.approx(0.924, abs=1e-12)
    assert m["lift_over_majority"] == pytest.approx(0.0, abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert m["roc_auc"] == pytest.approx(0.5, abs=1e-12)
    assert m["average_precision"] == pytest.approx(0.076, abs=1e-12)
    assert m["target_fraction"] == pytest.approx(0.076, abs=1e-12)
    assert m["degenerate_predictions"] is True
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 924, 76)
    assert m["fraction_predicted_target"] == 0.0
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0
    assert m["f1"] == 0.0 and m["mcc"] == 0.0
    assert np.isfinite(m["threshold"])


def test_always_target_is_degenerate_too():
    y = story_labels()
    m = binary_metrics(y, np.ones(len(y)), threshold=0.5)
    assert m["accuracy"] == pytest.approx(0.076, abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert m["degenerate_predictions"] is True


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_scores_raise(bad):
    y = story_labels()
    score = np.random.default_rng(1).standard_normal(len(y))
    score[[3, 500, 999]] = bad
    with pytest.raises(OddpipeError, match=r"3 of 1000 predictions are not finite"):
        binary_metrics(y, score, 0.0)


def test_single_class_test_set_raises():
    with pytest.raises(OddpipeError, match="one class only"):
        binary_metrics(np.zeros(50, int), np.linspace(0, 1, 50), 0.5)
    with pytest.raises(OddpipeError, match="one class only"):
        binary_metrics(np.ones(50, int), np.linspace(0, 1, 50), 0.5)


def test_threshold_is_chosen_on_validation():
    # Validation: perfectly separable at 10 (targets score 11, non-targets 9).
    val_y = np.array([0] * 90 + [1] * 10)
    val_score = np.where(val_y == 1, 11.0, 9.0)
    threshold = choose_threshold(val_y, val_score)
    assert 9.0 < threshold <= 11.0
    # Test scores sit elsewhere: a threshold tuned on test would split them perfectly
    # (at 1.0); the validation threshold predicts non-target for all of them.
    test_y = np.array([0] * 90 + [1] * 10)
    test_score = np.where(test_y == 1, 1.5, 0.5)
    m = evaluate_scores(val_y, val_score, test_y, test_score)
    assert m["threshold"] == threshold
    assert m["roc_auc"] == 1.0  # ranking is perfect...
    assert m["balanced_accuracy"] == 0.5  # ...but the honest threshold is not tuned on test
    assert m["tp"] == 0


def test_threshold_maximizes_youden_j():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
    s = np.arange(10, dtype=float)
    # thresholds >= s: at 4 -> tpr 1, fpr 1/5 (J 0.8); at 8 -> tpr 0.4, fpr 0 (J 0.4)
    assert choose_threshold(y, s) == 4.0


def test_binary_metrics_all_finite_on_realistic_scores():
    rng = np.random.default_rng(3)
    y = story_labels(seed=3)
    score = rng.standard_normal(len(y)) + 1.5 * y
    m = binary_metrics(y, score, choose_threshold(y, score))
    expected_keys = {
        "n_test", "target_fraction", "accuracy", "majority_baseline_accuracy",
        "lift_over_majority", "balanced_accuracy", "roc_auc", "average_precision",
        "average_precision_baseline", "f1", "mcc", "sensitivity", "specificity", "tp", "fp",
        "tn", "fn", "fraction_predicted_target", "degenerate_predictions",
        "n_nan_predictions", "threshold"}
    assert set(m) == expected_keys
    for key, value in m.items():
        assert np.isfinite(float(value)), key
    assert m["n_test"] == 1000 and m["tp"] + m["fn"] == 76 and m["n_nan_predictions"] == 0
    assert 0.8 < m["roc_auc"] < 0.9  # d' = 1.5 gives AUC = Phi(1.5 / sqrt 2) = 0.856
    assert m["degenerate_predictions"] is False
    assert m["sensitivity"] == pytest.approx(m["tp"] / 76)


def test_the_reference_lda_learns_from_a_bounded_seeded_subset():
    from oddpipe.evaluation import lda_train_subset

    np.testing.assert_array_equal(lda_train_subset(4279), np.arange(4279))  # the demo: all
    big = lda_train_subset(68_000, max_n=20_000)
    assert len(big) == len(np.unique(big)) == 20_000 and (np.diff(big) > 0).all()
    np.testing.assert_array_equal(big, lda_train_subset(68_000, max_n=20_000))
