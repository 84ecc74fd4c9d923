"""Hooks that hand each layer's residual states, attention pattern and values to a callback, layer by layer.

Information flow routes need, per layer, ``resid_pre``, the values ``v`` (``[pos, kv_head, d_head]``, before
grouped-query expansion), the attention pattern, ``resid_mid``, the MLP output and ``resid_post``. Keeping
all of them for every layer of a 2k-token trace would cost gigabytes (the patterns alone), so the hooks keep
one layer at a time: when ``blocks.{l}.hook_resid_post`` fires, the callback gets that layer's tensors and
they are dropped before the next layer runs.
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
    ``[pos, kv_head, d_head]`` and ``pattern`` to ``[head, target, source]`` (batch row 0). Returns the logits.
    """
    check_flow_hooks(model)
    stash: dict[str, torch.Tensor] = {}

    def keep(tensor, hook, key):
        stash[key] = tensor[0].detach()

    def finish(tensor, hook, layer):
        stash["resid_post"] = tensor[0].detach()
        missing = sorted(set(LAYER_HOOKS) - set(stash))
        if missing:  # e.g. fused (SDPA) attention never materialises the pattern
            raise UnsupportedArchitectureError(
                f"layer {layer}: the hooks {missing} did not fire, so the attention cannot be decomposed; "
                "load the model with eager attention (attn_implementation='eager')"
            )
        on_layer(layer, dict(stash))
        stash.clear()

    hooks = []
    for layer in range(model.cfg.n_layers):
        for key, name in LAYER_HOOKS.items():
            if key != "resid_post":
                hooks.append((f"blocks.{layer}.{name}", lambda t, hook, key=key: keep(t, hook, key)))
        hooks.append((f"blocks.{layer}.hook_resid_post", lambda t, hook, layer=layer: finish(t, hook, layer)))
    with model.hooks(fwd_hooks=hooks):
        return model(tokens)
