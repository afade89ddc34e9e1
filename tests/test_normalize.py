"""Normalization: robust statistics, masks, outlier resistance, clear errors."""
import numpy as np
import pytest

from oddpipe.errors import OddpipeError
from oddpipe.normalize import apply_normalizer, channel_stats, fit_normalizer


def gaussian_epochs(n=200, n_ch=3, n_times=100, loc=3.0, sd=2.0, seed=0):
    return np.random.default_rng(seed).normal(loc, sd, (n, n_ch, n_times)).astype(np.float32)


@pytest.mark.parametrize("method", ["robust", "zscore"])
def test_stats_of_gaussian_data(method):
    values = np.random.default_rng(0).normal(3.0, 2.0, 200_000)
    center, scale = channel_stats(values, method)
    # standard errors at n = 2e5: ~0.006 (center), ~0.008 (IQR scale); 0.03 is ~4 SE
    assert center == pytest.approx(3.0, abs=0.03)
    assert scale == pytest.approx(2.0, abs=0.03)


def test_method_none_is_identity():
    X = gaussian_epochs()
    norm = fit_normalizer(X, np.zeros(X.shape[:2], bool), ["a", "b", "c"], "none")
    assert norm["center"] == [0.0] * 3 and norm["scale"] == [1.0] * 3
    np.testing.assert_array_equal(apply_normalizer(X, np.zeros(X.shape[:2], bool), norm), X)


def test_fit_is_per_channel():
    rng = np.random.default_rng(1)
    X = np.stack([rng.normal(m, s, (300, 50)) for m, s in [(0, 1), (10, 5), (-4, 0.1)]], 1)
    norm = fit_normalizer(X, np.zeros(X.shape[:2], bool), ["a", "b", "c"], "robust")
    np.testing.assert_allclose(norm["center"], [0, 10, -4], atol=0.05)
    np.testing.assert_allclose(norm["scale"], [1, 5, 0.1], rtol=0.03)
    assert norm["channels"] == ["a", "b", "c"] and norm["method"] == "robust"


def test_masked_entries_ignored_by_fit_and_zero_after_apply():
    X = gaussian_epochs()
    mask = np.zeros(X.shape[:2], bool)
    mask[::4, 1] = True          # a quarter of channel b's epochs were dropped...
    X[mask] = 1e6                # ...and hold garbage
    X[5, 2, :] = np.nan          # a dropped channel epoch may even be NaN
    mask[5, 2] = True
    norm = fit_normalizer(X, mask, ["a", "b", "c"], "robust")
    clean = fit_normalizer(X[~mask[:, 1]][:, [1]], np.zeros((int((~mask[:, 1]).sum()), 1), bool),
                           ["b"], "robust")
    assert norm["center"][1] == clean["center"][0]
    assert norm["scale"][1] == clean["scale"][0]
    assert norm["center"][1] == pytest.approx(3.0, abs=0.05)
    assert norm["scale"][1] == pytest.approx(2.0, abs=0.05)

    out = apply_normalizer(X, mask, norm)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.all(out[mask] == 0.0)
    expected = (X[0, 0] - np.float32(norm["center"][0])) / np.float32(norm["scale"][0])
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    unmasked = out[~mask[:, 1], 1]
    assert abs(np.median(unmasked)) < 0.05 and abs(np.std(unmasked) - 1) < 0.05


def test_outliers_inflate_zscore_but_not_robust_scale():
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 1.0, 100_000)
    dirty = values.copy()
    dirty[:10] = 1e4  # 0.01 % of the data, e.g. a detached electrode's bursts
    z_clean, z_dirty = channel_stats(values, "zscore")[1], channel_stats(dirty, "zscore")[1]
    r_clean, r_dirty = channel_stats(values, "robust")[1], channel_stats(dirty, "robust")[1]
    # std with outliers: sqrt(10 * 1e8 / 1e5) = 100
    assert z_dirty / z_clean == pytest.approx(100, rel=0.02)
    assert r_dirty / r_clean == pytest.approx(1.0, abs=0.001)


def test_zero_spread_channel_raises_naming_it():
    X = gaussian_epochs()
    X[:, 1, :] = 5.0
    for method in ("robust", "zscore"):
        with pytest.raises(OddpipeError, match=r"channel b has zero spread"):
            fit_normalizer(X, np.zeros(X.shape[:2], bool), ["a", "b", "c"], method)


def test_nonfinite_unmasked_data_raises_naming_the_channel():
    X = gaussian_epochs()
    X[3, 2, 7] = np.inf
    with pytest.raises(OddpipeError, match=r"channel c hold non-finite"):
        fit_normalizer(X, np.zeros(X.shape[:2], bool), ["a", "b", "c"], "robust")


def test_a_file_is_fitted_exactly_as_the_array(tmp_path):
    X = gaussian_epochs(seed=3)
    np.save(tmp_path / "train_X.npy", X)
    mask = np.zeros(X.shape[:2], bool)
    mask[:50, 1] = True
    assert (fit_normalizer(tmp_path / "train_X.npy", mask, ["a", "b", "c"], "robust")
            == fit_normalizer(X, mask, ["a", "b", "c"], "robust"))


def test_large_channels_are_fitted_on_a_bounded_seeded_subset():
    X = gaussian_epochs(n=2000, n_times=100, seed=4)  # 200,000 values a channel
    mask = np.zeros(X.shape[:2], bool)
    exact = fit_normalizer(X, mask, ["a", "b", "c"], "robust")
    capped = fit_normalizer(X, mask, ["a", "b", "c"], "robust", max_values=20_000)
    assert capped == fit_normalizer(X, mask, ["a", "b", "c"], "robust", max_values=20_000)
    assert capped != exact  # 200 of 2000 epochs were used
    # standard errors at n = 2e4 values: ~0.018 (center), ~0.024 (scale); 0.08 is > 3 SE
    np.testing.assert_allclose(capped["center"], exact["center"], atol=0.08)
    np.testing.assert_allclose(capped["scale"], exact["scale"], atol=0.08)
