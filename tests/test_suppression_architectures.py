"""Suppression and the KV-cache paths on the families with sliding-window layers, against the Hugging Face model.

Small random Qwen3, OLMo-3, Gemma 3 and gpt-oss models whose sliding windows are much shorter than the trace,
with sliding and full layers mixed. The reference is the untouched Hugging Face model itself: per suppressed
sentence one plain forward with an explicit additive mask per layer type (causal, the layer's window, and the
sentence's key columns hidden from every query: docs/methods.md 1.6), and the KL computed here from the
definition. ``suppression_matrix`` (the fast method: the baseline's keys and values reused for each prefix)
must equal it within 1e-4 relative, with no ``SuppressionFallbackWarning`` (pyproject makes that an error).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from anchorlens import Trace, suppression_matrix
from anchorlens.hooks.kv_cache import forward_with_cache, reusable, sliding_windows
from anchorlens.suppression import SuppressionFallbackWarning
from sliding_models import FAMILIES, LAYER_TYPES, WINDOW, boot, hf_random

TEXT = (
    "Let x be 3. Then y is 4. So x plus y is 7. We check it: 3 + 4 = 7. "
    "Now double it. That gives 14. Is that right? Yes, 7 + 7 = 14. The answer is 14."
)
PROMPT = "Question: what is twice 3 plus 4?\n"
TEMPERATURE = 0.6


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, one_torch_thread):
    hf_model, tokenizer = hf_random(request.param)
    with torch.no_grad():  # peaked attention and sharp outputs: KLs far above float32 rounding (fused runs too)
        for layer in hf_model.model.layers:
            layer.self_attn.q_proj.weight.mul_(3)
            layer.self_attn.k_proj.weight.mul_(3)
        hf_model.lm_head.weight.mul_(8)
    reference = copy.deepcopy(hf_model)  # the bridge wraps (and may edit) hf_model; the reference stays untouched
    return request.param, reference, boot(hf_model, tokenizer, request.param)


def layer_masks(config, n_tokens: int, hidden: tuple[int, int] | None = None,
                blind: list | None = None) -> dict[str, torch.Tensor]:
    """Additive ``[1, 1, query, key]`` masks per layer type: causal, the window on sliding layers, and (when
    ``hidden`` is a half-open key range) those key columns hidden from every query, except that a query left
    with no key at all keeps its own (docs/methods.md 1.6); their count per layer type goes to ``blind``."""
    query = torch.arange(n_tokens)[:, None]
    key = torch.arange(n_tokens)[None, :]
    visible = {"full_attention": key <= query, "sliding_attention": (key <= query) & (key > query - WINDOW)}
    out = {}
    for kind, allowed in visible.items():
        if hidden is not None:
            allowed = allowed & ~((key >= hidden[0]) & (key < hidden[1]))
        nothing = ~allowed.any(-1, keepdim=True)
        allowed = allowed | (nothing & (key == query))
        if blind is not None:
            blind.append((kind, int(nothing.sum())))
        mask = torch.zeros(n_tokens, n_tokens).masked_fill(~allowed, torch.finfo(torch.float32).min)
        out[kind] = mask[None, None]
    return {kind: out[kind] for kind in set(config.layer_types)}


def reference_token_kl(hf_model, tokens, spans, blind: list | None = None) -> torch.Tensor:
    """``[suppressed sentence, token]`` KL from the definition: token ``t``'s distribution is the logits at
    ``t - 1``; KL(P_base || P_suppressed) at temperature 0.6 over the whole vocabulary, clipped at 0; tokens
    up to and including the suppressed sentence's first are 0 (nothing before it can change) and token 0 NaN."""
    n = tokens.shape[1]
    with torch.no_grad():
        base = hf_model(tokens, attention_mask=layer_masks(hf_model.config, n)).logits[0]
        base_lp = torch.log_softmax(base / TEMPERATURE, -1)
        out = torch.full((len(spans), n), float("nan"))
        for j, span in enumerate(spans):
            logits = hf_model(tokens, attention_mask=layer_masks(hf_model.config, n, span, blind)).logits[0]
            lp = torch.log_softmax(logits / TEMPERATURE, -1)
            kl = (base_lp.exp() * (base_lp - lp)).sum(-1).clamp_min(0)
            kl[: span[0]] = 0
            out[j, 1:] = kl[:-1]
    return out


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert torch.equal(actual.isnan(), expected.isnan())
    finite = ~expected.isnan()
    return ((actual[finite] - expected[finite]).abs().max() / expected[finite].abs().max()).item()


def test_the_models_have_windows_shorter_than_the_trace(family):
    """The premise: sliding layers whose window the trace far exceeds, and whose own cache keeps only the window
    (not reusable); the full-length cache anchorlens keeps instead is reusable and gives the model's logits."""
    name, reference, model = family
    trace = Trace.from_text(model, TEXT, prompt=PROMPT)
    tokens = trace.tokens()
    assert trace.n_tokens >= 4 * WINDOW and max(b - a for a, b in trace.token_spans) < WINDOW
    assert sliding_windows(model) == [WINDOW if kind == "sliding_attention" else None for kind in LAYER_TYPES]
    with torch.no_grad():
        own_logits, own = forward_with_cache(model, tokens, keep="window")
        full_logits, full = forward_with_cache(model, tokens, keep="full")
        expected = reference(tokens).logits
        causal_only = reference(tokens, attention_mask={kind: layer_masks(reference.config, trace.n_tokens)[
            "full_attention"] for kind in set(LAYER_TYPES)}).logits
    assert not reusable(own, trace.n_tokens)  # DynamicSlidingWindowLayer keeps WINDOW - 1 positions
    assert reusable(full, trace.n_tokens)
    torch.testing.assert_close(full_logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(own_logits, expected, rtol=1e-5, atol=1e-5)
    assert (causal_only - expected).abs().max() > 1e-3  # the windows change the output: they are tested


def test_suppression_matrix_equals_the_hf_model_with_explicit_masks(family):
    name, reference, model = family
    trace = Trace.from_text(model, TEXT, prompt=PROMPT)
    spans = [tuple(span) for span in trace.token_spans]
    expected = reference_token_kl(reference, trace.tokens(), spans)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SuppressionFallbackWarning)
        result = suppression_matrix(model, trace, method="fast", progress=False)
    assert expected[1:].nan_to_num(0).max() > 1e-3  # suppression does something to measure
    assert relative_error(result.token_kl, expected) < 1e-4, name
    from anchorlens.suppression.matrix import sentence_matrix

    assert relative_error(result.kl, sentence_matrix(expected, spans)) < 1e-4, name


def test_batched_suppression_reuses_one_prefix_for_several_sentences(family):
    """Several sentences per forward (a GPU's batching, forced here): each row hides its own sentence on top of
    the batch's shared prefix, still equal to the Hugging Face reference. Eager attention (``hook_attn_scores``
    hooks) here, ``"auto"`` above: both paths are checked once a family runs fused."""
    name, reference, model = family
    trace = Trace.from_text(model, TEXT, prompt=PROMPT)
    spans = [tuple(span) for span in trace.token_spans]
    chosen = [1, 2, 4, 6]
    expected = reference_token_kl(reference, trace.tokens(), [spans[j] for j in chosen])
    result = suppression_matrix(model, trace, sentences=chosen, max_batch=4, max_waste=100.0,
                                batch_positions=10_000, progress=False, attention="eager")
    assert relative_error(result.token_kl[chosen], expected) < 1e-4, name


@pytest.mark.parametrize("attention", ["eager", "auto"])
def test_a_sentence_that_fills_a_window_hides_no_future(family, attention):
    """A sentence of ``WINDOW`` tokens or more leaves some of its own queries no visible key in a sliding layer
    once it is hidden. Such a query keeps its own key (as at position 0 without a BOS); without that rule the
    softmax over all-minimum scores spreads over every key, future ones included (it did on OLMo-3 and Gemma 3;
    gpt-oss's sinks absorbed it). Both attention paths: a fused one must give each layer's window to
    ``key_suppression_mask`` as the eager hooks do."""
    name, reference, model = family
    long = "Then we add " + " plus ".join(str(k) for k in range(1, 12)) + " to get 66."
    trace = Trace.from_text(model, TEXT.replace("Now double it.", long), prompt=PROMPT)
    spans = [tuple(span) for span in trace.token_spans]
    longest = max(range(len(spans)), key=lambda j: spans[j][1] - spans[j][0])
    assert spans[longest][1] - spans[longest][0] > WINDOW
    chosen = [longest - 1, longest, longest + 1]
    blind: list = []
    expected = reference_token_kl(reference, trace.tokens(), [spans[j] for j in chosen], blind)
    assert dict(blind[2:4])["sliding_attention"] > 0 and dict(blind[2:4])["full_attention"] == 0
    result = suppression_matrix(model, trace, sentences=chosen, attention=attention, progress=False)
    assert relative_error(result.token_kl[chosen], expected) < 1e-4, name


# ------------------------------------------------------------------------------- every family of random_model

EVERY_FAMILY = ["llama", "qwen2", "mistral", "qwen3", "qwen3_moe", "olmo2", "olmo3", "gemma2", "gemma3", "gpt_oss",
                "phi3", "deepseek_v3"]


def sharpen_any(hf_model) -> None:
    """Peaked attention and sharp outputs on any family (queries x3 through whichever projection makes them)."""
    for layer in hf_model.model.layers:
        attn = layer.self_attn
        if getattr(attn, "q_proj", None) is not None:
            attn.q_proj.weight.mul_(3)
        elif getattr(attn, "q_b_proj", None) is not None:  # DeepSeek-V3: low-rank queries
            attn.q_b_proj.weight.mul_(6)
        else:  # Phi-3: joint [queries | keys | values] rows
            attn.qkv_proj.weight[: attn.config.num_attention_heads * attn.head_dim].mul_(3)
    hf_model.lm_head.weight.mul_(8)


def family_masks(config, n_tokens: int, hidden: tuple[int, int] | None):
    """What the Hugging Face model takes as explicit masks: one per layer type where the config has layer types,
    else one mask for every layer (the window where every layer slides, as Mistral's do)."""
    types = getattr(config, "layer_types", None)
    masks = layer_masks(config, n_tokens, hidden) if types else None
    if masks is not None:
        return masks
    plain = layer_masks(type("C", (), {"layer_types": ["full_attention", "sliding_attention"]}), n_tokens, hidden)
    return plain["sliding_attention"] if getattr(config, "sliding_window", None) else plain["full_attention"]


@pytest.mark.parametrize("name", EVERY_FAMILY)
def test_suppression_matrix_equals_the_hf_model_on_every_family(name, one_torch_thread):
    """The fast suppression matrix on every family ``random_model`` builds (fused attention, windows of
    ``WINDOW`` tokens where the family has them), against the untouched Hugging Face model with explicit masks."""
    from anchorlens import random_model

    kept = {}

    def edit(hf_model):
        sharpen_any(hf_model)
        kept["hf"] = copy.deepcopy(hf_model)

    model = random_model(name, sliding_window=WINDOW, edit_weights=edit, check_attention_edits=False,
                         check_cached_decoding=False)
    reference = kept["hf"]
    trace = Trace.from_text(model, TEXT, prompt=PROMPT)
    tokens, n = trace.tokens(), trace.n_tokens
    spans = [tuple(span) for span in trace.token_spans]
    chosen = [1, 3, 5]
    with torch.no_grad():
        base_lp = torch.log_softmax(reference(tokens, attention_mask=family_masks(reference.config, n, None)).logits[0]
                                    / TEMPERATURE, -1)
        expected = torch.full((len(chosen), n), float("nan"))
        for row, j in enumerate(chosen):
            lp = torch.log_softmax(reference(tokens, attention_mask=family_masks(reference.config, n, spans[j])).logits[0]
                                   / TEMPERATURE, -1)
            kl = (base_lp.exp() * (base_lp - lp)).sum(-1).clamp_min(0)
            kl[: spans[j][0]] = 0
            expected[row, 1:] = kl[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SuppressionFallbackWarning)
        result = suppression_matrix(model, trace, sentences=chosen, method="fast", progress=False)
    assert expected[:, 1:].nan_to_num(0).max() > 1e-2, name  # suppression does something to measure
    assert relative_error(result.token_kl[chosen], expected) < 1e-4, name
