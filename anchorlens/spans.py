"""Sentences as half-open token spans ``[start, end)``: their check and their token-membership matrix.

A leaf module (tensors and ``anchorlens.errors`` only), shared by every method that maps token quantities onto
sentences: receiver heads average attention over sentence blocks, information flow sums contributions over them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import InputError

Span = tuple[int, int]


SentenceSpanError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def check_spans(spans: Sequence[Span], n_tokens: int) -> list[Span]:
    """Validate half-open token spans ``[start, end)``: non-empty, in order, disjoint, within ``n_tokens``.

    >>> check_spans([(1, 4), (5, 9)], n_tokens=10)
    [(1, 4), (5, 9)]
    """
    spans = [(int(a), int(b)) for a, b in spans]
    if not spans:
        raise SentenceSpanError("no sentence spans: pass at least one (start, end) token range")
    previous_end = 0
    for i, (a, b) in enumerate(spans):
        if not 0 <= a < b <= n_tokens:
            raise SentenceSpanError(
                f"sentence {i} has token span [{a}, {b}), which is empty or outside the {n_tokens} tokens; "
                "spans are half-open [start, end) positions in the token sequence (see Trace.token_spans)"
            )
        if a < previous_end:
            raise SentenceSpanError(
                f"sentence {i} starts at token {a}, before the previous sentence ends ({previous_end}): "
                "spans must be in order and must not overlap"
            )
        previous_end = b
    return spans


def membership_matrix(
    spans: Sequence[Span],
    n_tokens: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    normalise: bool = True,
) -> Float[Tensor, "token sentence"]:
    """``M[t, s] = 1 / n_s`` if token ``t`` lies in span ``s`` (``n_s`` = its length), else 0; with
    ``normalise=False`` the plain indicator (1 instead of ``1 / n_s``).

    ``M.T @ A @ M`` is the sentence-averaged attention matrix (receiver heads); the indicator sums token
    quantities over each sentence (information flow).

    >>> membership_matrix([(0, 2), (3, 4)], n_tokens=4)
    tensor([[0.5000, 0.0000],
            [0.5000, 0.0000],
            [0.0000, 0.0000],
            [0.0000, 1.0000]])
    """
    spans = check_spans(spans, n_tokens)
    m = torch.zeros(n_tokens, len(spans), dtype=dtype, device=device)
    for s, (a, b) in enumerate(spans):
        m[a:b, s] = 1.0 / (b - a) if normalise else 1.0
    return m
