"""Head ablation at a head's own output, before the output projection (docs/methods.md 1.5).

``blocks.{l}.attn.hook_z`` holds each query head's mixed values ``[batch, pos, head, d_head]`` just before
``W_O`` (on GQA models too: key/value heads are repeated to query heads before the mixing). Replacing
head ``h``'s slice there removes exactly ``z_h @ W_O[h]`` from the layer's output. The Thought Anchors
reference zeroed slices *after* ``o_proj`` instead, which mixes every head into every slice and
removes none of them.

Multi-head latent attention (DeepSeek-V3) hands ``hook_z`` over split by ``cfg.d_head`` (its rotary width), not by
head: its value heads are wider. The hooks here view ``hook_z`` as ``[batch, pos, cfg.n_heads, d_value]`` (the
split its ``o_proj`` uses, ``head_value_width``), which on every other model is the tensor's own shape.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from functools import partial
from typing import Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from anchorlens.errors import AnchorlensError
from anchorlens.heads import check_heads
from anchorlens.hooks.architecture import head_ablation_refusal, refuse
from anchorlens.progress import progress_bar

METHODS = ("zero", "mean")


def by_head(z: Tensor, n_heads: int) -> Float[Tensor, "batch pos head d_value"]:
    """``hook_z`` viewed as ``[batch, pos, n_heads, d_value]`` (module docstring)."""
    return z.reshape(*z.shape[:2], n_heads, -1)


def head_value_width(model) -> int:
    """Each head's width at ``hook_z`` (its value width): ``cfg.d_head``, or MLA's ``v_head_dim``."""
    config = getattr(getattr(model, "original_model", None), "config", None)
    return int(getattr(config, "v_head_dim", None) or model.cfg.d_head)


def _replace_heads(
    z: Float[Tensor, "batch pos ..."], hook, heads: list[int], values: Tensor | None, n_heads: int
) -> Float[Tensor, "batch pos ..."]:
    edited = by_head(z, n_heads).clone()  # leave the tensor the model handed us as it was; return the edited copy
    if values is None:
        edited[:, :, heads] = 0.0
    else:
        edited[:, :, heads] = values.to(device=z.device, dtype=z.dtype)
    return edited.reshape(z.shape)


def head_ablation_hooks(
    model, heads: Iterable[Sequence[int]], method: str = "zero", means: Tensor | None = None
) -> list[tuple[str, object]]:
    """The ``(hook name, function)`` pairs that ablate ``heads`` (one hook per layer touched)."""
    refuse("head ablation", head_ablation_refusal(model))
    cfg = model.cfg
    heads = check_heads(heads, cfg.n_layers, cfg.n_heads)
    if method not in METHODS:
        raise AnchorlensError(f"unknown ablation method {method!r}; choose one of {METHODS}")
    if method == "mean":
        expected = (cfg.n_layers, cfg.n_heads, head_value_width(model))
        if means is None or tuple(means.shape) != expected:
            got = None if means is None else tuple(means.shape)
            raise AnchorlensError(
                f"mean ablation needs each head's mean output, a tensor of shape {expected} (got {got}): "
                "compute it with anchorlens.head_means(model, traces) and pass it as means="
            )
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        if head not in by_layer[layer]:
            by_layer[layer].append(head)
    hooks = []
    for layer, layer_heads in sorted(by_layer.items()):
        values = None if method == "zero" else means[layer, layer_heads]  # [n, d_head], broadcast over pos
        hooks.append((get_act_name("z", layer), partial(_replace_heads, heads=layer_heads, values=values, n_heads=cfg.n_heads)))
    return hooks


@contextmanager
def ablate_heads(
    model, heads: Iterable[Sequence[int]], method: str = "zero", means: Tensor | None = None
) -> Iterator:
    """Ablate attention heads for every forward pass (and generation) inside the ``with`` block.

    Args:
        model: a TransformerBridge.
        heads: ``(layer, head)`` pairs, e.g. the receiver heads.
        method: ``"zero"`` sets the heads' outputs to 0; ``"mean"`` to their mean output (``means``).
        means: ``[n_layers, n_heads, d_head]`` from ``head_means`` (mean ablation only).

    The hooks are removed when the block ends, also when it raises.

    >>> with ablate_heads(model, [(12, 3), (20, 1)]):                      # doctest: +SKIP
    ...     text = model.generate("What is 2 + 2?", max_new_tokens=20, do_sample=False)
    """
    hooks = head_ablation_hooks(model, heads, method, means)
    with model.hooks(fwd_hooks=hooks):
        yield model


@torch.inference_mode()
def head_means(model, inputs, progress: bool = True) -> Float[Tensor, "layer head d_head"]:
    """Each head's mean output ``z`` over all positions of ``inputs``, for mean ablation.

    ``inputs``: a list of ``Trace`` objects, a list of strings, or a token tensor ``[batch, pos]``.

    >>> means = head_means(model, traces)                                 # doctest: +SKIP
    >>> with ablate_heads(model, heads, method="mean", means=means): ...   # doctest: +SKIP
    """
    if isinstance(inputs, Tensor):
        sequences = [inputs.reshape(-1, inputs.shape[-1])]
    else:
        sequences = []
        for item in inputs:
            if hasattr(item, "tokens"):
                sequences.append(item.tokens())
            elif isinstance(item, str):
                sequences.append(model.to_tokens(item))
            else:
                raise AnchorlensError(f"head_means takes traces, strings or a token tensor, got {type(item).__name__}")
    if not sequences:
        raise AnchorlensError("head_means needs at least one input to average over")
    cfg = model.cfg
    total = torch.zeros(cfg.n_layers, cfg.n_heads, head_value_width(model), dtype=torch.float64, device=cfg.device)
    count = 0
    names = [get_act_name("z", layer) for layer in range(cfg.n_layers)]
    for tokens in progress_bar(sequences, desc="head means", progress=progress):
        _, cache = model.run_with_cache(tokens.to(cfg.device), names_filter=lambda n: n in names)
        for layer, name in enumerate(names):
            total[layer] += by_head(cache[name], cfg.n_heads).double().sum(dim=(0, 1))
        count += tokens.shape[0] * tokens.shape[1]
    return (total / count).to(torch.float32)
