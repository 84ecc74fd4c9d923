"""Every family ``random_model`` builds, against the Hugging Face model itself: logits and sentence attention.

Each family's small random model (2 layers, 16-token sliding windows where the family has them, mixed with
full layers) is sharpened before it is booted (queries and keys scaled, gpt-oss's sinks made large, Gemma 2's
softcap made to bite), and an untouched copy of the Hugging Face model is kept. The fused (SDPA) forward must
give that copy's logits on a sequence much longer than the windows, and ``sentence_attention`` (fused,
blocked) must equal the copy's own eager ``output_attentions`` reduced to sentences by a naive loop written
from docs/methods.md 1.5 (the plain mean over each pair of sentences' query and key tokens). Controls check
that each family's feature (windows, sinks, softcap) changes the Hugging Face output, so a fused forward that
ignored it would fail.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import anchorlens as al
from anchorlens.errors import UnsupportedArchitectureError
from anchorlens.hooks import fused_attention as fa
from anchorlens.hooks.fused_attention import FusedAttentionFallbackWarning, fused_attention, hide_keys
from anchorlens.hooks.key_suppression import key_suppression_hooks
from anchorlens.random_models import FAMILIES

FUSED_FAMILIES = list(FAMILIES)  # DeepSeek-V3's latent attention: hooks/fused_mla.py
WINDOWED = ("mistral", "olmo3", "gemma2", "gemma3", "gpt_oss")
COT = (
    "We need 6 times 7. Six sevens are 7 + 7 + 7 + 7 + 7 + 7. That is 14, then 21, 28, 35 and 42. "
    "Wait, let me check with 6 * 7 directly. 6 * 7 = 42. Good, that matches. So the answer is \\boxed{42}."
)
SOFTCAP = 2.0  # Gemma 2's real 50 barely touches a small random model's scores


def sharpen(hf) -> None:
    """Peaked attention (queries and keys x4 through the projection or the QK norm), large sinks."""
    generator = torch.Generator().manual_seed(0)
    for layer in hf.model.layers:
        attn = layer.self_attn
        if hasattr(attn, "q_norm"):
            for norm in (attn.q_norm, attn.k_norm):
                if "Gemma" in type(norm).__name__:  # Gemma's RMSNorm multiplies by (1 + weight)
                    norm.weight.fill_(3.0)
                else:
                    norm.weight.mul_(4.0)
        elif hasattr(attn, "qkv_proj"):  # Phi-3: rows [queries | keys | values]
            n_qk = (attn.config.num_attention_heads + attn.config.num_key_value_heads) * attn.head_dim
            attn.qkv_proj.weight[:n_qk].mul_(4.0)
        elif getattr(attn, "q_proj", None) is None:  # DeepSeek-V3: queries through a low-rank pair
            attn.q_b_proj.weight.mul_(16.0)
        else:
            attn.q_proj.weight.mul_(4.0)
            attn.k_proj.weight.mul_(4.0)
        if getattr(attn, "sinks", None) is not None:
            attn.sinks.copy_(torch.randn(attn.sinks.shape, generator=generator) * 2.0 + 1.0)


def build(family: str, seed: int = 1):
    """``(bridge, untouched Hugging Face copy)`` of a sharpened small random ``family`` model."""
    kept = []

    def edit(hf):
        sharpen(hf)
        kept.append(copy.deepcopy(hf).eval())

    overrides = {"attn_logit_softcapping": SOFTCAP} if family == "gemma2" else None
    model = al.random_model(family, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=seed,
                            config_overrides=overrides, edit_weights=edit)
    return model, kept[0]


@pytest.fixture(scope="module")
def built(one_torch_thread):
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build(family)
        return cache[family]

    return get


def tokens_for(n: int = 300):
    return torch.randint(0, 2000, (1, n), generator=torch.Generator().manual_seed(0))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


# ------------------------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("family", FUSED_FAMILIES)
@torch.inference_mode()
def test_fused_logits_equal_hugging_face(built, family):
    model, reference = built(family)
    tokens = tokens_for(300)  # > 2 query blocks (128) and far past the 16-token windows
    expected = reference(tokens).logits
    with fused_attention(model, "sdpa"):
        fused = model(tokens)
    assert relative(fused, expected) <= 1e-4
    assert vars(model)["_anchorlens_fused_verdict"] == ""  # the check at load passed


@pytest.mark.parametrize("family", WINDOWED)
@torch.inference_mode()
def test_controls_each_feature_changes_the_output(built, family):
    """Windows, sinks and softcapping each move the Hugging Face logits: ignoring one would fail the tests."""
    _, reference = built(family)
    tokens = tokens_for(120)
    base = reference(tokens).logits
    changed = []
    if family in WINDOWED:
        plain = copy.deepcopy(reference)
        plain.config.sliding_window = 10**6
        for layer in plain.model.layers:
            if getattr(layer.self_attn, "sliding_window", None) is not None:
                layer.self_attn.sliding_window = 10**6
        changed.append(relative(plain(tokens).logits, base))
    if family == "gpt_oss":
        plain = copy.deepcopy(reference)
        for layer in plain.model.layers:
            layer.self_attn.sinks.fill_(-1e4)
        changed.append(relative(plain(tokens).logits, base))
    if family == "gemma2":
        plain = copy.deepcopy(reference)
        for layer in plain.model.layers:
            layer.self_attn.attn_logit_softcapping = None
        changed.append(relative(plain(tokens).logits, base))
    assert min(changed) > 1e-2


# --------------------------------------------------------------------------------------- sentence attention


def naive_sentence_matrix(pattern: torch.Tensor, spans) -> torch.Tensor:
    """docs/methods.md 1.5: ``A_s[i, j]`` = the mean of ``A`` over (query token of sentence i, key token of j)."""
    n = len(spans)
    out = torch.zeros(pattern.shape[0], n, n, dtype=torch.float64)
    for i, (qa, qb) in enumerate(spans):
        for j, (ka, kb) in enumerate(spans):
            out[:, i, j] = pattern[:, qa:qb, ka:kb].double().mean(dim=(-1, -2))
    return out


@pytest.mark.parametrize("family", FUSED_FAMILIES)
@torch.inference_mode()
def test_sentence_attention_equals_hugging_face_eager(built, family):
    model, reference = built(family)
    trace = al.Trace.from_text(model, COT, prompt=al.problem_prompt(model, "What is 6 times 7?"))
    assert trace.n_tokens > 3 * 16  # longer than the sliding windows
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedAttentionFallbackWarning)  # (c): no fallback on any family
        attention = al.sentence_attention(model, trace, include_prompt=True, attention="auto", block_tokens=8)
    out = reference(trace.tokens("cpu"), output_attentions=True)
    sentences = [tuple(span) for span in trace.token_spans]
    spans = [(0, min(trace.prompt_token_end, sentences[0][0]))] + sentences  # the prompt counts as sentence 0
    expected = torch.stack([naive_sentence_matrix(layer[0], spans) for layer in out.attentions])
    assert attention.matrix.shape == expected.shape
    assert relative(attention.matrix, expected) <= 1e-4


@pytest.mark.parametrize("family", ["gpt_oss", "gemma3", "gemma2", "olmo3"])
@torch.inference_mode()
def test_hidden_keys_equal_eager_suppression(built, family):
    """Suppression's fused mask on window, sink and softcap layers, in query blocks: the eager bridge's result.

    The hidden span (10 tokens) is shorter than the 16-token windows: a longer one would leave the queries
    inside it with no visible key on window layers, where the eager and fused conventions differ (suppression's
    business, not attention's).
    """
    model, _ = built(family)
    tokens = tokens_for(300)
    layers = range(model.cfg.n_layers)
    eager = model.run_with_hooks(tokens, fwd_hooks=key_suppression_hooks([(200, 210)], layers))
    with fused_attention(model, "sdpa"), hide_keys(model, [(200, 210)], layers):
        fused = model(tokens)
    plain = model(tokens)
    assert relative(fused, eager) <= 1e-4
    assert relative(plain, eager) > 1e-3  # suppression matters


@pytest.mark.parametrize("family", ["gpt_oss", "gemma3", "gemma2", "phi3"])
@torch.inference_mode()
def test_fused_cached_decoding_equals_hugging_face(built, family):
    """A fused forward over a prefix past the window, then tokens one at a time from the KV cache."""
    model, reference = built(family)
    tokens = tokens_for(40)
    expected = reference(tokens).logits[:, 29:]
    with fused_attention(model, "sdpa"):
        logits, cache = model(tokens[:, :30], return_type="logits_and_cache")
        steps = [logits[:, -1:]]
        for position in range(30, 40):
            logits, cache = model(tokens[:, position:position + 1], past_key_values=cache, return_type="logits_and_cache")
            steps.append(logits[:, -1:])
    assert relative(torch.cat(steps, dim=1), expected) <= 1e-4


# ------------------------------------------------------------------------------------------- load checks


@torch.inference_mode()
def test_load_check_refuses_a_fused_forward_that_drifts(built, monkeypatch):
    """A fused forward that stopped matching (here: sinks ignored) is caught at load, by family, not trusted."""
    monkeypatch.setattr(fa, "scoring_features", lambda hf_attn: {})
    with pytest.warns(FusedAttentionFallbackWarning, match="GptOssForCausalLM"):
        model, _ = build("gpt_oss", seed=2)
    assert "GptOssForCausalLM" in vars(model)["_anchorlens_fused_verdict"]
    with pytest.raises(UnsupportedArchitectureError, match="differ from the eager"):
        fa.resolve_attention(model, "sdpa")
    with pytest.warns(FusedAttentionFallbackWarning):
        assert fa.resolve_attention(model, "auto") == "eager"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_boots_small_with_its_features(family, one_torch_thread):
    model = al.random_model(family, check_attention_edits=False, check_cached_decoding=False, check_fused=False)
    config = model.original_model.config
    assert config.architectures == [type(model.original_model).__name__]
    windows = [getattr(b.attn.original_component, "sliding_window", None) for b in model.blocks]
    if family in ("olmo3", "gemma2", "gemma3", "gpt_oss"):
        assert windows == [16, None]  # sliding and full layers mixed, windows shorter than test traces
    elif family == "mistral":
        assert config.sliding_window == 16  # every layer
    else:
        assert getattr(config, "sliding_window", None) is None


def test_unknown_family_and_size_are_clear_errors():
    with pytest.raises(al.errors.AnchorlensError, match="choose one of"):
        al.random_model("falcon")
    with pytest.raises(al.errors.AnchorlensError, match="size must be"):
        al.random_model("qwen3", size="huge")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_real_size_configs(family, tokenizer):
    """``size="real"`` gives the released model's shape (config only: the weights would be gigabytes)."""
    from anchorlens.random_models import REAL_SIZES, random_config

    config, model_class = random_config(family, tokenizer, size="real")
    real = REAL_SIZES[family]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        real["n_layers"], real["d_model"], real["n_heads"])
    assert config.architectures == [model_class.__name__]
    if "sliding_window" in real:
        assert config.sliding_window == real["sliding_window"]
