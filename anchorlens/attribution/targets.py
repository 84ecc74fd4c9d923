"""What an attribution graph explains: its target nodes, in circuit-tracer 0.5.0's four forms (``attribute``'s
``attribution_targets``, ``attribution/targets.py``).

- ``None``: the salient next tokens, the top ones by probability until ``desired_logit_prob`` (at most
  ``max_n_logits``).
- token ids (a tensor, or a list of ints) or token strings (each one token of the tokenizer, without special
  tokens): those tokens in the given order, each weighted by its softmax probability (not renormalised).
- ``CustomTarget(label, weight, vector)`` (or plain 3-tuples): any direction in the residual stream, weighted by
  ``weight``; e.g. ``logit_difference_target``, the difference of two unembedding rows.

Every target is a vector injected at the final norm's output (the norm's scale frozen, as for logits): a token's
vector is its unembedding row minus the mean row (softmax is unchanged by a shift of all logits), a custom vector
is used as given, not mean-centred. Custom targets get the ids ``d_vocab + i`` (circuit-tracer's virtual ids:
never a token), so they can be told apart from tokens and named in its frontend JSON.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.errors import InputError


TargetError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


class CustomTarget(NamedTuple):
    """A direction in the residual stream to attribute (circuit-tracer's ``CustomTarget``): its label, its weight
    (used where a token target has its probability) and its vector [d_model], dotted with the final norm's output."""

    label: str
    weight: float
    vector: Tensor


@dataclass
class Targets:
    """Resolved targets: ids (token ids, or ``d_vocab + i`` for custom ones), weights, vectors and labels."""

    ids: Int[Tensor, " target"]
    weights: Float[Tensor, " target"]
    vectors: Float[Tensor, "target d_model"]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def single_token_id(tokenizer, token: str | int, vocab_size: int) -> int:
    """The id of ``token`` (a string that is exactly one token, without special tokens, or an id)."""
    if isinstance(token, str):
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise TargetError(f"{token!r} is {len(ids)} tokens ({ids}), not one: pass a string that is one token "
                              "(e.g. with its leading space, ' Paris'), or its token id")
        token = ids[0]
    if isinstance(token, numbers.Integral) and not isinstance(token, bool):
        token = int(token)
    if not isinstance(token, int) or not 0 <= token < vocab_size:
        raise TargetError(f"token id {token!r} is outside the vocabulary [0, {vocab_size})")
    return token


def resolve_targets(
    attribution_targets,
    logits: Float[Tensor, " vocab"],
    W_U: Float[Tensor, "vocab d_model"],
    tokenizer,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
) -> Targets:
    """The targets of a graph from any of the four forms (see the module docstring); ``logits`` are the model's
    next-token logits at the last position, ``W_U`` the unembedding (rows are tokens)."""
    probs = torch.softmax(logits.float(), dim=-1)
    d_vocab = len(probs)
    if attribution_targets is None:
        top_p, top_idx = torch.topk(probs, min(max_n_logits, d_vocab))
        cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1
        return _token_targets(top_idx[:cutoff], probs, W_U, tokenizer)
    if isinstance(attribution_targets, Tensor):
        if attribution_targets.is_floating_point() or attribution_targets.is_complex():
            raise TargetError("a tensor of attribution targets holds token ids (integers), not "
                              f"{attribution_targets.dtype}; pass a direction as a CustomTarget")
        ids = [int(i) for i in attribution_targets.reshape(-1).tolist()]
        if not ids:
            raise TargetError("attribution_targets is an empty tensor: pass at least one token id, or None")
        return _token_targets(torch.tensor([single_token_id(tokenizer, i, d_vocab) for i in ids]), probs, W_U,
                              tokenizer)
    if isinstance(attribution_targets, (str, bytes)) or not isinstance(attribution_targets, Sequence):
        raise TargetError("attribution_targets is None, a tensor of token ids, a list of token strings or a list "
                          f"of (label, weight, vector) targets, not {type(attribution_targets).__name__}")
    if len(attribution_targets) == 0:
        raise TargetError("attribution_targets is an empty list: pass at least one target, or None for the "
                          "most likely next tokens")
    kinds = {_kind(t) for t in attribution_targets}
    if len(kinds) > 1:
        raise TargetError(f"attribution_targets mixes {sorted(kinds)}: pass only tokens or only custom targets "
                          "(a token can be written as a custom target with its unembedding row)")
    if kinds == {"token"}:
        ids = [single_token_id(tokenizer, t, d_vocab) for t in attribution_targets]
        return _token_targets(torch.tensor(ids), probs, W_U, tokenizer)
    return _custom_targets(attribution_targets, d_vocab, W_U.shape[1])


def _kind(target) -> str:
    if isinstance(target, (str, numbers.Integral)) and not isinstance(target, bool):
        return "token"
    if isinstance(target, tuple):
        return "custom"
    raise TargetError(f"an attribution target is a token (string or id) or a (label, weight, vector) tuple, "
                      f"not {type(target).__name__}")


def _token_targets(ids: Tensor, probs: Tensor, W_U: Tensor, tokenizer) -> Targets:
    vectors = W_U[ids] - W_U.mean(dim=0, keepdim=True)  # demeaned: softmax ignores a shift of all logits
    return Targets(ids.long(), probs[ids], vectors, [tokenizer.decode([i]) for i in ids.tolist()])


def _custom_targets(targets, d_vocab: int, d_model: int) -> Targets:
    labels, weights, vectors = [], [], []
    for i, target in enumerate(targets):
        if len(target) != 3:
            raise TargetError(f"custom target {i} has {len(target)} elements; it is (label, weight, vector)")
        label, weight, vector = target
        if not isinstance(label, str):
            raise TargetError(f"custom target {i}'s label is a {type(label).__name__}, not a string")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise TargetError(f"custom target {label!r}'s weight is {weight!r}, not a finite number")
        if not isinstance(vector, Tensor) or tuple(vector.shape) != (d_model,):
            shape = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
            raise TargetError(f"custom target {label!r}'s vector is {shape}, not a tensor of shape ({d_model},) "
                              "(a direction in the residual stream)")
        labels.append(label)
        weights.append(float(weight))
        vectors.append(vector.detach().float().cpu())
    return Targets(torch.arange(d_vocab, d_vocab + len(labels)), torch.tensor(weights), torch.stack(vectors), labels)


def logit_difference_target(model, token: str | int, other: str | int, weight: float = 1.0,
                            label: str | None = None) -> CustomTarget:
    """The target "``token`` rather than ``other``": the direction whose dot product with the final norm's output
    is ``logit(token) - logit(other)`` (the difference of their unembedding rows), e.g.
    ``logit_difference_target(model, " Paris", " Rome")``; its label defaults to ``logit(A)-logit(B)``."""
    W_U = model.W_U.detach().T.float()  # TransformerLens's public [d_model, vocab], transposed to rows of tokens
    a, b = (single_token_id(model.tokenizer, t, W_U.shape[0]) for t in (token, other))
    if a == b:
        raise TargetError(f"{token!r} and {other!r} are the same token: their logit difference is always 0")
    if label is None:
        names = [t if isinstance(t, str) else model.tokenizer.decode([t]) for t in (token, other)]
        label = f"logit({names[0]})-logit({names[1]})"
    return CustomTarget(label, float(weight), (W_U[a] - W_U[b]).cpu())
