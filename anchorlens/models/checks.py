"""The checks every loaded model passes: the dtype, float16's range, attention edits that take effect, and KV-cached
decoding equal to a full recomputation (fused attention is checked in ``hooks.fused_attention``)."""

from __future__ import annotations

import logging

import torch

from anchorlens.errors import CachedDecodingError, InputError, UnsupportedArchitectureError, UnsupportedDtypeError
from anchorlens.hooks.fused_attention import verify_fused_attention
from anchorlens.hooks.kv_cache_compat import install_kv_cache_shim
from anchorlens.versions import version_report

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
FLOAT16_HEADROOM = 16.0  # refuse float16 when activations come within this factor of its largest value


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a torch device that this machine has (None stays None), or an ``InputError`` saying which
    devices there are."""
    if device is None:
        return None
    have = "cpu" + (f", cuda:0..{torch.cuda.device_count() - 1}" if torch.cuda.is_available() else "")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device {str(device)!r} is not a device name: pass one of {have} (--device)") from None
    missing = (parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count())
               or parsed.type == "mps" and not torch.backends.mps.is_available())
    if missing:
        raise InputError(f"this machine has no device {str(device)!r}: pass one of {have} (--device), or leave "
                         "--device out to use a GPU if there is one")
    return parsed


def check_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``dtype`` (a torch dtype or its name; None: float32) as one of ``DTYPES``, or a clear error."""
    name = str(dtype or "float32").removeprefix("torch.")
    if name not in DTYPES:
        raise UnsupportedDtypeError(f"dtype {dtype!r} is not one of {DTYPES}")
    return getattr(torch, name)


@torch.inference_mode()
def verify_float16_range(model, text: str = "The capital of France is Paris. What is 6 times 7? Let me think.") -> None:
    """Refuse a float16 model whose residual stream, on a short text, is not finite or comes within
    ``FLOAT16_HEADROOM`` of float16's largest value (65504): longer texts would overflow it."""
    peak = [0.0]

    def track(tensor, hook):
        peak[0] = max(peak[0], float(tensor.float().abs().max()))

    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    logits = model.run_with_hooks(model.to_tokens(text), fwd_hooks=[(name, track) for name in names])
    limit = torch.finfo(torch.float16).max
    if not torch.isfinite(logits).all() or not peak[0] * FLOAT16_HEADROOM <= limit:
        raise UnsupportedDtypeError(
            f"{getattr(model, 'anchorlens_name', 'this model')} in float16: its residual stream reaches "
            f"{peak[0]:.3g} on a short text (float16 ends at {limit:.0f}; anchorlens wants {FLOAT16_HEADROOM:g}x "
            "headroom), so long traces would overflow. Load it in bfloat16 (--dtype bfloat16) or float32."
        )


def _check(bridge, check_attention_edits: bool, check_cached_decoding: bool, check_fused: bool = True) -> None:
    install_kv_cache_shim(bridge)
    if check_attention_edits:
        verify_attention_edits(bridge)
    if check_cached_decoding:
        verify_cached_decoding(bridge)
    if check_fused:
        verify_fused_attention(bridge)


@torch.inference_mode()
def verify_attention_edits(model) -> None:
    """Refuse a model on which edits at ``hook_attn_scores``, ``hook_pattern`` and ``hook_z`` have no effect.

    Some bridges fire ``hook_pattern`` after the Hugging Face attention already ran (reported for GPT-J);
    on those, suppression and ablation would silently measure nothing.
    """
    layer = model.cfg.n_layers - 1
    bos = model.tokenizer.bos_token_id
    tokens = torch.tensor([[bos if bos is not None else 0, 11, 12, 13, 14, 15]], device=model.cfg.device)
    baseline = model(tokens)

    def mask_key_1(scores, hook):
        scores[..., 1] = torch.finfo(scores.dtype).min
        return scores

    def move_pattern(pattern, hook):
        return torch.zeros_like(pattern).index_fill_(-1, torch.tensor([0], device=pattern.device), 1.0)

    def zero_z(z, hook):
        return torch.zeros_like(z)

    for hook_name, edit in (("hook_attn_scores", mask_key_1), ("hook_pattern", move_pattern), ("hook_z", zero_z)):
        try:
            edited = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.{hook_name}", edit)])
        except KeyError:  # TransformerLens: "Hook name ... does not exist on this model"
            raise UnsupportedArchitectureError(
                f"{getattr(model.cfg, 'model_name', 'this model')} ({type(model.original_model).__name__}) has no "
                f"attention hook blocks.{layer}.attn.{hook_name}: anchorlens's methods read and edit attention "
                "patterns; use a model with attention (Llama, Qwen2, Mistral, GPT-2, ...; docs/architectures.md)"
            ) from None
        if torch.allclose(edited, baseline, atol=1e-6):
            raise UnsupportedArchitectureError(
                f"editing blocks.{layer}.attn.{hook_name} does not change the output of "
                f"{getattr(model.cfg, 'model_name', 'this model')} ({type(model.original_model).__name__}): "
                "this architecture's attention is not routed through TransformerLens's hooks, so attention "
                "suppression and head ablation would measure nothing. Use a supported architecture "
                "(Llama, Qwen2, Mistral, GPT-2, ...) or load it with eager attention."
            )


@torch.inference_mode()
def verify_cached_decoding(model, n_prompt: int = 6, n_decoded: int = 4) -> None:
    """Refuse a model whose KV-cached decoding differs from recomputing the whole sequence.

    Runs ``n_prompt`` tokens with ``return_type="logits_and_cache"``, then feeds ``n_decoded`` more one at a
    time with that cache, and compares each step's logits (and the cache's length) with one full forward.
    This is what broke silently with transformers 5.24 on TransformerLens 4.3 (the cache stayed empty).
    """
    bos = model.tokenizer.bos_token_id
    ids = [bos if bos is not None else 0] + list(range(11, 11 + n_prompt + n_decoded - 1))
    tokens = torch.tensor([ids], device=model.cfg.device)
    full = model(tokens).float()
    logits, cache = model(tokens[:, :n_prompt], return_type="logits_and_cache")
    if cache is None:
        log.warning("%s returns no KV cache: cached decoding is not checked", type(model).__name__)
        return
    steps = [logits[:, -1]]
    lengths = [cache.get_seq_length()]
    for position in range(n_prompt, len(ids)):
        logits, cache = model(tokens[:, position : position + 1], past_key_values=cache, return_type="logits_and_cache")
        steps.append(logits[:, -1])
        lengths.append(cache.get_seq_length())
    cached = torch.stack(steps, dim=1).float()
    expected = full[:, n_prompt - 1 :]
    error = ((cached - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
    # float32 agrees to ~1e-6 here; half precision rounds differently in the two paths.
    tolerance = 1e-4 if model.cfg.dtype == torch.float32 else 5e-2
    expected_lengths = list(range(n_prompt, len(ids) + 1))
    if lengths != expected_lengths or not error <= tolerance:
        raise CachedDecodingError(
            f"decoding with the KV cache through this TransformerBridge "
            f"({type(model.original_model).__name__}) does not equal a full recomputation: max relative logit "
            f"difference {error:.2g} (tolerance {tolerance:g}); cache length after each step {lengths}, "
            f"expected {expected_lengths}. Sampling, generate_trace and fast attention suppression would be "
            f"silently wrong. {version_report()}. Install the tested versions (bash scripts/setup.sh, or "
            "pip install -c requirements/lock.txt anchorlens), or pass check_cached_decoding=False to load it "
            "anyway for analyses that decode nothing."
        )
