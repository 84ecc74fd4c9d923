"""From token attention to sentence attention: pure math, tensors in, tensors out.

Thought Anchors (docs/methods.md 1.5) averages a head's token pattern over sentence blocks:
``A_s[i, j] = mean(A[tokens of i, tokens of j])``, a plain mean over all query x key pairs, so the
diagonal block (lower triangular under causal masking) averages in its zeros, and ``A_s[i, j] = 0`` for
``j > i``. Tokens outside every span (white space between sentences, the prompt) take no part.

Written as matrices, ``A_s = M.T @ A @ M`` with ``M[t, s] = 1 / n_s`` when token ``t`` is in sentence
``s`` (a normalised membership matrix). ``SentenceReducer`` computes exactly that, one query
block of sentences at a time, reading only the key columns a causal model can have filled (keys before
the block's end): one pass over half the pattern, so reducing a layer costs less than the attention that
produced it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.spans import SentenceSpanError, Span, check_spans, membership_matrix  # noqa: F401 (re-exported)


class SentenceReducer:
    """Reduce token attention patterns ``[..., query, key]`` to sentence matrices ``[..., sentence, sentence]``.

    Computes ``M.T @ pattern @ M`` block by block: consecutive sentences are grouped into query blocks of
    about ``block_tokens`` tokens, and each block is reduced by two small matrix products. With
    ``causal=True`` (right for decoder language models) a block reads only the keys before its end, so
    the reduction makes one pass over half the pattern, and its cost does not grow with the number of
    sentences (``M.T @ pattern`` in one product would cost ``n_sentences / d_head`` times the model's own
    ``Q @ K.T``). Few, large products also keep the per-operation overhead small. The membership matrix is
    built once per device.

    >>> reduce = SentenceReducer([(1, 3), (3, 6)], n_tokens=6)
    >>> pattern = torch.tril(torch.ones(6, 6)); pattern /= pattern.sum(-1, keepdim=True)
    >>> reduce(pattern).shape
    torch.Size([2, 2])
    """

    def __init__(self, spans: Sequence[Span], n_tokens: int, causal: bool = True, block_tokens: int = 512):
        self.spans = check_spans(spans, n_tokens)
        self.n_tokens = n_tokens
        self.causal = causal
        self.blocks = _query_blocks(self.spans, block_tokens)
        self._membership: dict[torch.device, Tensor] = {}

    @property
    def n_sentences(self) -> int:
        return len(self.spans)

    def membership(self, device: torch.device) -> Float[Tensor, "token sentence"]:
        """The float32 membership matrix on ``device`` (built on first use)."""
        if device not in self._membership:
            self._membership[device] = membership_matrix(self.spans, self.n_tokens, torch.float32, device)
        return self._membership[device]

    def __call__(self, pattern: Float[Tensor, "... query key"]) -> Float[Tensor, "... sentence sentence"]:
        if pattern.shape[-2:] != (self.n_tokens, self.n_tokens):
            raise SentenceSpanError(
                f"the attention pattern covers {tuple(pattern.shape[-2:])} query x key positions but the spans "
                f"were built for {self.n_tokens} tokens: run the model on exactly the trace's tokens"
            )
        # Everything in float32: a half-precision pattern is upcast one query block at a time (a no-op
        # for float32 models), so the weights 1 / n_s are not rounded to bfloat16.
        m = self.membership(pattern.device)
        out = torch.zeros(*pattern.shape[:-2], self.n_sentences, self.n_sentences, device=pattern.device)
        for first, last in self.blocks:
            a, b = self.spans[first][0], self.spans[last - 1][1]
            keys = b if self.causal else self.n_tokens
            sentences = last if self.causal else self.n_sentences  # causal: keys before b lie in sentences < last
            rows = m[a:b, first:last].T @ pattern[..., a:b, :keys].float()  # [..., block sentences, keys]
            out[..., first:last, :sentences] = rows @ m[:keys, :sentences]
        return out


def _query_blocks(spans: list[Span], block_tokens: int) -> list[tuple[int, int]]:
    """Group consecutive sentences ``[first, last)`` so that each group spans at most ``block_tokens``
    tokens (a longer sentence is a group of its own)."""
    blocks, first = [], 0
    for i in range(1, len(spans) + 1):
        if i == len(spans) or spans[i][1] - spans[first][0] > block_tokens:
            blocks.append((first, i))
            first = i
    return blocks


def sentence_average(
    pattern: Float[Tensor, "... query key"], spans: Sequence[Span], causal: bool = True
) -> Float[Tensor, "... sentence sentence"]:
    """Sentence-averaged attention ``A_s[i, j] = mean(pattern[..., tokens of i, tokens of j])``.

    ``causal=True`` assumes ``pattern`` is zero above the diagonal (as every decoder's attention is).

    >>> pattern = torch.tril(torch.ones(4, 4)); pattern /= pattern.sum(-1, keepdim=True)
    >>> sentence_average(pattern, [(0, 2), (2, 4)])
    tensor([[0.5000, 0.0000],
            [0.2917, 0.2083]])
    """
    return SentenceReducer(spans, pattern.shape[-1], causal=causal)(pattern)
