"""Attention suppression on real models: the hook's effect, fast == naive, SmolLM2 recall, bad input, results."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from anchorlens import (
    LayerSuppression,
    SuppressionInputError,
    SuppressionMatrix,
    TokenizerMismatchError,
    Trace,
    suppression_by_layer,
    suppression_matrix,
)
from anchorlens.hooks.key_suppression import key_suppression_hooks
from anchorlens.hooks.kv_cache import forward_with_cache, prefix
from anchorlens.suppression.runner import plan_batches

ZORBLAT = (
    "My friend's name is Zorblat. I went to the market yesterday. The apples were fresh and red. "
    "I bought some bread too. What is my friend's name? It is Zorblat."
)
LONGER = (
    "We need the sum of 12 and 30. First, write down 12. Then add 30 to it. Ten plus thirty is forty. "
    "Two plus zero is two. So the sum is 42. Let me check by subtracting. 42 minus 30 is 12. "
    "That matches the first number. The answer is 42."
)


def close(a, b, atol=1e-4):
    torch.testing.assert_close(a, b, atol=atol, rtol=0, equal_nan=True)


# ----------------------------------------------------------------------------- the hook


def test_hook_removes_the_keys_and_renormalises_the_rest(tiny_llama):
    model = tiny_llama
    trace = Trace.from_text(model, LONGER)
    start, end = trace.token_spans[2]
    tokens = trace.tokens()
    _, base = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    captured = {}

    def grab(pattern, hook):
        captured["pattern"] = pattern.detach().clone()

    hooks = key_suppression_hooks([(start, end)], layers=[0], heads=[1, 3])
    model.run_with_hooks(tokens, fwd_hooks=hooks + [("blocks.0.attn.hook_pattern", grab)])
    before, after = base["blocks.0.attn.hook_pattern"][0], captured["pattern"][0]  # [head, query, key]
    # Heads 0 and 2 were left alone; layer 0 sees unchanged inputs, so they match exactly.
    close(after[[0, 2]], before[[0, 2]], atol=0)
    for head in (1, 3):
        assert after[head, :, start:end].abs().max() == 0
        later = before[head, end:]  # queries after the sentence: the rest renormalised
        expected = later / (1 - later[:, start:end].sum(-1, keepdim=True))
        expected[:, start:end] = 0
        close(after[head, end:], expected, atol=1e-5)
        close(after[head, :start], before[head, :start], atol=0)  # earlier queries never saw those keys


def test_prefix_cache_leaves_the_baseline_cache_untouched(tiny_qwen):
    tokens = Trace.from_text(tiny_qwen, LONGER).tokens()
    logits, cache = forward_with_cache(tiny_qwen, tokens)
    n = tokens.shape[1]
    keys = cache.layers[0].keys.clone()
    copy = prefix(cache, 10, rows=3)
    more = tiny_qwen(tokens[:, 10:].expand(3, -1), past_key_values=copy)
    assert cache.get_seq_length() == n and torch.equal(cache.layers[0].keys, keys)
    assert copy.get_seq_length() == n and copy.layers[0].keys.shape[0] == 3
    close(more[0], logits[0, 10:], atol=1e-4)


# ----------------------------------------------------------------------------- fast == naive


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_qwen"])
def test_fast_equals_naive_on_gqa_models(model_name, request):
    model = request.getfixturevalue(model_name)
    trace = Trace.from_text(model, LONGER, prompt="Question: what is 12 + 30?\n")
    for kwargs in ({}, {"layers": [1], "heads": [0, 3], "temperature": 1.0}):
        naive = suppression_matrix(model, trace, method="naive", progress=False, **kwargs)
        assert naive.kl[1:].nan_to_num(0).max() > 0  # the suppression does something
        for batching in ({}, {"max_batch": 64, "batch_positions": 250}, {"max_batch": 64, "max_waste": 100.0}):
            if batching:  # several sentences share a forward (and a prefix)
                plan = plan_batches([a for a, _ in trace.token_spans], trace.n_tokens, **rename(batching))
                assert max(map(len, plan)) > 1 and (len(plan) > 1 or "max_waste" in batching)
            fast = suppression_matrix(model, trace, progress=False, **kwargs, **batching)
            close(fast.token_kl, naive.token_kl)
            close(fast.kl, naive.kl)


def rename(batching: dict) -> dict:
    """suppression_matrix's batching arguments as plan_batches names them."""
    names = {"batch_positions": "max_positions", "max_batch": "max_batch", "max_waste": "max_waste"}
    return {names[k]: v for k, v in batching.items()}


@pytest.mark.slow
def test_fast_equals_naive_when_the_first_sentence_starts_at_position_0(tiny_llama):
    trace = Trace.from_text(tiny_llama, LONGER)
    assert trace.token_spans[0][0] == 1  # BOS first ...
    no_bos = dataclasses.replace(  # ... and the same trace without it
        trace,
        token_ids=trace.token_ids[1:],
        token_spans=[(a - 1, b - 1) for a, b in trace.token_spans],
        prompt_token_end=trace.prompt_token_end - 1,
    )
    naive = suppression_matrix(tiny_llama, no_bos, method="naive", progress=False)
    fast = suppression_matrix(tiny_llama, no_bos, progress=False)
    assert torch.isfinite(naive.kl.tril(-1)).all()
    close(fast.token_kl, naive.token_kl)


def test_suppressing_some_sentences_only(tiny_qwen):
    trace = Trace.from_text(tiny_qwen, LONGER)
    full = suppression_matrix(tiny_qwen, trace, progress=False)
    some = suppression_matrix(tiny_qwen, trace, sentences=torch.tensor([4, 1]), progress=False)
    close(some.kl[:, [1, 4]], full.kl[:, [1, 4]])
    others = [j for j in range(trace.n_sentences) if j not in (1, 4)]
    assert torch.isnan(some.kl[:, others]).all() and torch.isnan(some.token_kl[others]).all()
    assert some.edges().suppressed.isin([1, 4]).sum() == len(some.edges().dropna())


def test_smollm2_recall_depends_on_the_naming_sentence(smol):
    trace = Trace.from_text(smol, ZORBLAT)
    assert trace.sentence_texts()[0] == "My friend's name is Zorblat." and trace.n_sentences == 6
    fast = suppression_matrix(smol, trace, progress=False)
    recall = trace.n_sentences - 1
    row = fast.kl[recall, :recall]
    assert row.argmax().item() == 0, row
    # The name's own tokens carry the dependency: "bl" cannot be guessed without the first sentence.
    start, end = trace.token_spans[recall]
    assert fast.token_kl[0, start:end].max() > 5.0
    # Equal to the naive method (one full forward per sentence), also with several prefix batches.
    naive = suppression_matrix(smol, trace, method="naive", progress=False)
    close(fast.token_kl, naive.token_kl)
    close(fast.kl, naive.kl)
    batching = {"max_batch": 8, "batch_positions": 120, "max_waste": 1.0}
    plan = plan_batches([a for a, _ in trace.token_spans], trace.n_tokens, **rename(batching))
    assert len(plan) > 1 and max(map(len, plan)) > 1
    batched = suppression_matrix(smol, trace, progress=False, **batching)
    close(batched.token_kl, naive.token_kl)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gets_clear_errors(tiny_llama):
    model = tiny_llama
    trace = Trace.from_text(model, LONGER)
    with pytest.raises(SuppressionInputError, match="at least two sentences"):
        suppression_matrix(model, Trace.from_text(model, "Only one sentence here."))
    with pytest.raises(SuppressionInputError, match="empty"):
        suppression_matrix(model, trace, layers=[])
    with pytest.raises(SuppressionInputError, match=r"layers \[2\] are out of range"):
        suppression_matrix(model, trace, layers=[0, 2])
    with pytest.raises(SuppressionInputError, match="out of range"):
        suppression_matrix(model, trace, layers=[-1])
    with pytest.raises(SuppressionInputError, match=r"heads \[4\] are out of range.*0\.\.3"):
        suppression_matrix(model, trace, heads=[4])
    with pytest.raises(SuppressionInputError, match="empty"):
        suppression_matrix(model, trace, heads=[])
    with pytest.raises(SuppressionInputError, match="temperature"):
        suppression_matrix(model, trace, temperature=0)
    with pytest.raises(SuppressionInputError, match="method"):
        suppression_matrix(model, trace, method="quick")
    with pytest.raises(SuppressionInputError, match="window"):
        suppression_by_layer(model, trace, window=0)
    with pytest.raises(SuppressionInputError, match="at least two sentences"):
        suppression_by_layer(model, Trace.from_text(model, "Only one sentence here."))
    with pytest.raises(SuppressionInputError, match=r"sentences \[99\] are out of range"):
        suppression_matrix(model, trace, sentences=[0, 99])
    foreign = dataclasses.replace(trace, token_ids=trace.token_ids[:-1] + [10**6])
    with pytest.raises(TokenizerMismatchError, match="another model"):
        suppression_matrix(model, foreign)


# ----------------------------------------------------------------------------- result objects


def test_result_table_io_and_plots(tiny_qwen, tmp_path):
    trace = Trace.from_text(tiny_qwen, LONGER)
    result = suppression_matrix(tiny_qwen, trace, progress=False)
    n = trace.n_sentences
    assert isinstance(result, SuppressionMatrix) and result.kl.shape == (n, n)
    assert result.token_kl.shape == (n, trace.n_tokens)
    close(result.log_kl, torch.log(result.kl + 1e-9), atol=0)
    frame = result.to_dataframe()
    assert len(frame) == n * (n - 1) // 2 and (frame.suppressed < frame.target).all()
    edges = result.edges(top_k=5)
    assert list(edges.kl) == sorted(edges.kl, reverse=True) and len(edges) == 5
    centred = result.centred()
    assert centred[2:].nanmean(-1).abs().max() < 1e-4
    loaded = SuppressionMatrix.load(result.save(tmp_path / "matrix"))
    close(loaded.kl, result.kl, atol=0)
    close(loaded.token_kl, result.token_kl, atol=0)
    assert loaded.token_spans == result.token_spans and loaded.sentences == result.sentences
    assert loaded.layers == result.layers and loaded.heads is None and loaded.temperature == 0.6
    ax = result.plot()
    assert ax.get_title().startswith("Attention suppression")
    assert ax.images[0].get_array().mask[0, 0]  # diagonal blank
    assert result.plot(centre=False, log=False) is not None
    graph = result.plot_graph(top_k=4)
    assert len(graph.patches) == 4


def test_by_layer_result(tiny_llama, tmp_path):
    trace = Trace.from_text(tiny_llama, LONGER)
    by_layer = suppression_by_layer(tiny_llama, trace, window=1, heads=[0, 1], progress=False)
    assert isinstance(by_layer, LayerSuppression) and by_layer.kl.shape[0] == 2
    for w, layers in enumerate(by_layer.windows):
        direct = suppression_matrix(tiny_llama, trace, layers=layers, heads=[0, 1], method="naive", progress=False)
        close(by_layer.kl[w], direct.kl)
    summary = by_layer.summary()
    n = trace.n_sentences
    assert len(summary) == n * (n - 1) // 2
    assert list(summary.total_kl) == sorted(summary.total_kl, reverse=True)
    top = summary.iloc[0]
    profile = by_layer.kl[:, int(top.target), int(top.suppressed)]
    assert top.peak_layers == str(int(profile.argmax())) and top.total_kl == pytest.approx(float(profile.sum()))
    assert len(by_layer.layer_profile()) == 2
    assert len(by_layer.to_dataframe()) == 2 * n * (n - 1) // 2
    assert by_layer.plot(top_k=5) is not None
    path = by_layer.save(tmp_path / "layers")
    loaded = LayerSuppression.load(path)
    close(loaded.kl, by_layer.kl, atol=0)
    with pytest.raises(ValueError, match="not a SuppressionMatrix"):
        SuppressionMatrix.load(path)
    assert loaded.windows == by_layer.windows and loaded.heads == [0, 1]
    assert isinstance(by_layer.matrix(1), SuppressionMatrix)
