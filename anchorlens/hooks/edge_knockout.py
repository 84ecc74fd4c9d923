"""Attention knockout (Geva et al. 2023): block chosen attention edges ``target -> source`` at chosen layers.

At ``blocks.{l}.attn.hook_attn_scores`` (pre-softmax scores ``[batch, head, query, key]``), the blocked
entries are set to the dtype's minimum, so the softmax gives them zero weight and renormalises the row over
the remaining keys. A row whose every visible key would be blocked keeps its own key: an all-minimum row
would otherwise spread its attention over every key, future ones included.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
from transformer_lens.utilities import get_act_name


def knockout_masks(edges: Iterable[Sequence[int]], n_pos: int) -> dict[int, torch.Tensor]:
    """``{layer: bool [target, source]}``, True where the edge is blocked; ``edges`` are ``(layer, target, source)``."""
    masks: dict[int, torch.Tensor] = defaultdict(lambda: torch.zeros(n_pos, n_pos, dtype=torch.bool))
    for layer, target, source in edges:
        masks[int(layer)][int(target), int(source)] = True
    causal = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.bool))
    for mask in masks.values():
        mask &= causal
        blind = (mask | ~causal).all(dim=1).nonzero().flatten()  # rows with nothing left to see keep themselves
        mask[blind, blind] = False
    return dict(masks)


def edge_knockout_hooks(edges: Iterable[Sequence[int]], n_pos: int, heads: Sequence[int] | None = None):
    """Forward hooks that block ``(layer, target, source)`` edges (all heads, or ``heads``) for a batch of
    sequences of ``n_pos`` tokens, without a KV cache."""
    head_list = None if heads is None else [int(h) for h in heads]
    hooks = []
    for layer, mask in sorted(knockout_masks(edges, n_pos).items()):

        def block(scores, hook, mask=mask):
            full = mask.to(scores.device)[None, None]
            if head_list is not None:
                chosen = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
                chosen[head_list] = True
                full = full & chosen[None, :, None, None]
            return scores.masked_fill(full, torch.finfo(scores.dtype).min)

        hooks.append((get_act_name("attn_scores", layer), block))
    return hooks
