"""Streamed sentence flow (no [tokens, tokens] array) against the full token-level computation.

Ground truth: ``information_flow`` (itself tested against the float64 naive definition in
test_flow.py) aggregated by ``sentence_flow(..., flow=full)``: its sentence matrix and the token
influence of the chosen position, summed per sentence.
"""

from __future__ import annotations

import pytest
import torch

from anchorlens import Trace, random_model
from anchorlens.flow import information_flow, sentence_flow
from anchorlens.flow.information_flow import FlowInputError

COT = ("We start here. This is the anchor of it. Then more words follow, one after another. Let me check: "
       "6 * 7 = 42, and 42 / 7 = 6. So we end with 42, which is the answer. Yes, that is it.")


def _compare(model, trace, positions, block_tokens, checkpoint_every=None, tol=1e-5, distance="l2"):
    full = information_flow(model, trace, distance=distance, keep_heads=False)
    for position in positions:
        expected = sentence_flow(model, trace, distance=distance, flow=full, position=position)
        streamed = sentence_flow(model, trace, distance=distance, position=position, block_tokens=block_tokens,
                                 checkpoint_every=checkpoint_every)
        torch.testing.assert_close(streamed.matrix, expected.matrix, atol=tol, rtol=tol)
        torch.testing.assert_close(streamed.to_answer, expected.to_answer, atol=tol, rtol=tol)
        assert streamed.to_answer.abs().sum() > 0.1 and streamed.matrix.abs().sum() > 0.1  # not vacuous
        assert streamed.distance == distance and streamed.sentences == expected.sentences


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("checkpoint_every", [1, 2, None])
def test_streamed_sentence_flow_equals_full_flow_on_gqa_models(architecture, checkpoint_every, one_torch_thread):
    model = random_model(architecture, n_layers=3, d_model=96, n_heads=6, n_kv_heads=2, seed=3)
    trace = Trace.from_text(model, COT, check_length=False)
    assert trace.n_tokens > 4 * 9  # block of 9 rows: several blocks per layer
    _compare(model, trace, positions=[-1, 5, trace.n_tokens // 2, trace.token_spans[2][1] - 1], block_tokens=9,
             checkpoint_every=checkpoint_every)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_streamed_l1_sentence_flow_equals_full_flow(architecture, one_torch_thread):
    model = random_model(architecture, n_layers=2, d_model=96, n_heads=6, n_kv_heads=3, seed=4)
    trace = Trace.from_text(model, COT, check_length=False)
    _compare(model, trace, positions=[-1, trace.n_tokens // 2], block_tokens=11, checkpoint_every=1, distance="l1")


@pytest.mark.slow
def test_streamed_sentence_flow_equals_full_flow_on_smollm2(smol, one_torch_thread):
    trace = Trace.from_text(smol, COT * 2)
    assert trace.n_tokens > 100
    _compare(smol, trace, positions=[-1, trace.n_tokens // 3], block_tokens=32)


def test_streamed_sentence_flow_refuses_bad_positions(tiny_llama):
    trace = Trace.from_text(tiny_llama, COT, check_length=False)
    with pytest.raises(FlowInputError, match="out of range"):
        sentence_flow(tiny_llama, trace, distance="l2", position=trace.n_tokens)
    with pytest.raises(FlowInputError, match="distance"):
        sentence_flow(tiny_llama, trace, distance="cosine")
