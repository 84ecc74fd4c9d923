"""What a model's architecture allows each method, read from the bridge: one reason per refusal, or None.

These are the checks the methods run before any long work (their errors quote the reason) and that
``anchorlens.support_table`` asks of every family's small random model, so the table of docs/architectures.md is
the code's own answer and cannot go stale.
"""

from __future__ import annotations

from anchorlens.errors import UnsupportedArchitectureError
from anchorlens.hooks.flow_capture import HEAD_MAJOR_VALUES, LAYER_HOOKS, attention_output_bias, has_post_attention_norm

MOE_CONFIG_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


def hf_config(model):
    return getattr(getattr(model, "original_model", None), "config", None)


def is_mixture_of_experts(model) -> bool:
    """Whether the MLPs are mixtures of experts (Qwen3-MoE, gpt-oss, DeepSeek-V3): no single hidden layer."""
    config = hf_config(model)
    return any(getattr(config, key, None) for key in MOE_CONFIG_KEYS)


def uses_latent_attention(model) -> bool:
    """Multi-head latent attention (DeepSeek-V3): keys and values come from a normalised compressed latent."""
    return any(type(block.attn).__name__ in HEAD_MAJOR_VALUES for block in model.blocks)


def sliding_window(model) -> int | None:
    """The sliding window of a model with sliding-window layers (Mistral v0.1, OLMo-3, Gemma 2/3, gpt-oss), else None."""
    config = hf_config(model)
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def has_post_mlp_norm(model) -> bool:
    return "blocks.0.ln2_post.hook_in" in model.hook_dict


def information_flow_refusal(model) -> str | None:
    """Why ``information_flow`` cannot decompose this model's attention per head and source (None: it can)."""
    missing = [name for name in LAYER_HOOKS.values() if f"blocks.0.{name}" not in model.hook_dict]
    if missing:
        return f"no hook points {missing} (parallel attention and MLP have no resid_mid)"
    return None


def streamed_flow_refusal(model) -> str | None:
    """Why the bounded-memory sentence flow (``flow.stream``, from rotated queries and keys) cannot run on this
    model (None: it can). It recomputes each layer's pattern with its sliding window, sinks and softcap, holds a
    norm after attention at its clean scale and reads MLA's per-head values, so it needs what the layer-by-layer
    ``information_flow`` needs; its forward checks the rest (the decomposition, the attention mask) layer by
    layer and refuses with a clear error."""
    refusal = information_flow_refusal(model)
    return None if refusal is None else f"the per-head decomposition does not apply: {refusal}"


def head_ablation_refusal(model) -> str | None:
    """Why heads cannot be ablated at their own output (``attn.hook_z``) on this model (None: they can)."""
    if "blocks.0.attn.hook_z" not in model.hook_dict:
        return "no attn.hook_z: each head's output before the output projection is not exposed"
    return None


def attribution_refusal(model) -> str | None:
    """Why transcoder attribution graphs do not apply to this model (None: they do).

    The replacement model is linear only if every nonlinearity outside the transcoders is frozen at its clean
    value: the attention patterns and the scales of the pre-norms (``ln1``, ``ln2``) and the final norm.
    """
    if has_post_attention_norm(model) or has_post_mlp_norm(model):
        return ("norms after attention / after the MLP (OLMo-2/3, Gemma 2/3) are not frozen by the replacement "
                "model, so it would not be linear in the residual")
    if uses_latent_attention(model):
        return ("multi-head latent attention normalises its compressed keys and values (kv_a_layernorm) inside "
                "the attention: the values are not linear in the residual with the patterns frozen")
    missing = [f"blocks.0.{name}" for name in ("ln1.hook_scale", "ln2.hook_scale", "mlp.hook_in", "hook_mlp_out")
               if f"blocks.0.{name}" not in model.hook_dict]
    if missing:
        return f"the transcoder hook sites or norm scales {missing} are missing"
    return None


def mediation_refusal(model, component: str) -> str | None:
    """Why mediation cannot patch ``component`` (``anchorlens.hooks.cell_patch.COMPONENTS``) on this model."""
    if component == "mlp_post" and is_mixture_of_experts(model):
        return "a mixture-of-experts MLP has no single hidden layer (mlp.hook_post) whose units a cell could name"
    if component == "head_out" and uses_latent_attention(model):
        return ("multi-head latent attention hands attn.hook_z over split by its rotary width, not by head; "
                "patch head_pattern or attn_out instead")
    return None


def refuse(method: str, reason: str | None) -> None:
    """Raise ``UnsupportedArchitectureError`` for ``reason`` (nothing when it is None)."""
    if reason is not None:
        raise UnsupportedArchitectureError(f"{method} does not apply to this model: {reason}")
