"""Pure math of attention suppression (docs/methods.md 1.6): tensors in, tensors out, no model.

Conventions used throughout ``anchorlens.suppression``:

- logits are indexed by *position*: the logits at position ``p`` predict token ``p + 1``;
- per-token KL is indexed by the *predicted token* ``t``: its distribution comes from the logits at
  ``t - 1`` (``shift_to_tokens`` does that one-position shift; token 0 has no distribution: NaN);
- sentence matrices are ``[target i, suppressed j]``; only ``j < i`` is meaningful, other entries are NaN.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

DEFAULT_TEMPERATURE = 0.6  # Thought Anchors' default (docs/methods.md 1.6)
LOG_EPS = 1e-9  # log(KL + 1e-9), as published


def log_probs(logits: Float[Tensor, "... vocab"], temperature: float = DEFAULT_TEMPERATURE) -> Float[Tensor, "... vocab"]:
    """Next-token log-probabilities at a temperature, in float32 (bf16 logits are upcast first).

    >>> log_probs(torch.zeros(2, 4)).exp().sum(-1)
    tensor([1., 1.])
    """
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def kl_from_log_probs(
    base: Float[Tensor, "... vocab"], suppressed: Float[Tensor, "... vocab"]
) -> Float[Tensor, "..."]:
    """``KL(P_base || P_suppressed)`` over the full vocabulary, clipped at 0 (float rounding can dip below).

    >>> p = torch.log_softmax(torch.randn(3, 10), -1)
    >>> kl_from_log_probs(p, p)
    tensor([0., 0., 0.])
    """
    terms = torch.nn.functional.kl_div(suppressed, base.expand_as(suppressed), reduction="none", log_target=True)
    # A token with P_base == 0 (log -inf, e.g. a vocabulary entry masked by the model) gives 0 * inf = NaN:
    # it contributes nothing.
    terms = terms.nan_to_num_(nan=0.0, posinf=torch.inf, neginf=-torch.inf)
    return terms.sum(-1).clamp_min(0.0)


def position_kl(
    base_log_probs: Float[Tensor, "pos vocab"],
    suppressed_logits: Float[Tensor, "batch pos vocab"],
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 256,
    base_probs: Float[Tensor, "pos vocab"] | None = None,
) -> Float[Tensor, "batch pos"]:
    """Per-position KL between the baseline (as log-probs) and a batch of suppressed runs (as logits).

    Works through ``chunk_size`` positions at a time, so the temporary log-softmax of a long trace never
    holds more than ``batch * chunk_size * vocab`` floats (a 4k-token trace with a 49k vocabulary would
    otherwise need 800 MB per row and per temporary). ``base_probs`` (``base_log_probs.exp()``, computed
    once per baseline by the caller) saves the exponential of every suppressed run; the terms
    ``P_base * (log P_base - log P_suppressed)`` are the same floats as ``kl_from_log_probs``'s, formed
    in place in the log-softmax's buffer (half the time of ``kl_div`` with its temporaries).

    >>> base = torch.randn(5, 7)
    >>> position_kl(log_probs(base), base.expand(2, 5, 7)).abs().max() < 1e-6
    tensor(True)
    """
    if suppressed_logits.shape[-2:] != base_log_probs.shape:
        raise ValueError(
            f"suppressed logits {tuple(suppressed_logits.shape)} do not match the baseline {tuple(base_log_probs.shape)}"
        )
    if base_probs is not None and base_probs.shape != base_log_probs.shape:
        raise ValueError(f"base_probs {tuple(base_probs.shape)} do not match the baseline {tuple(base_log_probs.shape)}")
    n_pos = base_log_probs.shape[0]
    out = torch.empty(suppressed_logits.shape[:-1], dtype=torch.float32, device=suppressed_logits.device)
    for lo in range(0, n_pos, chunk_size):
        hi = min(lo + chunk_size, n_pos)
        base = base_log_probs[lo:hi]
        probs = base.exp() if base_probs is None else base_probs[lo:hi]
        terms = log_probs(suppressed_logits[:, lo:hi], temperature)  # a fresh buffer: edited in place below
        terms.sub_(base).mul_(probs).neg_()  # P_base * (log P_base - log P_suppressed)
        # P_base == 0 (log -inf): 0 * inf = NaN, contributes nothing (as in kl_from_log_probs)
        terms.nan_to_num_(nan=0.0, posinf=torch.inf, neginf=-torch.inf)
        out[:, lo:hi] = terms.sum(-1).clamp_min_(0.0)
    return out


def token_kl(
    base_logits: Float[Tensor, "pos vocab"],
    suppressed_logits: Float[Tensor, "batch pos vocab"],
    temperature: float = DEFAULT_TEMPERATURE,
) -> Float[Tensor, "batch token"]:
    """KL per predicted token from two runs' logits: position KL, then the one-position shift.

    >>> base = torch.randn(4, 9); edited = base.clone(); edited[2] += torch.randn(9)
    >>> token_kl(base, edited[None])[0].nan_to_num(-1).ne(0).nonzero().flatten().tolist()  # token 3 moved
    [0, 3]
    """
    return shift_to_tokens(position_kl(log_probs(base_logits, temperature), suppressed_logits, temperature))


def shift_to_tokens(kl_by_position: Float[Tensor, "... pos"]) -> Float[Tensor, "... token"]:
    """Re-index KL from logit positions to predicted tokens: ``out[..., t] = in[..., t - 1]``; token 0 is NaN.

    The logits at position ``t - 1`` are the distribution *for* token ``t`` (docs/methods.md 1.6: "shifted one
    position"); the last position's logits predict a token past the trace and are dropped.

    >>> shift_to_tokens(torch.tensor([1.0, 2.0, 3.0]))
    tensor([nan, 1., 2.])
    """
    out = torch.full_like(kl_by_position, float("nan"))
    out[..., 1:] = kl_by_position[..., :-1]
    return out


def sentence_matrix(
    kl_by_token: Float[Tensor, "suppressed token"], token_spans: Sequence[tuple[int, int]]
) -> Float[Tensor, "target suppressed"]:
    """``S[i, j]`` = mean KL over the tokens of target sentence ``i`` when sentence ``j`` is suppressed.

    Rows of ``kl_by_token`` are suppressed sentences (already shifted, see ``shift_to_tokens``); ``token_spans``
    are the sentences' half-open token ranges. Entries with ``j >= i`` are NaN: suppressing ``j`` cannot
    change anything before ``j``, and ``i == j`` measures a sentence against its own removal.

    >>> kl = torch.tensor([[0., 0., 1., 3.], [0., 0., 0., 2.]])
    >>> sentence_matrix(kl, [(1, 2), (2, 4)])
    tensor([[nan, nan],
            [2., nan]])
    """
    n = len(token_spans)
    if kl_by_token.shape[0] != n:
        raise ValueError(f"kl_by_token has {kl_by_token.shape[0]} rows but there are {n} sentences")
    out = torch.full((n, n), float("nan"), dtype=torch.float32)
    for i, (start, end) in enumerate(token_spans):
        if i == 0:
            continue
        out[i, :i] = kl_by_token[:i, start:end].float().nanmean(dim=-1).cpu()
    return out


def log_kl(kl: Tensor, eps: float = LOG_EPS) -> Tensor:
    """``log(KL + eps)``, the published scale for suppression matrices (NaN stays NaN).

    >>> log_kl(torch.tensor([0.0, float("nan")]))
    tensor([-20.7233,      nan])
    """
    return torch.log(kl + eps)


def row_centre(matrix: Float[Tensor, "target suppressed"]) -> Float[Tensor, "target suppressed"]:
    """Subtract each row's mean over its finite entries, as the paper's plots do (all-NaN rows stay NaN).

    >>> row_centre(torch.tensor([[float("nan"), float("nan")], [1.0, 3.0]]))
    tensor([[nan, nan],
            [-1.,  1.]])
    """
    means = matrix.nanmean(dim=-1, keepdim=True)
    return matrix - means
