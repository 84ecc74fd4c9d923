"""Reasoning vs base: two models with one tokenizer on the same traces; a clear error when they differ."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from anchorlens import Trace, TokenizerMismatchError, random_model
from anchorlens.receivers import ModelComparison, compare_models, planted_receiver_model
from test_receivers_organism import FILLER, organism_trace


@pytest.fixture(scope="module")
def pair():
    # "reasoning" model: a sharp planted receiver head; "base": the same architecture, nothing planted
    return planted_receiver_model(), random_model("llama", n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, seed=7)


@pytest.mark.slow
def test_the_model_with_a_receiver_head_is_more_kurtotic(pair, tmp_path):
    reasoning, base = pair
    traces = [organism_trace(reasoning, at) for at in (3, 7)]
    comparison = compare_models(reasoning, base, traces, top_k=2, progress=False)
    assert comparison.heads_a.heads[0] == (1, 3)
    assert comparison.heads_a.kurtosis[1, 3] > torch.nan_to_num(comparison.heads_b.kurtosis, nan=-9).max() + 2
    summary = comparison.kurtosis_summary()
    assert summary[f"mean_kurtosis[{comparison.names[0]}]"] > summary[f"mean_kurtosis[{comparison.names[1]}]"]
    assert comparison.agreement.shape == (2,) and torch.all(comparison.agreement.abs() <= 1)
    frame = comparison.to_dataframe()
    assert frame[f"top_sentence[{comparison.names[0]}]"].tolist() == [3, 7]
    assert comparison.plot() is not None
    loaded = ModelComparison.load(comparison.save(tmp_path / "comparison"))
    assert loaded.names == comparison.names and loaded.heads_b.heads == comparison.heads_b.heads
    torch.testing.assert_close(loaded.agreement, comparison.agreement, equal_nan=True)


@pytest.mark.slow
def test_a_model_compared_with_itself_agrees_perfectly(pair):
    reasoning, _ = pair
    traces = [organism_trace(reasoning, 5)]
    comparison = compare_models(reasoning, reasoning, traces, top_k=3, progress=False)
    assert comparison.agreement[0] == pytest.approx(1.0)


@pytest.mark.slow
def test_different_tokenizers_are_refused(pair):
    reasoning, _ = pair
    other = random_model("llama", n_layers=2, d_model=32, n_heads=2, check_attention_edits=False)
    assert other.tokenizer is not reasoning.tokenizer
    other.tokenizer.add_tokens(["<an_extra_token>"])  # one more token: no longer the same tokenizer
    trace = Trace.from_text(reasoning, " ".join(FILLER))
    with pytest.raises(TokenizerMismatchError, match="tokenizers differ"):
        compare_models(reasoning, other, [trace], top_k=1, progress=False)
