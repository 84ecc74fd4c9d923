"""The statistics that now go through scipy / scikit-learn, each against an independent ground truth: a textbook
formula on a small planted case, an optimality condition, or a normal-theory interval (never the old code path)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from anchorlens.stats import mean_interval
from anchorlens.receivers.scores import _pearson, split_half_reliability
from anchorlens.study.aggregate import even_odd_reliability, reliability_interval
from anchorlens.taxonomy.features import NgramVocabulary
from anchorlens.taxonomy.training import fit_logistic, score
from anchorlens.views import _spearman, view_correlations


def test_pearson_is_the_textbook_formula_on_a_planted_pair():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([2.0, 1.0, 4.0, 3.0])
    # sum of products of deviations / sqrt(product of sums of squares) = 3 / sqrt(5 * 5)
    assert _pearson(x, y) == pytest.approx(0.6, abs=1e-12)
    assert math.isnan(_pearson(x, torch.ones(4)))  # constant: undefined, not an error


def test_split_half_reliability_of_identical_traces_is_one():
    kurtosis = torch.randn(1, 3, 5, generator=torch.Generator().manual_seed(0)).repeat(6, 1, 1)
    result = split_half_reliability(kurtosis, n_splits=10)
    assert result.r == pytest.approx(1.0) and result.r_corrected == pytest.approx(1.0)


def test_spearman_is_the_textbook_rank_formula_without_ties():
    rng = np.random.default_rng(0)
    x, y = rng.permutation(12).astype(float), rng.permutation(12).astype(float)
    n, d = 12, x - y  # values are their own ranks minus 1
    assert _spearman(x[None], y[None])[0] == pytest.approx(1 - 6 * (d**2).sum() / (n * (n**2 - 1)), abs=1e-12)
    rows = _spearman(np.stack([x, x, np.ones(12)]), np.stack([x, -x, y]))
    assert rows[:2] == pytest.approx([1.0, -1.0]) and math.isnan(rows[2])


def test_view_correlation_interval_holds_the_point_and_drops_undefined_resamples():
    """A view that is constant but for one sentence: many resamples leave it constant (Spearman undefined); the
    interval still comes from the others. A perfectly monotone pair keeps rho = 1 in every resample."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    frame = pd.DataFrame({"receiver_score": x, "counterfactual_importance_kl": 2 * x + 1,
                          "resampling_importance_accuracy": np.r_[np.zeros(29), 1.0]})
    table = view_correlations(frame, n_bootstrap=400).set_index(["view_a", "view_b"])
    same = table.loc[("receiver_score", "counterfactual_importance_kl")]
    assert same.spearman == pytest.approx(1.0)
    assert same.ci_low == pytest.approx(1.0) and same.ci_high == pytest.approx(1.0)
    sparse = table.loc[("receiver_score", "resampling_importance_accuracy")]
    assert np.isfinite(sparse.ci_low) and sparse.ci_low <= sparse.spearman <= sparse.ci_high


def test_bootstrap_interval_of_a_mean_matches_the_normal_theory_interval():
    """n = 400 draws of N(0, 1): the percentile bootstrap interval of the mean is close to mean +- 1.96 s / sqrt(n)."""
    values = np.random.default_rng(2).normal(size=400)
    low, high = mean_interval(values, n_bootstrap=4000)
    half = 1.959964 * values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)
    assert mean_interval(np.array([3.0, np.nan])) == (3.0, 3.0)
    assert all(math.isnan(v) for v in mean_interval(np.array([np.nan])))


def test_reliability_interval_resamples_within_halves():
    """Even traces all equal A, odd traces all equal B: every within-half resample gives r = corr(A, B) exactly,
    so the interval collapses onto it. A resample that mixed the halves would move r."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    kurtosis = torch.stack([torch.cat([torch.zeros(1, 4), a if i % 2 == 0 else b]) for i in range(8)]).double()
    r = float(np.corrcoef(a.flatten(), b.flatten())[0, 1])
    assert even_odd_reliability(kurtosis) == pytest.approx(r, abs=1e-12)
    for method in ("percentile", "jackknife"):
        low, high = reliability_interval(kurtosis, n_bootstrap=200, method=method)
        assert low == pytest.approx(r, abs=1e-12) and high == pytest.approx(r, abs=1e-12)
    assert all(math.isnan(v) for v in reliability_interval(kurtosis[:3]))


def test_tfidf_is_the_textbook_formula_on_three_sentences():
    sentences = ["let me check", "let me add", "check check"]
    vocab = NgramVocabulary.fit(sentences, min_df=2)
    assert vocab.terms == ["check", "let", "let me", "me"]  # 'add', 'check check', 'me add', 'me check': once only
    # idf = ln((1 + 3) / (1 + df)) + 1; the third sentence: 'check' twice -> (1 + ln 2) * idf, alone: norm 1
    idf = {t: math.log(4 / (1 + df)) + 1 for t, df in {"check": 2, "let": 2, "let me": 2, "me": 2}.items()}
    np.testing.assert_allclose(vocab.idf, [idf[t] for t in vocab.terms], rtol=1e-6)
    rows = vocab.transform(["let me check", "check check", "nothing known"])
    first = np.array([idf["check"], idf["let"], idf["let me"], idf["me"]])
    np.testing.assert_allclose(rows[0], first / np.linalg.norm(first), rtol=1e-6)
    np.testing.assert_allclose(rows[1], [1, 0, 0, 0], atol=1e-7)
    assert rows.dtype == np.float32 and not rows[2].any()
    assert NgramVocabulary.fit(["one", "two"], min_df=2).transform(["one"]).shape == (1, 0)


def test_scores_on_a_hand_counted_case():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2])
    got = score(y_true, y_pred, n_classes=3)
    assert got["confusion"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert got["accuracy"] == pytest.approx(4 / 6)
    # F1 = 2 tp / (2 tp + fp + fn): class 0: 2/3, class 1: 4/6, class 2: 2/3
    assert list(got["f1"].values()) == pytest.approx([2 / 3, 4 / 6, 2 / 3])
    assert got["macro_f1"] == pytest.approx(2 / 3) and got["n_sentences"] == 6


def _objective_gradient(stage, x, y, l2, weights):
    """Gradient in (W, b) of  sum_i w_yi CE_i / sum_i w_yi + l2 ||W||^2  on the standardised features (numpy)."""
    xs = (x - stage.mean) / stage.scale
    p = stage.proba(x).astype(np.float64)
    onehot = np.eye(stage.weight.shape[0])[y]
    residual = weights[y][:, None] * (p - onehot) / weights[y].sum()
    return residual.T @ xs + 2 * l2 * stage.weight, residual.sum(0)


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_logistic_regression_solves_the_documented_objective(power):
    """At the fitted weights the gradient of the documented objective vanishes (the optimality condition), and a
    planted, well separated problem is recovered; a class absent from training is never predicted."""
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=3.0, size=(3, 6))
    y = np.r_[np.zeros(60, int), np.ones(30, int), np.full(10, 2)]  # unbalanced: class weights matter
    x = centres[y] + rng.normal(size=(len(y), 6))
    l2 = 0.05
    stage = fit_logistic(x, y, l2=l2, class_weight_power=power, n_classes=4, max_iter=1000)
    counts = np.bincount(y, minlength=4)
    weights = (len(y) / (4 * np.maximum(counts, 1))) ** power
    grad_w, grad_b = _objective_gradient(stage, x, y, l2, weights)
    assert np.abs(grad_w[:3]).max() < 1e-3 and np.abs(grad_b[:3]).max() < 1e-3
    assert (stage.proba(x).argmax(1) == y).mean() > 0.95
    assert not stage.weight[3].any() and stage.bias[3] < stage.bias[:3].min() - 10
