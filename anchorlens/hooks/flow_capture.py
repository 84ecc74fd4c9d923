"""Hooks that hand each layer's residual states, attention pattern and values to a callback, layer by layer.

Information flow routes need, per layer, ``resid_pre``, the values ``v`` (``[pos, kv_head, d_head]``, before
grouped-query expansion), the attention pattern, ``resid_mid``, the MLP output and ``resid_post``. Keeping
all of them for every layer of a 2k-token trace would cost gigabytes (the patterns alone), so the hooks keep
one layer at a time: when ``blocks.{l}.hook_resid_post`` fires, the callback gets that layer's tensors and
they are dropped before the next layer runs.

Three architectures need more than those hooks (``layer_output_map`` reads them from the model):

- a norm after attention (OLMo-2/3, Gemma 2/3: ``resid_mid = resid_pre + RMSNorm(o_proj(z))``): the callback
  also gets ``out_scale`` ``[pos, d_model]``, the norm's gain over its clean root mean square,
  ``g / sqrt(mean(x_i^2) + eps)`` at each position ``i``; with it held at its clean value the norm is linear, so
  ``RMSNorm(sum of parts) = sum of (out_scale * part)`` (checked here against the norm's own output);
- an output bias (gpt-oss ``o_proj.bias``): ``attn_bias`` ``[d_model]``, a part of no source and no head;
- multi-head latent attention (DeepSeek-V3): ``hook_v`` is head-major ``[batch, head, pos, d_head]``, one value
  per query head; ``v`` is handed over as ``[pos, head, d_head]`` like every other model's.
"""

from __future__ import annotations

from typing import Callable

import torch

from anchorlens.errors import UnsupportedArchitectureError

LAYER_HOOKS = {
    "resid_pre": "hook_resid_pre",
    "v": "attn.hook_v",
    "pattern": "attn.hook_pattern",
    "resid_mid": "hook_resid_mid",
    "mlp_out": "hook_mlp_out",
    "resid_post": "hook_resid_post",
}
POST_NORM_HOOKS = {"attn_raw": "ln1_post.hook_in", "attn_normed": "ln1_post.hook_out"}
HEAD_MAJOR_VALUES = ("MLAAttentionBridge",)  # bridges whose hook_v is [batch, head, pos, d_head]


def has_post_attention_norm(model) -> bool:
    """Whether each block normalises the attention output before adding it to the residual (OLMo-2/3, Gemma)."""
    return "blocks.0.ln1_post.hook_in" in model.hook_dict


def values_per_position(model, layer: int, v: torch.Tensor) -> torch.Tensor:
    """A layer's ``hook_v`` (batch row 0) as ``[pos, kv_head, d_head]`` whatever the bridge's layout."""
    if type(model.blocks[layer].attn).__name__ in HEAD_MAJOR_VALUES:
        return v.transpose(0, 1)
    return v


def output_weights(model) -> torch.Tensor:
    """``[layer, head, d_value, d_model]``: each head's output matrix ``W_O^h``. The bridge's ``W_O`` where it can
    split the output projection; else (MLA, whose values are wider than ``cfg.d_head``) the projection's own
    weight ``[d_model, head * d_value]`` split into ``cfg.n_heads`` column blocks, the split the model's forward
    uses."""
    try:
        return model.W_O.detach()
    except ValueError:  # transformer_lens' PerLayerGeometryError
        pass
    weights = []
    for block in model.blocks:
        o = block.attn.o
        weight = getattr(o, "original_component", o).weight.detach()  # nn.Linear: [d_model, head * d_value]
        weights.append(weight.T.reshape(model.cfg.n_heads, -1, weight.shape[0]))
    return torch.stack(weights)


def attention_output_bias(model, layer: int) -> torch.Tensor | None:
    """The bias of a layer's attention output projection (gpt-oss has one), or None."""
    o = getattr(model.blocks[layer].attn, "o", None)
    module = getattr(o, "original_component", o)
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach()


def frozen_norm_scale(module, raw: torch.Tensor, normed: torch.Tensor, layer: int) -> torch.Tensor:
    """``[pos, d_model]``: the RMSNorm ``module``'s gain over the clean root mean square of ``raw`` at each position,
    such that ``raw * scale == module(raw) == normed``. Gemma's norms multiply by ``1 + weight``, OLMo's by
    ``weight``: the form that reproduces the norm's own output is used; none does -> refused."""
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if weight is None or eps is None:
        raise UnsupportedArchitectureError(
            f"layer {layer}: the norm after attention ({type(module).__name__}) is not an RMSNorm with a weight, so its "
            "output cannot be split into per-head parts; information flow does not apply to this model"
        )
    raw, normed = raw.float(), normed.float()
    inverse_rms = torch.rsqrt(raw.pow(2).mean(-1, keepdim=True) + float(eps))
    tolerance = 1e-4 if normed.dtype == torch.float32 and module.weight.dtype == torch.float32 else 2e-2
    for gain in (weight.detach().float(), 1.0 + weight.detach().float()):
        scale = inverse_rms * gain
        error = (raw * scale - normed).abs().max() / normed.abs().max().clamp(min=1e-12)
        if error <= tolerance:
            return scale
    raise UnsupportedArchitectureError(
        f"layer {layer}: the norm after attention ({type(module).__name__}) is neither weight * x / rms(x) nor "
        "(1 + weight) * x / rms(x), so its output cannot be split into per-head parts; information flow does not "
        "apply to this model"
    )


def layer_tensors(model, layer: int, tensors: dict) -> dict:
    """One layer's hooked tensors (batch row 0) in the form the decomposition reads, in place: ``v`` as
    ``[pos, kv_head, d_head]``; ``attn_raw`` / ``attn_normed`` (``POST_NORM_HOOKS``) replaced by ``out_scale``;
    ``attn_bias`` added where the output projection has a bias (module docstring)."""
    tensors["v"] = values_per_position(model, layer, tensors["v"])
    if "attn_raw" in tensors:
        module = getattr(model.blocks[layer].ln1_post, "original_component", model.blocks[layer].ln1_post)
        tensors["out_scale"] = frozen_norm_scale(module, tensors.pop("attn_raw"), tensors.pop("attn_normed"), layer)
    bias = attention_output_bias(model, layer)
    if bias is not None:
        tensors["attn_bias"] = bias
    return tensors


def check_flow_hooks(model) -> None:
    """Refuse a model without the hook points the decomposition reads (e.g. parallel attention, no resid_mid)."""
    missing = [f"blocks.0.{name}" for name in LAYER_HOOKS.values() if f"blocks.0.{name}" not in model.hook_dict]
    if missing:
        raise UnsupportedArchitectureError(
            f"information flow needs the hook points {missing}, which this model does not have: its attention "
            "output cannot be split per head and source token (parallel attention and MLP have no resid_mid). "
            "Use a sequential-block model (Llama, Qwen2, Mistral, ...)"
        )


@torch.inference_mode()
def run_layerwise(model, tokens: torch.Tensor, on_layer: Callable[[int, dict], None]) -> torch.Tensor:
    """One forward of ``tokens`` (``[1, pos]``); ``on_layer(layer, tensors)`` gets each layer's tensors.

    ``tensors`` maps ``resid_pre, resid_mid, mlp_out, resid_post`` to ``[pos, d_model]``, ``v`` to
    ``[pos, kv_head, d_head]`` and ``pattern`` to ``[head, target, source]`` (batch row 0); where the model has
    them (module docstring), ``out_scale`` to ``[pos, d_model]`` and ``attn_bias`` to ``[d_model]``. Returns the
    logits.
    """
    check_flow_hooks(model)
    stash: dict[str, torch.Tensor] = {}
    post_norm = has_post_attention_norm(model)
    wanted = {**LAYER_HOOKS, **(POST_NORM_HOOKS if post_norm else {})}

    def keep(tensor, hook, key):
        stash[key] = tensor[0].detach()

    def finish(tensor, hook, layer):
        stash["resid_post"] = tensor[0].detach()
        missing = sorted(set(wanted) - set(stash))
        if missing:  # e.g. fused (SDPA) attention never materialises the pattern
            raise UnsupportedArchitectureError(
                f"layer {layer}: the hooks {missing} did not fire, so the attention cannot be decomposed; "
                "load the model with eager attention (attn_implementation='eager')"
            )
        tensors = dict(stash)
        stash.clear()
        on_layer(layer, layer_tensors(model, layer, tensors))

    hooks = []
    for layer in range(model.cfg.n_layers):
        for key, name in wanted.items():
            if key != "resid_post":
                hooks.append((f"blocks.{layer}.{name}", lambda t, hook, key=key: keep(t, hook, key)))
        hooks.append((f"blocks.{layer}.hook_resid_post", lambda t, hook, layer=layer: finish(t, hook, layer)))
    with model.hooks(fwd_hooks=hooks):
        return model(tokens)
