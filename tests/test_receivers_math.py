"""Receiver-head math without a model: sentence reduction, vertical scores, kurtosis, ranking, reliability.

Every function is checked against a direct (slow, obviously right) computation or against scipy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from anchorlens.errors import AnchorlensError
from anchorlens.receivers import (
    HeadSelectionError,
    SentenceReducer,
    SentenceSpanError,
    SplitHalfReliability,
    head_kurtosis,
    kurtosis,
    membership_matrix,
    receiver_scores,
    sentence_average,
    split_half_reliability,
    top_heads,
    vertical_scores,
)


def causal_pattern(*shape_and_n, seed=0):
    *batch, n = shape_and_n
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(*batch, n, n, generator=g) * 3
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


def naive_average(pattern, spans):
    """The definition: a plain mean over every query x key token pair of two sentences."""
    out = torch.zeros(*pattern.shape[:-2], len(spans), len(spans))
    for i, (a, b) in enumerate(spans):
        for j, (c, d) in enumerate(spans):
            out[..., i, j] = pattern[..., a:b, c:d].mean((-1, -2))
    return out


def reference_vertical(matrix, proximity_ignore=4, control_depth=False):
    """The reference code's vertical scores (numpy, one head), written out from its description."""
    m = matrix.astype(np.float64).copy()
    m[np.triu_indices_from(m, k=1)] = np.nan
    m[np.triu_indices_from(m, k=-proximity_ignore + 1)] = np.nan
    if control_depth:
        per_row = np.sum(~np.isnan(m), axis=1)
        ranks = np.full_like(m, np.nan)
        for r in range(m.shape[0]):
            keep = ~np.isnan(m[r])
            if keep.any():
                ranks[r, keep] = stats.rankdata(m[r, keep]) / per_row[r]
        m = ranks
    out = []
    for j in range(m.shape[1]):
        values = m[j + proximity_ignore :, j]
        out.append(np.nanmean(values) if values.size and not np.isnan(values).all() else np.nan)
    return np.array(out)


SPANS = [(1, 4), (5, 9), (9, 10), (12, 20), (20, 27), (28, 33), (33, 40), (41, 47), (47, 50)]


@pytest.mark.parametrize("block_tokens", [1, 7, 512])
def test_reduction_equals_plain_mean_over_token_blocks(block_tokens):
    pattern = causal_pattern(2, 3, 50)
    fast = SentenceReducer(SPANS, 50, block_tokens=block_tokens)(pattern)
    assert fast.shape == (2, 3, len(SPANS), len(SPANS))
    torch.testing.assert_close(fast, naive_average(pattern, SPANS), atol=1e-7, rtol=1e-6)


def test_reduction_is_causal_and_keeps_the_diagonal_zeros():
    pattern = causal_pattern(50)
    matrix = sentence_average(pattern, SPANS)
    assert torch.all(matrix.triu(1) == 0)
    # The diagonal block is a mean over a lower-triangular block, zeros included.
    a, b = SPANS[3]
    assert matrix[3, 3] == pytest.approx(float(pattern[a:b, a:b].sum()) / (b - a) ** 2, rel=1e-6)


def test_non_causal_reduction_reads_every_key():
    g = torch.Generator().manual_seed(1)
    pattern = torch.rand(4, 50, 50, generator=g)  # attention to the future too (an encoder)
    torch.testing.assert_close(sentence_average(pattern, SPANS, causal=False), naive_average(pattern, SPANS))
    # The causal shortcut (keys up to each query block's end) is only right for causal patterns.
    shortcut = SentenceReducer(SPANS, 50, causal=True, block_tokens=1)(pattern)
    assert not torch.allclose(shortcut, naive_average(pattern, SPANS))


def test_reduction_in_bfloat16_stays_close():
    pattern = causal_pattern(3, 50)
    low = sentence_average(pattern.bfloat16(), SPANS)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, naive_average(pattern, SPANS), atol=2e-3, rtol=2e-2)


def test_membership_matrix_rows_and_columns():
    m = membership_matrix(SPANS, 50)
    torch.testing.assert_close(m.sum(0), torch.ones(len(SPANS)))  # each column averages
    outside = [t for t in range(50) if not any(a <= t < b for a, b in SPANS)]
    assert torch.all(m[outside] == 0)  # tokens between sentences take no part


@pytest.mark.parametrize(
    "spans",
    [[], [(3, 3)], [(0, 5), (4, 8)], [(5, 8), (0, 3)], [(0, 51)], [(-1, 2)]],
    ids=["none", "empty", "overlap", "order", "past-end", "negative"],
)
def test_bad_spans_are_refused(spans):
    with pytest.raises(SentenceSpanError):
        SentenceReducer(spans, 50)


def test_pattern_of_the_wrong_length_is_refused():
    with pytest.raises(SentenceSpanError, match="exactly the trace's tokens"):
        SentenceReducer(SPANS, 50)(causal_pattern(49))


@pytest.mark.parametrize("control_depth", [False, True])
@pytest.mark.parametrize("proximity_ignore", [0, 1, 4])
def test_vertical_scores_match_the_reference(control_depth, proximity_ignore):
    matrices = sentence_average(causal_pattern(3, 2, 50, seed=3), SPANS)
    ours = vertical_scores(matrices, proximity_ignore, depth_control=control_depth)
    assert ours.shape == (3, 2, len(SPANS))
    for layer in range(3):
        for head in range(2):
            expected = reference_vertical(matrices[layer, head].numpy(), proximity_ignore, control_depth)
            np.testing.assert_allclose(ours[layer, head].numpy(), expected, rtol=1e-6, atol=1e-9, equal_nan=True)


def test_vertical_scores_ignore_near_and_future_sentences():
    m = torch.zeros(8, 8)
    m[5, 2] = 100.0  # 3 sentences later: inside the band of 4, ignored
    m[2, 5] = 100.0  # the future: ignored
    m[7, 2] = 1.0
    v = vertical_scores(m, proximity_ignore=4)
    assert v[2] == pytest.approx(1.0 / 2)  # rows 6 and 7
    assert torch.isnan(v[4:]).all() and not torch.isnan(v[:4]).any()


def test_depth_control_ties_get_average_ranks():
    m = torch.zeros(7, 7)
    m[6, :3] = torch.tensor([0.2, 0.2, 0.5])  # row 6 sees keys 0, 1, 2 with proximity 4
    v = vertical_scores(m, proximity_ignore=4, depth_control=True)
    expected = reference_vertical(m.numpy(), 4, True)
    np.testing.assert_allclose(v.numpy(), expected, equal_nan=True, rtol=1e-6)


def test_kurtosis_matches_scipy_with_nans():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 6, 30, generator=g, dtype=torch.float64) ** 4
    x[..., -4:] = float("nan")
    x[0, 0, 3] = float("nan")
    expected = stats.kurtosis(x.numpy(), axis=-1, fisher=True, bias=True, nan_policy="omit")
    np.testing.assert_allclose(kurtosis(x).numpy(), np.asarray(expected), rtol=1e-9, atol=1e-9)


def test_kurtosis_of_constant_or_empty_values_is_nan():
    assert torch.isnan(kurtosis(torch.full((10,), 0.3)))
    assert torch.isnan(kurtosis(torch.full((10,), float("nan"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about the cancellation, then says NaN
        assert np.isnan(stats.kurtosis(np.full(10, 0.3), fisher=True, bias=True))


def test_head_kurtosis_excludes_layer_zero_and_ranks_the_spiky_head():
    v = torch.rand(3, 4, 20, generator=torch.Generator().manual_seed(0))
    v[0, 1, 5] = 50.0  # spiky, but in layer 0
    v[2, 3, 7] = 10.0  # the spikiest allowed head
    k = head_kurtosis(v)
    assert torch.isnan(k[0]).all()
    assert top_heads(k, 2)[0] == (2, 3)
    assert top_heads(head_kurtosis(v, exclude_layers=()), 1) == [(0, 1)]


def test_top_heads_keeps_only_heads_with_a_kurtosis():
    k = head_kurtosis(torch.rand(2, 2, 10, generator=torch.Generator().manual_seed(1)))  # layer 0 excluded: NaN
    expected = sorted([(1, 0), (1, 1)], key=lambda h: -float(k[h]))  # the two finite heads, best first
    assert top_heads(k, k=3) == expected  # asked for 3, only 2 exist: the 2, as analyze and study need
    assert top_heads(torch.full((2, 2), float("nan")), k=3) == []
    with pytest.raises(HeadSelectionError, match="top_k"):
        top_heads(k, k=0)


def test_receiver_scores_average_the_chosen_heads():
    v = torch.rand(3, 4, 9, generator=torch.Generator().manual_seed(2))
    heads = [(1, 2), (2, 0), (2, 3)]
    expected = torch.stack([v[l, h] for l, h in heads]).mean(0)
    torch.testing.assert_close(receiver_scores(v, heads), expected)
    with pytest.raises(HeadSelectionError, match="outside the model"):
        receiver_scores(v, [(3, 0)])
    with pytest.raises(HeadSelectionError):
        receiver_scores(v, [])


def test_split_half_reliability_separates_signal_from_noise(tmp_path):
    g = torch.Generator().manual_seed(0)
    signal = torch.randn(1, 5, 6, generator=g) * 3
    consistent = signal + torch.randn(12, 5, 6, generator=g)
    noise = torch.randn(12, 5, 6, generator=g)
    consistent[:, 0] = noise[:, 0] = float("nan")  # an excluded layer
    reliable = split_half_reliability(consistent, n_splits=30)
    unreliable = split_half_reliability(noise, n_splits=30)
    assert reliable.r > 0.8 > 0.3 > unreliable.r
    assert reliable.r_corrected == pytest.approx(2 * reliable.r / (1 + reliable.r))
    loaded = SplitHalfReliability.load(reliable.save(tmp_path / "rel"))
    assert loaded.r == reliable.r and torch.equal(loaded.per_split, reliable.per_split)
    assert len(reliable.to_dataframe()) == 30
    with pytest.raises(AnchorlensError, match="at least 2 traces"):
        split_half_reliability(consistent[:1])


def test_bad_shapes_are_refused():
    with pytest.raises(AnchorlensError, match="square"):
        vertical_scores(torch.rand(3, 4))
    with pytest.raises(AnchorlensError, match="proximity_ignore"):
        vertical_scores(torch.rand(4, 4), proximity_ignore=-1)
    with pytest.raises(AnchorlensError, match=r"\[layer, head, sentence\]"):
        head_kurtosis(torch.rand(4, 10))
