"""anchorlens.stats against naive references written here from the definitions (plain loops with the same
generator) and against scipy as a peer."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from anchorlens import stats


def naive_percentile(draws, level):
    """The (1 - level) / 2 and (1 + level) / 2 quantiles by sorting and linear interpolation (numpy's default)."""
    x = sorted(v for v in draws if math.isfinite(v))
    if not x:
        return math.nan, math.nan

    def q(p):
        h = (len(x) - 1) * p
        lo = math.floor(h)
        return x[lo] + (h - lo) * (x[min(lo + 1, len(x) - 1)] - x[lo])

    return q((1 - level) / 2), q((1 + level) / 2)


def test_resample_indices_are_one_integers_call_and_counts_match():
    draws = stats.resample_indices(7, 50, np.random.default_rng(3))
    assert draws.shape == (50, 7) and draws.min() >= 0 and draws.max() < 7
    assert np.array_equal(draws, np.random.default_rng(3).integers(0, 7, size=(50, 7)))
    counts = stats.resample_counts(7, 50, np.random.default_rng(3))
    assert np.array_equal(counts, [[list(row).count(i) for i in range(7)] for row in draws])
    assert stats.resample_indices(0, 4, np.random.default_rng(0)).shape == (4, 0)


def test_percentile_interval_matches_a_sorted_loop_and_leaves_nan_out():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(301, 3))
    samples[::7, 1] = np.nan
    samples[:, 2] = np.nan
    low, high = stats.percentile_interval(samples, 0.9)
    for c in range(2):
        ref = naive_percentile(samples[:, c], 0.9)
        assert (low[c], high[c]) == pytest.approx(ref, abs=1e-12)
    assert math.isnan(low[2]) and math.isnan(high[2])
    assert stats.interval(samples[:, 1], 0.9) == pytest.approx(naive_percentile(samples[:, 1], 0.9), abs=1e-12)


def test_bootstrap_mean_is_a_plain_loop_over_the_same_generator():
    values = np.random.default_rng(1).exponential(size=23)
    mean, low, high = stats.bootstrap_mean(values, 400, 0.95, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    idx = rng.integers(0, len(values), size=(400, len(values)))
    means = [sum(values[j] for j in row) / len(row) for row in idx]
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(naive_percentile(means, 0.95), abs=1e-12)
    assert all(math.isnan(v) for v in stats.bootstrap_mean([], 10, 0.95, rng))
    assert stats.bootstrap_mean([2.0, 4.0], 0, 0.95, rng)[0] == 3.0


def test_paired_difference_uses_the_same_draws():
    rng = np.random.default_rng(2)
    a = rng.normal(1.0, 0.1, size=500)
    b = a - 0.5 + rng.normal(0, 0.01, size=500)  # strongly paired: the difference is tight around 0.5
    low, high, excludes = stats.paired_difference(a, b, 0.95)
    assert (low, high) == pytest.approx(naive_percentile(a - b, 0.95), abs=1e-12)
    assert excludes and 0.45 < low < 0.5 < high < 0.55


def test_mean_interval_and_bootstrap_distribution_agree_with_scipy():
    values = np.random.default_rng(4).normal(size=60)
    ref = scipy.stats.bootstrap((values,), np.mean, n_resamples=999, method="percentile",
                                rng=np.random.default_rng(9)).confidence_interval
    assert stats.mean_interval(values, n_bootstrap=999, seed=9) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert stats.mean_interval(np.array([3.0, np.nan])) == (3.0, 3.0)
    dist = stats.bootstrap_distribution((values,), lambda x, axis: x.mean(axis), 999, np.random.default_rng(9))
    assert stats.interval(dist) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_normal_mean_interval_is_mean_plus_minus_z_standard_error():
    values = torch.tensor([[1.0, float("nan")], [2.0, float("nan")], [4.0, float("nan")]])
    mean, low, high = stats.normal_mean_interval(values, 0.95)
    x = [1.0, 2.0, 4.0]
    m = sum(x) / 3
    se = math.sqrt(sum((v - m) ** 2 for v in x) / 2 / 3)
    assert mean[0].item() == pytest.approx(m)
    assert (low[0].item(), high[0].item()) == pytest.approx((m - 1.959964 * se, m + 1.959964 * se), abs=1e-5)
    assert math.isnan(mean[1].item())


def test_jackknife_fisher_z_interval_of_a_correlation():
    rng = np.random.default_rng(6)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    r = float(np.corrcoef(x, y)[0, 1])
    loo = [float(np.corrcoef(np.delete(x, i), np.delete(y, i))[0, 1]) for i in range(40)]
    z = [math.atanh(v) for v in loo]
    zbar = sum(z) / 40
    variance = 39 / 40 * sum((v - zbar) ** 2 for v in z)
    assert stats.jackknife_variance(np.arctanh(loo)) == pytest.approx(variance)
    low, high = stats.fisher_z_interval(r, variance, 0.95)
    half = 1.959964 * math.sqrt(variance)
    assert (low, high) == pytest.approx((math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)), abs=1e-6)
    assert low < r < high
    assert stats.fisher_z_interval(0.3, 0.0) == (0.3, 0.3)


def test_old_argument_names_still_work_with_a_deprecation_warning():
    values = np.random.default_rng(7).normal(size=30)
    new = stats.mean_interval(values, n_bootstrap=200, level=0.9)
    with pytest.warns(DeprecationWarning) as caught:
        old = stats.mean_interval(values, n_boot=200, confidence=0.9)
    assert {str(w.message).split("use ")[1] for w in caught} == {"n_bootstrap=...", "level=..."}
    assert old == new
    with pytest.raises(TypeError, match="both"):
        stats.mean_interval(values, n_boot=200, n_bootstrap=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats.mean_interval(values, n_bootstrap=200, level=0.9)  # the new names warn nothing


def test_a_public_caller_keeps_its_old_names_for_one_release():
    from anchorlens.study.aggregate import reliability_interval

    kurtosis = torch.tensor(np.random.default_rng(8).normal(size=(12, 3, 4)))
    new = reliability_interval(kurtosis, n_bootstrap=100, level=0.9, method="percentile")
    with pytest.warns(DeprecationWarning):
        old = reliability_interval(kurtosis, n_boot=100, confidence=0.9, method="percentile")
    assert old == new
