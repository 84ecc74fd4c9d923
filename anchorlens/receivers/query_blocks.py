"""Sentence attention from a layer's queries and keys, a block of queries at a time: pure math.

The eager route (``SentencePatternRecorder``) reduces the layer's whole ``[head, query, key]`` pattern,
which the attention bridge has already materialised: ``n_heads x T^2`` floats per layer (9 GB in float32
for a 12-head model at 14k tokens). Here the pattern is recomputed from the rotated queries and keys
for ``block_tokens`` queries at a time and reduced to sentences at once, so no more than
``n_heads x block_tokens x T`` floats exist together, while the forward itself runs fused (SDPA).
The arithmetic follows the eager bridge: scores ``Q K^T * scale`` in the model's dtype, masked with the
dtype's minimum, softmax in float32, rounded to the model's dtype, then reduced in float32.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from anchorlens.hooks.fused_attention import attention_rows
from anchorlens.receivers.reduce import SentenceReducer, SentenceSpanError

DEFAULT_BLOCK_TOKENS = 512


def pattern_rows(
    queries: Float[Tensor, "batch head query d_head"],
    keys: Float[Tensor, "batch kv_head key d_head"],
    scale: float,
    rows: slice,
    n_keys: int,
    allowed: Bool[Tensor, "batch head_or_1 query key"] | None = None,
    sinks: Tensor | None = None,
    softcap: float | None = None,
) -> Float[Tensor, "batch head rows keys"]:
    """Softmax attention of query positions ``rows`` over keys ``[0, n_keys)``, grouped-query aware.

    ``allowed`` (True: attend) defaults to causal masking with queries and keys aligned (query ``q`` sees
    keys ``<= q``); a sliding-window layer passes its window mask. Keys at or past ``n_keys`` must be masked
    for every row (true under causal masking when ``n_keys >= rows.stop``); they are left out, which changes
    no probability. ``sinks`` (gpt-oss) and ``softcap`` (Gemma 2): see ``attention_rows``, which does the
    arithmetic.
    """
    if allowed is None:
        positions = torch.arange(rows.start, rows.stop, device=queries.device)[:, None]
        row_allowed = torch.arange(n_keys, device=queries.device)[None, :] <= positions
    else:
        row_allowed = allowed[..., rows, :n_keys]
    return attention_rows(queries[:, :, rows], keys, scale, n_keys, row_allowed, sinks=sinks, softcap=softcap)


def blocked_sentence_attention(
    queries: Float[Tensor, "batch head token d_head"],
    keys: Float[Tensor, "batch kv_head token d_head"],
    scale: float,
    reducer: SentenceReducer,
    allowed: Bool[Tensor, "batch head_or_1 token token"] | None = None,
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
    sinks: Tensor | None = None,
    softcap: float | None = None,
) -> Float[Tensor, "batch head sentence sentence"]:
    """``M.T @ softmax(Q K^T) @ M`` (see ``SentenceReducer``) without the ``[head, T, T]`` pattern.

    Works through the reducer's sentence-aligned query blocks, each split into chunks of at most
    ``block_tokens`` query rows; each chunk's pattern covers only the keys before its block's end
    (causal), and is reduced to ``[head, block sentences, keys]`` at once. Peak memory: about
    ``batch x heads x block_tokens x T`` floats. Equal to reducing the eager pattern (to float rounding);
    ``allowed`` (sliding windows), ``sinks`` and ``softcap`` as the layer's fused forward reports them.

    >>> q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    >>> reducer = SentenceReducer([(0, 2), (2, 6)], n_tokens=6)
    >>> blocked_sentence_attention(q, k, 8 ** -0.5, reducer, block_tokens=3).shape
    torch.Size([1, 4, 2, 2])
    """
    n_tokens = queries.shape[-2]
    if n_tokens != reducer.n_tokens or keys.shape[-2] != n_tokens:
        raise SentenceSpanError(
            f"queries cover {n_tokens} and keys {keys.shape[-2]} positions but the spans were built for "
            f"{reducer.n_tokens} tokens: run the model on exactly the trace's tokens, without a KV cache"
        )
    if not reducer.causal:
        raise ValueError("blocked_sentence_attention reads only keys before each block's end: use a causal reducer")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be positive, got {block_tokens}")
    m = reducer.membership(queries.device)
    batch, n_heads = queries.shape[:2]
    out = torch.zeros(batch, n_heads, reducer.n_sentences, reducer.n_sentences, device=queries.device)
    for first, last in reducer.blocks:
        a, b = reducer.spans[first][0], reducer.spans[last - 1][1]
        rows = torch.zeros(batch, n_heads, last - first, b, device=queries.device)  # [.., block sentences, keys]
        for lo in range(a, b, block_tokens):
            hi = min(lo + block_tokens, b)
            pattern = pattern_rows(queries, keys, scale, slice(lo, hi), b, allowed, sinks=sinks, softcap=softcap)
            rows += m[lo:hi, first:last].T @ pattern.float()
        out[..., first:last, :last] = rows @ m[:b, :last]
    return out
