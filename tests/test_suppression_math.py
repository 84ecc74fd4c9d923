"""Pure math of attention suppression: KL, the one-position shift, the sentence matrix, batching plans."""

from __future__ import annotations

import math

import pytest
import torch

from anchorlens.hooks.key_suppression import key_suppression_mask
from anchorlens.suppression.layers import layer_windows
from anchorlens.suppression.matrix import (
    kl_from_log_probs,
    log_kl,
    log_probs,
    position_kl,
    row_centre,
    sentence_matrix,
    shift_to_tokens,
    token_kl,
)
from anchorlens.suppression.runner import plan_batches
from anchorlens.suppression.validation import SuppressionInputError


def test_kl_matches_a_hand_computation_at_temperature():
    base = torch.tensor([[2.0, 0.0, -1.0]])
    other = torch.tensor([[0.0, 1.0, 0.0]])
    p = torch.softmax(base / 0.6, -1)
    q = torch.softmax(other / 0.6, -1)
    expected = float((p * (p / q).log()).sum())
    got = token_kl(base, other[None], temperature=0.6)
    assert torch.isnan(got[0, 0])  # token 0 has no distribution
    assert got.shape == (1, 1)
    got = position_kl(log_probs(base, 0.6), other[None], 0.6)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # The temperature matters: at T = 1 the value differs.
    assert position_kl(log_probs(base, 1.0), other[None], 1.0).item() != pytest.approx(expected, rel=1e-3)


def test_kl_is_clipped_at_zero_and_handles_zero_probabilities():
    p = log_probs(torch.randn(4, 50))
    assert (kl_from_log_probs(p, p + 1e-7 * torch.randn_like(p)) >= 0).all()
    base = torch.tensor([[0.0, -torch.inf]])  # P_base(token 1) = 0 contributes nothing
    suppressed = torch.log(torch.tensor([[0.5, 0.5]]))
    assert kl_from_log_probs(base, suppressed).item() == pytest.approx(math.log(2))


def test_position_kl_is_chunked_without_changing_the_result():
    base = torch.randn(37, 101)
    edited = base + torch.randn(3, 37, 101)
    whole = position_kl(log_probs(base), edited, chunk_size=1000)
    chunked = position_kl(log_probs(base), edited, chunk_size=5)
    torch.testing.assert_close(whole, chunked)


def test_position_kl_with_precomputed_base_probs_matches_float64():
    generator = torch.Generator().manual_seed(4)
    base = torch.randn(40, 3000, generator=generator) * 4
    edited = base + torch.randn(2, 40, 3000, generator=generator) * torch.tensor([0.01, 1.0])[:, None, None]
    base[5, :7] = -torch.inf  # tokens the baseline never emits (P_base = 0) contribute nothing
    # float64, by the definition: sum over P_base > 0 of P_base * log(P_base / P_suppressed)
    p, log_p = torch.softmax(base.double() / 0.6, -1), torch.log_softmax(base.double() / 0.6, -1)
    log_q = torch.log_softmax(edited.double() / 0.6, -1)
    reference = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)
    lp = log_probs(base)
    for probs in (None, lp.exp()):
        got = position_kl(lp, edited, base_probs=probs, chunk_size=16)
        assert got.dtype == torch.float32 and got.isfinite().all()
        assert (got - reference).abs().max() < 1e-5
    assert reference[0].max() < 1e-2 < reference[1].min()  # control: small and large KL both covered
    with pytest.raises(ValueError, match="base_probs"):
        position_kl(lp, edited, base_probs=lp[1:].exp())


def test_shift_moves_a_change_at_position_p_onto_token_p_plus_1():
    base = torch.randn(10, 20)
    edited = base.clone()
    edited[4] += 3 * torch.randn(20)  # the logits at position 4 predict token 5
    kl = token_kl(base, edited[None])[0]
    changed = (kl.nan_to_num(0) > 1e-6).nonzero().flatten().tolist()
    assert changed == [5]
    # ... so it counts for the sentence holding token 5, not the one holding token 4.
    matrix = sentence_matrix(torch.stack([kl, torch.zeros(10), torch.zeros(10)]), [(1, 5), (5, 8), (8, 10)])
    assert matrix[1, 0] > 0 and matrix[2, 0] == 0


def test_sentence_matrix_means_over_target_tokens_and_blanks_j_ge_i():
    kl = torch.zeros(3, 9)
    kl[0, 4:7] = torch.tensor([1.0, 2.0, 6.0])  # sentence 1 = tokens 4..6 when 0 is suppressed
    kl[1, 7:9] = torch.tensor([4.0, 8.0])  # sentence 2 = tokens 7..8 when 1 is suppressed
    matrix = sentence_matrix(kl, [(1, 4), (4, 7), (7, 9)])
    assert matrix[1, 0] == pytest.approx(3.0)
    assert matrix[2, 1] == pytest.approx(6.0)
    assert matrix[2, 0] == 0
    upper = torch.triu(torch.ones(3, 3, dtype=torch.bool))
    assert torch.isnan(matrix[upper]).all()
    with pytest.raises(ValueError):
        sentence_matrix(kl[:2], [(1, 4), (4, 7), (7, 9)])


def test_log_and_row_centring():
    matrix = torch.tensor([[math.nan, math.nan, math.nan], [1.0, math.nan, math.nan], [1.0, 3.0, math.nan]])
    assert log_kl(torch.tensor([0.0])).item() == pytest.approx(math.log(1e-9))
    centred = row_centre(matrix)
    assert torch.isnan(centred[0]).all()
    assert centred[1, 0] == 0
    assert centred[2, :2].tolist() == [-1.0, 1.0]


def test_mask_hides_exactly_the_range_for_every_query_and_row():
    mask = key_suppression_mask([(2, 4), (5, 7)], n_queries=3, n_keys=8)  # queries are positions 5, 6, 7
    assert mask.shape == (2, 1, 3, 8)
    for row, (start, end) in enumerate([(2, 4), (5, 7)]):
        expected = torch.zeros(8, dtype=torch.bool)
        expected[start:end] = True
        for q in range(3):
            assert torch.equal(mask[row, 0, q], expected)


def test_mask_keeps_a_query_that_would_see_nothing():
    # A sentence at position 0 (no BOS, no prompt): its own queries keep themselves, nothing else.
    mask = key_suppression_mask([(0, 3)], n_queries=5, n_keys=5)[0, 0]
    for q in range(5):
        visible = [k for k in range(q + 1) if not mask[q, k]]
        assert visible == ([q] if q < 3 else list(range(3, q + 1)))


def test_plan_batches_shares_prefixes_and_respects_budgets():
    starts = [1, 11, 21, 31, 300, 310]
    plans = plan_batches(starts, n_tokens=400, max_positions=2000, max_waste=0.25)
    assert sorted(i for batch in plans for i in batch) == list(range(6))
    for batch in plans:
        assert batch == sorted(batch) and batch == list(range(batch[0], batch[-1] + 1))  # consecutive
        first = starts[batch[0]]
        work = len(batch) * (400 - first)
        assert work <= 2000 or len(batch) == 1
        assert sum(starts[i] - first for i in batch) <= 0.25 * work
    assert plan_batches(starts, 400, max_batch=1) == [[i] for i in range(6)]
    assert plan_batches(starts, 400, max_positions=10**9, max_waste=10.0) == [list(range(6))]


def test_layer_windows():
    assert layer_windows(4) == [[0], [1], [2], [3]]
    assert layer_windows(4, window=3) == [[0, 1, 2], [1, 2, 3]]
    assert layer_windows(4, window=4) == [[0, 1, 2, 3]]
    assert layer_windows(5, window=2, stride=2) == [[0, 1], [2, 3], [4]]
    for bad in (0, 5, 1.5):
        with pytest.raises(SuppressionInputError, match="window"):
            layer_windows(4, window=bad)
    with pytest.raises(SuppressionInputError, match="stride"):
        layer_windows(4, window=1, stride=0)
