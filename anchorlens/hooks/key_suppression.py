"""The attention-suppression hook: hide a range of key positions from every query (docs/methods.md 1.6).

At ``blocks.{l}.attn.hook_attn_scores`` the bridge hands over the pre-softmax scores
``[batch, head, query, key]`` with the causal mask already applied (as the dtype's minimum), and what
the hook returns flows into the softmax. Setting a key column to the dtype's minimum there removes that
key and renormalises the attention over the remaining ones.

Each batch row hides its own range of *absolute* key positions. With a KV cache the scores cover
``prefix + new`` keys while the queries are only the new positions, so the key axis is absolute and
the query of row ``q`` sits at absolute position ``n_keys - n_queries + q``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

HookList = list[tuple[str, Callable]]


def key_suppression_mask(
    key_ranges: Sequence[tuple[int, int]], n_queries: int, n_keys: int, device=None, window: int | None = None
) -> torch.Tensor:
    """Boolean ``[batch, 1, query, key]`` mask: True where the score must be set to the minimum.

    Row ``b`` hides keys ``key_ranges[b] = (start, end)`` (half-open, absolute positions) from all queries,
    with one exception: a query whose every visible key would be hidden keeps itself. Otherwise its softmax
    over all-minimum scores would spread evenly over *every* key, future ones included, and leak the future
    into the run. A query sees keys ``0 .. q`` (blind only when ``start == 0``: no BOS and no prompt before
    the sentence), or in a sliding-window layer (``window``) keys ``q - window + 1 .. q`` (blind wherever the
    window lies inside the sentence: a sentence of ``window`` tokens or more).

    >>> key_suppression_mask([(1, 3)], n_queries=4, n_keys=4)[0, 0].int()
    tensor([[0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0]], dtype=torch.int32)
    >>> key_suppression_mask([(1, 3)], n_queries=4, n_keys=4, window=1)[0, 0].int()  # queries 1, 2 see only 1, 2
    tensor([[0, 1, 1, 0],
            [0, 0, 1, 0],
            [0, 1, 0, 0],
            [0, 1, 1, 0]], dtype=torch.int32)
    """
    # built on the host and copied without blocking: no wait for the device's queue (once per forward)
    ranges = torch.tensor(list(key_ranges), dtype=torch.long).reshape(-1, 2).to(device, non_blocking=True)
    starts, ends = ranges[:, 0, None, None], ranges[:, 1, None, None]  # [batch, 1, 1]
    keys = torch.arange(n_keys, device=device)[None, None, :]  # [1, 1, key]
    queries = torch.arange(n_keys - n_queries, n_keys, device=device)[None, :, None]  # absolute positions
    hidden = (keys >= starts) & (keys < ends)
    # Queries with nothing left to see (all of their visible keys hidden) keep their own key; see the docstring.
    first_visible = torch.zeros_like(queries) if window is None else (queries - window + 1).clamp_min(0)
    blind = (starts <= first_visible) & (queries < ends)
    hidden = hidden & ~(blind & (keys == queries))
    return hidden[:, None]


def head_selection(n_heads: int, heads: Sequence[int], device=None) -> torch.Tensor:
    """Boolean ``[head]``: True for ``heads``; built on the host and copied without blocking.

    >>> head_selection(4, [1, 3]).tolist()
    [False, True, False, True]
    """
    selected = torch.zeros(n_heads, dtype=torch.bool)
    selected[list(heads)] = True
    return selected.to(device, non_blocking=True)


def key_suppression_hooks(
    key_ranges: Sequence[tuple[int, int]],
    layers: Sequence[int],
    heads: Sequence[int] | None = None,
    windows: Sequence[int | None] | None = None,
) -> HookList:
    """Forward hooks that hide ``key_ranges[b]`` from all queries of batch row ``b`` in ``layers`` / ``heads``.

    Args:
        key_ranges: one half-open ``(start, end)`` range of absolute key positions per batch row.
        layers: the layers to edit.
        heads: the query heads to edit (all when None). With grouped-query attention the scores are
            already expanded to query heads, so any subset works.
        windows: per layer (indexed by layer), its sliding window or None (``hooks.kv_cache.sliding_windows``);
            None: no layer has one. Decides which queries are left with no key (see ``key_suppression_mask``).

    >>> hooks = key_suppression_hooks([(3, 7)], layers=[0, 1])
    >>> logits = model.run_with_hooks(tokens, fwd_hooks=hooks)      # doctest: +SKIP
    """
    ranges = [(int(a), int(b)) for a, b in key_ranges]
    head_list = None if heads is None else [int(h) for h in heads]
    cached: dict[tuple, Tensor] = {}  # one mask per (shape, device, window), shared by the layers of a forward

    def suppressor(window: int | None):
        def suppress(scores: Float[Tensor, "batch head query key"], hook) -> Float[Tensor, "batch head query key"]:
            batch, n_heads, n_queries, n_keys = scores.shape
            if batch != len(ranges):
                raise ValueError(f"the hook got a batch of {batch} rows but {len(ranges)} key ranges")
            key = (n_queries, n_keys, scores.device, window)
            if key not in cached:
                if any(other[:3] != key[:3] for other in cached):  # a new forward's shape: drop the old masks
                    cached.clear()
                mask = key_suppression_mask(ranges, n_queries, n_keys, device=scores.device, window=window)
                if head_list is not None:
                    mask = mask & head_selection(n_heads, head_list, scores.device)[None, :, None, None]
                cached[key] = mask
            return scores.masked_fill(cached[key], torch.finfo(scores.dtype).min)

        return suppress

    def window_of(layer: int) -> int | None:
        return None if windows is None else windows[layer]

    return [(get_act_name("attn_scores", layer), suppressor(window_of(layer))) for layer in layers]
