"""Fused (SDPA) attention against the eager attention bridge: same logits, suppression, samples, sentence attention.

The eager ``PositionEmbeddingsAttentionBridge`` forward (an explicit softmax TransformerLens checks against
Hugging Face) is the reference; the fused forward replaces its attention with one
``scaled_dot_product_attention`` call. Random models get sharpened queries and keys (x12) so that their
attention is far from uniform and suppression moves the output a lot: a mask that were ignored, or a
wrong key column hidden, would fail these tests (the controls check that suppression does matter).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import anchorlens as al
from anchorlens.errors import UnsupportedArchitectureError
from anchorlens.hooks.fused_attention import (
    FusedAttentionFallbackWarning,
    PatternUnavailableError,
    fused_attention,
    hide_keys,
    is_fused,
)
from anchorlens.hooks.key_suppression import key_suppression_hooks
from anchorlens.receivers.query_blocks import blocked_sentence_attention
from anchorlens.receivers.reduce import SentenceReducer, sentence_average
from anchorlens.resampling.samplers import LocalSampler, SampleRequest, SamplingParams

COT = (
    "We need 6 times 7. Six sevens are 7 + 7 + 7 + 7 + 7 + 7. That is 14, then 21, 28, 35 and 42. "
    "Wait, let me check with 6 * 7 directly. 6 * 7 = 42. So the answer is \\boxed{42}."
)


def sharpened(architecture: str, seed: int):
    """A random GQA model whose queries and keys are scaled up: peaked attention, so masks matter."""
    model = al.random_model(architecture, n_layers=3, d_model=96, n_heads=6, n_kv_heads=2, seed=seed,
                            check_cached_decoding=False)
    with torch.no_grad():
        for block in model.original_model.model.layers:
            block.self_attn.q_proj.weight.mul_(12.0)
            block.self_attn.k_proj.weight.mul_(12.0)
    return model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def organism(request, one_torch_thread):
    return sharpened(request.param, seed=3)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 2000, (1, 48), generator=torch.Generator().manual_seed(0))


def trace_for(model):
    return al.Trace.from_text(model, COT, prompt=al.problem_prompt(model, "What is 6 times 7?"))


def assert_kl_close(a, b, tol=1e-4):
    assert torch.equal(a.isnan(), b.isnan())
    assert (a.nan_to_num() - b.nan_to_num()).abs().max() <= tol


# ------------------------------------------------------------------------------------------------ forwards


@torch.inference_mode()
def test_forward_cache_and_padding_equal_eager(organism, tokens):
    eager = organism(tokens)
    _, cache = organism(tokens[:, :30], return_type="logits_and_cache")
    eager_cached = organism(tokens[:, 30:], past_key_values=cache)
    padded = tokens.expand(2, -1)
    mask = torch.ones(2, tokens.shape[1], dtype=torch.long)
    mask[0, :9] = 0  # left padding
    eager_padded = organism(padded, attention_mask=mask)
    with fused_attention(organism):
        fused = organism(tokens)
        _, cache = organism(tokens[:, :30], return_type="logits_and_cache")
        fused_cached = organism(tokens[:, 30:], past_key_values=cache)  # a prefix cache, 18 queries
        step = organism(tokens[:, 30:31], past_key_values=organism(tokens[:, :30], return_type="logits_and_cache")[1])
        fused_padded = organism(padded, attention_mask=mask)
    assert (fused - eager).abs().max() < 1e-4
    assert (fused_cached - eager[:, 30:]).abs().max() < 1e-4
    assert (step[:, 0] - eager[:, 30]).abs().max() < 1e-4  # one decoding step
    assert (eager_cached - eager[:, 30:]).abs().max() < 1e-4
    assert (fused_padded - eager_padded).abs().max() < 1e-4  # padding positions too (uniform, as eager)
    assert (eager_padded[0, 9:] - eager[0, 9:]).abs().max() > 1e-2  # control: padding did change the run


@torch.inference_mode()
def test_head_hooks_apply_and_state_is_restored(organism, tokens):
    cls_forward = type(organism.blocks[0].attn).forward
    impl = organism.original_model.config._attn_implementation
    hf_forward = type(organism.blocks[0].attn.original_component).forward
    with al.ablate_heads(organism, [(1, 2), (2, 5)]):  # hook_z
        eager_ablated = organism(tokens)
        with fused_attention(organism):
            assert is_fused(organism)
            fused_ablated = organism(tokens)
    assert (fused_ablated - eager_ablated).abs().max() < 1e-4
    assert (eager_ablated - organism(tokens)).abs().max() > 1e-3  # control: the ablation mattered
    with pytest.raises(RuntimeError, match="boom"), fused_attention(organism):
        raise RuntimeError("boom")
    assert not is_fused(organism)
    attn = organism.blocks[0].attn
    assert "forward" not in vars(attn) and type(attn).forward is cls_forward
    assert "forward" not in vars(attn.original_component) and type(attn.original_component).forward is hf_forward
    assert organism.original_model.config._attn_implementation == impl


@torch.inference_mode()
def test_pattern_hooks_are_refused_or_make_auto_fall_back(tiny_llama, tokens):
    hooks = key_suppression_hooks([(3, 7)], layers=[1])
    with pytest.raises(PatternUnavailableError, match="attention='eager'"), fused_attention(tiny_llama):
        tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks)
    with tiny_llama.hooks(fwd_hooks=hooks):
        with pytest.raises(PatternUnavailableError), fused_attention(tiny_llama, "sdpa"):
            pass
        with pytest.warns(FusedAttentionFallbackWarning, match="hook_attn_scores"), fused_attention(tiny_llama, "auto"):
            assert not is_fused(tiny_llama)
    eager = tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks)
    with fused_attention(tiny_llama):
        with fused_attention(tiny_llama, "eager"):  # an eager analysis inside a fused block runs eager
            assert not is_fused(tiny_llama)
            assert torch.equal(tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks), eager)
        assert is_fused(tiny_llama)
    assert not is_fused(tiny_llama)


def test_unsupported_architecture_is_refused(one_torch_thread):
    model = al.random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, check_cached_decoding=False,
                            check_fused=False)  # the layer reasons are read once: change the layer before
    model.blocks[1].attn.original_component.key_multiplier = 2.0  # a Falcon-H1 feature the bridge applies
    with pytest.raises(UnsupportedArchitectureError, match="key_multiplier"), fused_attention(model):
        pass
    with pytest.warns(FusedAttentionFallbackWarning), fused_attention(model, "auto"):
        assert not is_fused(model)


def test_hide_keys_needs_a_fused_block(tiny_llama):
    with pytest.raises(al.AnchorlensError, match="fused_attention"), hide_keys(tiny_llama, [(1, 3)], [0]):
        pass


# ------------------------------------------------------------------------------------------------ suppression


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fast", "naive"])
def test_suppression_mask_equals_eager_on_random_gqa(organism, method):
    trace = trace_for(organism)
    kwargs = dict(method=method, progress=False)
    eager = al.suppression_matrix(organism, trace, attention="eager", **kwargs)
    fused = al.suppression_matrix(organism, trace, attention="sdpa", **kwargs)
    assert_kl_close(fused.token_kl, eager.token_kl)
    assert eager.token_kl.nan_to_num().max() > 0.05  # control: suppression moves this model a lot
    subset = dict(layers=[1, 2], heads=[0, 4], **kwargs)  # a head subset crosses the GQA groups
    assert_kl_close(al.suppression_matrix(organism, trace, attention="sdpa", **subset).token_kl,
                    al.suppression_matrix(organism, trace, attention="eager", **subset).token_kl)


@pytest.mark.slow
def test_suppression_in_query_blocks_equals_eager(organism, monkeypatch):
    # Long suppressed forwards run SDPA a block of queries at a time over only the keys the block can see;
    # with blocks of 8 queries this trace (about 100 tokens) takes that path in every suppressed forward.
    from anchorlens.hooks import fused_attention as fused_module

    trace = trace_for(organism)
    eager = al.suppression_matrix(organism, trace, attention="eager", progress=False)
    monkeypatch.setattr(fused_module, "QUERY_BLOCK", 8)
    calls = []
    blocks = fused_module._causal_blocks
    monkeypatch.setattr(fused_module, "_causal_blocks", lambda *a: calls.append(1) or blocks(*a))
    for kwargs in ({}, dict(heads=[1, 5], max_batch=4, max_waste=1.0)):  # batched rows, a head subset
        fused = al.suppression_matrix(organism, trace, attention="sdpa", progress=False, **kwargs)
        reference = eager if not kwargs else al.suppression_matrix(
            organism, trace, attention="eager", progress=False, **kwargs)
        assert_kl_close(fused.token_kl, reference.token_kl)
    assert calls  # control: the blocked path ran


@pytest.mark.slow
def test_suppression_mask_equals_eager_on_smollm2(smol, one_torch_thread):
    trace = trace_for(smol)
    eager = al.suppression_matrix(smol, trace, attention="eager", progress=False)
    fused = al.suppression_matrix(smol, trace, attention="sdpa", progress=False)
    assert_kl_close(fused.token_kl, eager.token_kl)
    assert eager.token_kl.nan_to_num().max() > 0.1


# ------------------------------------------------------------------------------------------------ sampling


@pytest.mark.slow
def test_greedy_sampling_same_tokens_on_random_gqa(organism):
    requests = [SampleRequest("The capital of France is", seed=s) for s in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    eager = [c.text for c in LocalSampler(organism, progress=False, attention="eager").sample(requests, params)]
    fused = [c.text for c in LocalSampler(organism, progress=False, attention="sdpa").sample(requests, params)]
    assert fused == eager and len(set(eager[0])) > 3


@pytest.mark.slow
def test_greedy_and_seeded_generation_same_on_smollm2(smol, one_torch_thread):
    eager = al.generate_trace(smol, "What is 6 times 7?", max_new_tokens=48, temperature=0.0, attention="eager")
    fused = al.generate_trace(smol, "What is 6 times 7?", max_new_tokens=48, temperature=0.0, attention="sdpa")
    assert fused.cot == eager.cot and len(fused.cot) > 40
    requests = [SampleRequest("The capital of France is", seed=s) for s in range(4)]
    params = SamplingParams(max_tokens=24)
    sample = lambda attention: [c.text for c in LocalSampler(smol, progress=False, attention=attention).sample(requests, params)]
    assert sample("sdpa") == sample("eager")


def test_cpu_batch_defaults_are_unchanged(tiny_llama):
    # On CUDA both come from free memory (not measurable here); on a CPU they stay what they were.
    from anchorlens.resampling.samplers.local import default_rollout_batch
    from anchorlens.suppression.runner import DEFAULT_BATCH_POSITIONS, default_batch_positions

    assert default_batch_positions(tiny_llama, 1000, "cpu") == DEFAULT_BATCH_POSITIONS == 4096
    assert str(tiny_llama.cfg.device) == "cpu" and default_rollout_batch(tiny_llama, 1000) == 8
    with pytest.raises(al.AnchorlensError, match="batch_size"):
        LocalSampler(tiny_llama, batch_size=0)


def test_baseline_keeps_its_probabilities_on_a_cpu_only(tiny_llama):
    # A CPU trades memory for one exponential less per suppressed run; a GPU keeps half the memory instead.
    from anchorlens.suppression.runner import keep_baseline_probs, run_baseline

    tokens = torch.randint(0, tiny_llama.cfg.d_vocab, (1, 12), generator=torch.Generator().manual_seed(0))
    baseline = run_baseline(tiny_llama, tokens, 0.6)
    assert baseline.probs is not None and torch.equal(baseline.probs, baseline.log_probs.exp())
    assert keep_baseline_probs("cpu") and not keep_baseline_probs("cuda") and not keep_baseline_probs("cuda:1")
    with torch.inference_mode():
        logits = tiny_llama(tokens) + 0.5 * torch.randn(1, 12, tiny_llama.cfg.d_vocab, generator=torch.Generator().manual_seed(1))
        without = type(baseline)(baseline.log_probs, None, 0.6, probs=None)
        assert torch.equal(baseline.kl(3, logits[:, 3:]), without.kl(3, logits[:, 3:]))  # the same floats either way


# ------------------------------------------------------------------------------------------------ sentence attention


def test_blocked_reduction_equals_reducing_the_full_pattern():
    generator = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(2, 6, 40, 8, generator=generator) * 3, torch.randn(2, 3, 40, 8, generator=generator) * 3
    spans = [(2, 9), (9, 10), (12, 30), (30, 40)]
    expanded = keys.repeat_interleave(2, dim=1)  # GQA: each key head serves two consecutive query heads
    scores = (queries @ expanded.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(torch.ones(40, 40, dtype=torch.bool).triu(1), float("-inf"))
    expected = sentence_average(scores.softmax(-1), spans)
    for block_tokens in (1, 7, 512):
        got = blocked_sentence_attention(queries, keys, 8**-0.5, SentenceReducer(spans, 40, block_tokens=12),
                                         block_tokens=block_tokens)
        assert (got - expected).abs().max() < 1e-6


@pytest.mark.parametrize("include_prompt", [False, True])
def test_blocked_sentence_attention_equals_eager_on_random_gqa(organism, include_prompt):
    trace = trace_for(organism)
    eager = al.sentence_attention(organism, trace, include_prompt=include_prompt, attention="eager")
    blocked = al.sentence_attention(organism, trace, include_prompt=include_prompt, attention="sdpa", block_tokens=16)
    assert (blocked.matrix - eager.matrix).abs().max() < 1e-5
    uniform = torch.tril(torch.ones(trace.n_tokens, trace.n_tokens))
    uniform = sentence_average(uniform / uniform.sum(-1, keepdim=True), blocked.token_spans)
    assert (eager.matrix - uniform).abs().max() > 0.5 * uniform.max()  # control: far from uniform attention


@pytest.mark.slow
def test_blocked_sentence_attention_equals_eager_on_smollm2(smol, one_torch_thread):
    trace = trace_for(smol)
    eager = al.sentence_attention(smol, trace, include_prompt=True, attention="eager")
    blocked = al.sentence_attention(smol, trace, include_prompt=True, attention="sdpa", block_tokens=32)
    assert (blocked.matrix - eager.matrix).abs().max() < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto picks SDPA on SmolLM2 without a word
        auto = al.sentence_attention(smol, trace, include_prompt=True)
    assert (auto.matrix - eager.matrix).abs().max() < 1e-5
