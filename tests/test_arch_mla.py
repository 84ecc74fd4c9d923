"""DeepSeek-V3 (multi-head latent attention) on the fused path, against the Hugging Face model itself.

A small random ``DeepseekV3ForCausalLM`` (compressed queries and keys/values, ``[nope | rope]`` query/key heads
wider than the value heads, interleaved RoPE with yarn scaling so that the softmax scale carries
``mscale ** 2``, a mixture-of-experts layer) is booted as a TransformerBridge; an untouched deep copy of the
Hugging Face model, run with eager attention and explicit masks, is the reference. Queries and keys are
sharpened (x12) so attention is peaked and a mask that were ignored, or a wrong key hidden, would show; the
attention output (x8) and the unembedding (x20) are scaled up so that suppression moves the next-token
distributions far (KL up to about 0.5 rather than 1e-3, where a KL's rounding would dominate a relative bound).
"""

from __future__ import annotations

import copy

import pytest
import torch

import anchorlens as al
from anchorlens.hooks import fused_attention as fused_module
from anchorlens.hooks.fused_attention import (
    PatternUnavailableError,
    fused_attention,
    hide_keys,
    is_fused,
    unsupported_reasons,
)
from anchorlens.hooks.fused_mla import fused_mla_forward
from anchorlens.hooks.kv_cache_compat import install_kv_cache_shim
from anchorlens.hooks.kv_cache import prefix, reusable
from anchorlens.models import embedded_model_dir

COT = (
    "We need 6 times 7. Six sevens are 7 + 7 + 7 + 7 + 7 + 7. That is 14, then 21, 28, 35 and 42. "
    "Wait, let me check with 6 * 7 directly. 6 * 7 = 42. So the answer is \\boxed{42}."
)
TEMPERATURE = 0.6
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 512,
        "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32.0, "beta_slow": 1.0}


def random_deepseek_v3(seed: int = 0, n_layers: int = 3, rope_interleave: bool = True, sharpen: float = 12.0,
                       louder: float = 1.0, unembed: float = 1.0, family: str = "DeepseekV3", **sizes):
    """``(bridge, untouched Hugging Face copy)`` of a small random DeepSeek-V3 (layer 0 dense, the rest MoE).

    ``sizes`` override config fields (benchmarks/bench_mla.py builds a larger one); ``family="DeepseekV2"``
    builds a DeepSeek-V2 (complex-number RoPE) instead. Local until ``anchorlens.random_model("deepseek_v3")``
    lands; booted as ``random_model`` boots.
    """
    import transformers
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    fields = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=4,
        n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
        q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
        max_position_embeddings=2048, rope_parameters=dict(YARN),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    if family == "DeepseekV3":
        fields["rope_interleave"] = rope_interleave
    else:  # V2: greedy routing over all experts, RoPE as complex rotations
        fields.update(n_group=None, topk_group=None, topk_method="greedy")
    config = getattr(transformers, f"{family}Config")(**{**fields, **sizes})
    config.architectures = [f"{family}ForCausalLM"]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf_model = getattr(transformers, f"{family}ForCausalLM")(config).eval()
    with torch.no_grad():
        for layer in hf_model.model.layers:
            attn = layer.self_attn
            (attn.q_proj if config.q_lora_rank is None else attn.q_b_proj).weight.mul_(sharpen)
            attn.kv_a_proj_with_mqa.weight[config.kv_lora_rank:].mul_(sharpen)  # the shared rope key
            per_head = attn.kv_b_proj.weight.view(config.num_attention_heads, -1, config.kv_lora_rank)
            per_head[:, : config.qk_nope_head_dim].mul_(sharpen)  # each head's nope key, not its value
            attn.o_proj.weight.mul_(louder)
        hf_model.lm_head.weight.mul_(unembed)
    reference = copy.deepcopy(hf_model)  # booting rewires hf_model's modules into bridges
    bridge = TransformerBridge.boot_transformers(
        "random-deepseek_v3", hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32
    )
    bridge.eval()
    bridge.anchorlens_name = f"random-deepseek_v3-seed{seed}"
    install_kv_cache_shim(bridge)
    return bridge, reference


@pytest.fixture(scope="module")
def mla(one_torch_thread):
    return random_deepseek_v3(seed=3, louder=8.0, unembed=20.0)


@pytest.fixture(scope="module")
def trace(mla):
    model, _ = mla
    return al.Trace.from_text(model, COT, prompt=al.problem_prompt(model, "What is 6 times 7?"))


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 2000, (1, 40), generator=torch.Generator().manual_seed(0))


def relative(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def hf_allowed(n_tokens: int, hidden: tuple[int, int] | None = None) -> torch.Tensor:
    """Causal ``[query, key]`` mask (True: attend) with keys ``hidden`` removed from every query (docs/methods.md 1.6)."""
    allowed = torch.ones(n_tokens, n_tokens, dtype=torch.bool).tril()
    if hidden is not None:
        assert hidden[0] > 0  # every query keeps a visible key: no "blind query" case here
        allowed[:, hidden[0] : hidden[1]] = False
    return allowed


def additive(allowed: torch.Tensor) -> torch.Tensor:
    """An explicit 4D additive mask for the Hugging Face eager forward."""
    allowed = allowed.reshape((1,) * (4 - allowed.ndim) + tuple(allowed.shape))
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


@torch.inference_mode()
def hf_logits(reference, tokens, masks: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The Hugging Face model's logits, with layer ``l``'s attention mask replaced by ``masks[l]``."""
    handles = []
    for layer, mask in (masks or {}).items():
        def swap(module, args, kwargs, mask=mask):
            return args, {**kwargs, "attention_mask": mask}

        handles.append(reference.model.layers[layer].self_attn.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        return reference(tokens).logits
    finally:
        for handle in handles:
            handle.remove()


def hf_token_kl(reference, tokens, spans, layers, heads=None) -> torch.Tensor:
    """``[sentence, token]`` KL of the next-token distributions (temperature 0.6) from Hugging Face forwards, one
    per sentence, that hide the sentence's keys with an explicit mask in ``layers`` / ``heads``; shifted one token."""
    n_tokens, n_heads = tokens.shape[1], reference.config.num_attention_heads
    base = torch.log_softmax(hf_logits(reference, tokens)[0] / TEMPERATURE, -1)
    out = torch.full((len(spans), n_tokens), float("nan"))
    for j, span in enumerate(spans):
        allowed = hf_allowed(n_tokens, span).expand(n_heads, -1, -1).clone()
        if heads is not None:
            keep = torch.ones(n_heads, dtype=torch.bool)
            keep[heads] = False
            allowed[keep] = hf_allowed(n_tokens)
        mask = additive(allowed)
        suppressed = torch.log_softmax(hf_logits(reference, tokens, {layer: mask for layer in layers})[0] / TEMPERATURE, -1)
        kl = (base.exp() * (base - suppressed)).sum(-1).clamp_min(0.0)
        out[j, 1:] = kl[:-1]
    return out


def naive_sentence_attention(pattern: torch.Tensor, spans) -> torch.Tensor:
    """docs/methods.md 1.5: ``A_s[i, j]`` is the mean of ``A`` over (query in sentence ``i``, key in sentence ``j``)."""
    out = torch.zeros(*pattern.shape[:-2], len(spans), len(spans))
    for i, (a, b) in enumerate(spans):
        for j, (c, d) in enumerate(spans):
            out[..., i, j] = pattern[..., a:b, c:d].mean(dim=(-1, -2))
    return out


# ------------------------------------------------------------------------------------------------ forwards


def test_mla_is_supported_and_the_scale_is_yarns(mla):
    model, reference = mla
    assert unsupported_reasons(model) == []
    attn = reference.model.layers[0].self_attn
    assert attn.scaling != pytest.approx(attn.qk_head_dim**-0.5)  # control: mscale changes the scale here
    assert attn.qk_head_dim != attn.v_head_dim
    assert type(reference.model.layers[1].mlp).__name__ == "DeepseekV3MoE"


@torch.inference_mode()
def test_fused_logits_equal_hugging_face_and_eager(mla, tokens):
    model, reference = mla
    expected = hf_logits(reference, tokens)
    eager = model(tokens)
    padded = tokens.expand(2, -1)
    mask = torch.ones(2, tokens.shape[1], dtype=torch.long)
    mask[0, :9] = 0  # left padding
    expected_padded = reference(padded, attention_mask=mask).logits
    eager_padded = model(padded, attention_mask=mask)
    with fused_attention(model):
        assert is_fused(model) and vars(model.blocks[0].attn)["forward"].__func__ is fused_mla_forward
        fused = model(tokens)
        _, cache = model(tokens[:, :25], return_type="logits_and_cache")
        fused_cached = model(tokens[:, 25:], past_key_values=cache)  # a prefix cache, 15 queries
        _, cache = model(tokens[:, :25], return_type="logits_and_cache")
        step = model(tokens[:, 25:26], past_key_values=cache)  # one decoding step
        fused_padded = model(padded, attention_mask=mask)
    assert relative(eager, expected) < 1e-4
    assert relative(fused, expected) < 1e-4
    assert relative(fused_cached, expected[:, 25:]) < 1e-4
    assert relative(step[:, 0], expected[:, 25]) < 1e-4
    assert relative(fused_padded[:, 9:], expected_padded[:, 9:]) < 1e-4
    assert relative(fused_padded, eager_padded) < 1e-4  # padding positions too (uniform attention, as eager)
    assert relative(expected_padded[0, 9:], expected[0, 9:]) > 1e-2  # control: padding changed the run
    assert not is_fused(model) and "forward" not in vars(model.blocks[0].attn)


@pytest.mark.parametrize("variant", [
    dict(rope_interleave=False),  # RoPE on halves
    dict(q_lora_rank=None),  # uncompressed queries (q_proj), as DeepSeek-V2-Lite
    dict(family="DeepseekV2"),  # complex-number RoPE
])
@torch.inference_mode()
def test_other_mla_variants_equal_hugging_face(one_torch_thread, tokens, variant):
    model, reference = random_deepseek_v3(seed=5, n_layers=2, **variant)
    assert unsupported_reasons(model) == []
    expected = hf_logits(reference, tokens)
    with fused_attention(model), hide_keys(model, [(5, 12)], layers=[1]):
        suppressed = model(tokens)
    with fused_attention(model):
        assert relative(model(tokens), expected) < 1e-4
    mask = additive(hf_allowed(tokens.shape[1], (5, 12)))
    assert relative(suppressed, hf_logits(reference, tokens, {1: mask})) < 1e-4


@torch.inference_mode()
def test_hooks_fire_with_the_eager_values_and_pattern_hooks_are_refused(mla, tokens):
    model, _ = mla
    names = ("hook_q_latent", "hook_kv_latent", "hook_rot_q", "hook_rot_k", "hook_q", "hook_k", "hook_v", "hook_z")
    wanted = lambda name: name.startswith("blocks.1.attn.") and name.rsplit(".", 1)[-1] in names  # noqa: E731
    _, eager = model.run_with_cache(tokens, names_filter=wanted)
    with fused_attention(model):
        _, fused = model.run_with_cache(tokens, names_filter=wanted)
    assert sorted(fused.keys()) == sorted(eager.keys()) and len(eager.keys()) == len(names)
    for name in eager.keys():
        assert relative(fused[name], eager[name]) < 1e-5, name
    # An edit at hook_z applies on the fused path too. (Not ablate_heads: TransformerLens 4.3 splits MLA's hook_z
    # into cfg.d_head = qk_rope_head_dim wide "heads", 6 x 8 here for 4 value heads of 12.)
    edits = [("blocks.1.attn.hook_z", lambda z, hook: z * 0.25), ("blocks.2.attn.hook_v", lambda v, hook: -v)]
    with model.hooks(fwd_hooks=edits):
        edited = model(tokens)
        with fused_attention(model):
            assert relative(model(tokens), edited) < 1e-4
    assert relative(edited, model(tokens)) > 1e-3  # control: the edits mattered
    with pytest.raises(PatternUnavailableError), fused_attention(model):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda p, hook: None)])


@torch.inference_mode()
def test_sdpa_runs_a_fused_kernel_not_the_quadratic_math_one(mla, tokens, monkeypatch):
    # Keys [nope | rope] are wider than values; SDPA takes such shapes only in its math kernel, which builds the
    # [query, key] matrix. The fused forward pads values to the key width, so a fused kernel runs instead.
    from torch.nn.attention import SDPBackend

    model, _ = mla
    sdpa = torch.nn.functional.scaled_dot_product_attention
    chosen = []

    def recording(q, k, v, attn_mask=None, is_causal=False, scale=None, **kwargs):
        chosen.append(torch._fused_sdp_choice(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale))
        unpadded = v[..., : model.blocks[0].attn.original_component.v_head_dim]
        chosen.append(("unpadded", torch._fused_sdp_choice(q, k, unpadded, attn_mask=attn_mask, is_causal=is_causal)))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    with fused_attention(model):
        model(tokens)
        with hide_keys(model, [(5, 12)], layers=range(3)):
            model(tokens)
    fused_choices = [c for c in chosen if not isinstance(c, tuple)]
    assert len(fused_choices) == 6 and SDPBackend.MATH.value not in fused_choices
    assert {c[1] for c in chosen if isinstance(c, tuple)} == {SDPBackend.MATH.value}  # control: unpadded would


# ------------------------------------------------------------------------------------------------ suppression


@torch.inference_mode()
def test_hide_keys_equals_hugging_face_with_an_explicit_mask(mla, tokens):
    model, reference = mla
    n_tokens = tokens.shape[1]
    ranges = [(5, 12), (20, 31)]
    with fused_attention(model), hide_keys(model, ranges, layers=range(3)):
        fused = model(tokens.expand(2, -1))
    with fused_attention(model), hide_keys(model, [(5, 12)], layers=[1], heads=[0, 3]):
        subset = model(tokens)
    for row, span in enumerate(ranges):
        mask = additive(hf_allowed(n_tokens, span))
        expected = hf_logits(reference, tokens, {layer: mask for layer in range(3)})
        assert relative(fused[row], expected[0]) < 1e-4
        assert relative(expected, hf_logits(reference, tokens)) > 1e-2  # control: the suppression mattered
    per_head = hf_allowed(n_tokens).expand(4, -1, -1).clone()
    per_head[[0, 3]] = hf_allowed(n_tokens, (5, 12))
    assert relative(subset, hf_logits(reference, tokens, {1: additive(per_head)})) < 1e-4


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_suppression_matrix_equals_hugging_face_masks(mla, trace, method):
    model, reference = mla
    result = al.suppression_matrix(model, trace, attention="sdpa", method=method, progress=False)
    expected = hf_token_kl(reference, trace.tokens(), trace.token_spans, layers=range(3))
    assert torch.equal(result.token_kl.isnan(), expected.isnan())
    assert relative(result.token_kl.nan_to_num(), expected.nan_to_num()) < 1e-4
    assert expected.nan_to_num().max() > 0.05  # control: suppression moves the distributions


def test_suppression_subsets_and_query_blocks_equal_hugging_face(mla, trace, monkeypatch):
    # Blocks of 8 queries: every suppressed forward of this trace takes the blocked SDPA path.
    model, reference = mla
    monkeypatch.setattr(fused_module, "QUERY_BLOCK", 8)
    calls = []
    blocks = fused_module._causal_blocks
    monkeypatch.setattr(fused_module, "_causal_blocks", lambda *a: calls.append(1) or blocks(*a))
    result = al.suppression_matrix(model, trace, layers=[0, 2], heads=[1, 2], attention="sdpa", progress=False,
                                   max_batch=4, max_waste=1.0)  # batched rows over one prefix
    expected = hf_token_kl(reference, trace.tokens(), trace.token_spans, layers=[0, 2], heads=[1, 2])
    assert relative(result.token_kl.nan_to_num(), expected.nan_to_num()) < 1e-4
    assert calls  # control: the blocked path ran


@torch.inference_mode()
def test_the_bridge_cache_holds_full_keys_and_values_and_serves_prefix_reuse(mla, tokens):
    # The bridge caches per-head keys [nope | rope] and values (what prefix reuse slices), unlike Hugging Face's
    # own DeepSeek-V3, which caches the compressed latent and the shared rope key.
    model, reference = mla
    attn = reference.model.layers[0].self_attn
    n_heads, n_tokens = attn.num_heads, tokens.shape[1]
    with fused_attention(model):
        _, cache = model(tokens, return_type="logits_and_cache")
        assert reusable(cache, n_tokens)
        for layer in cache.layers:
            assert layer.keys.shape == (1, n_heads, n_tokens, attn.qk_head_dim)
            assert layer.values.shape == (1, n_heads, n_tokens, attn.v_head_dim)
        continued = model(tokens[:, 17:].expand(3, -1), past_key_values=prefix(cache, 17, 3))
    expected = hf_logits(reference, tokens)
    for row in range(3):
        assert relative(continued[row], expected[0, 17:]) < 1e-4
    hf_cache = reference(tokens, use_cache=True).past_key_values
    assert hf_cache.layers[0].keys.shape == (1, 1, n_tokens, attn.kv_lora_rank)


# ------------------------------------------------------------------------------------------------ sentence attention


@pytest.mark.parametrize("include_prompt", [False, True])
def test_blocked_sentence_attention_equals_hugging_face_attentions(mla, trace, include_prompt):
    model, reference = mla
    blocked = al.sentence_attention(model, trace, include_prompt=include_prompt, attention="sdpa", block_tokens=16)
    with torch.inference_mode():
        patterns = torch.stack(reference(trace.tokens(), output_attentions=True).attentions)[:, 0]
    expected = naive_sentence_attention(patterns, blocked.token_spans)
    assert blocked.matrix.shape == expected.shape == (3, 4, len(blocked.token_spans), len(blocked.token_spans))
    assert relative(blocked.matrix, expected) < 1e-4
    eager = al.sentence_attention(model, trace, include_prompt=include_prompt, attention="eager")
    assert relative(eager.matrix, expected) < 1e-4
    causal = torch.tril(torch.ones(trace.n_tokens, trace.n_tokens))
    uniform = naive_sentence_attention(causal / causal.sum(-1, keepdim=True), blocked.token_spans)
    assert (expected - uniform).abs().max() > 0.5 * uniform.max()  # control: far from uniform attention
