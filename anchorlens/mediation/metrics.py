"""Effects of an intervention on the answer (docs/methods.md section 2): pure functions of log-probabilities.

With ``r`` the base answer and ``r'`` the counterfactual answer, P the base run and P* the intervened run:

- ``stolfo_ie``: Stolfo et al.'s indirect effect ``1/2 [(P(r) - P*(r)) / P*(r) + (P*(r') - P(r')) / P(r')]``;
  with P* the counterfactual prompt's own run it is the total effect. Ratios explode where a probability
  is near 0, so the two metrics below are reported too.
- ``logit_diff``: ``LD = logit(r) - logit(r')`` normalised so that the base run is 0 and the counterfactual
  run is 1: ``(LD* - LD_base) / (LD_cf - LD_base)`` (NaN where the two runs' LD are equal, e.g. a pair
  with the same answer).
- ``logprob_base``, ``logprob_counterfactual``: ``log P*(r)`` and ``log P*(r')``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anchorlens.settings import MEDIATION_METRICS as METRICS  # names shared with the command line
from anchorlens.stats import normal_mean_interval


def stolfo_effect(base_logprobs: Tensor, patched_logprobs: Tensor) -> Tensor:
    """Stolfo's effect from ``[..., 2]`` log-probabilities of (r, r'); ``base_logprobs`` broadcasts."""
    p, p_star = base_logprobs.exp(), patched_logprobs.exp()
    return 0.5 * ((p[..., 0] - p_star[..., 0]) / p_star[..., 0] + (p_star[..., 1] - p[..., 1]) / p[..., 1])


def normalised_logit_diff(patched: Tensor, base: Tensor, counterfactual: Tensor, eps: float = 1e-6) -> Tensor:
    """``(LD* - LD_base) / (LD_cf - LD_base)``: 0 at the base run, 1 at the counterfactual run."""
    span = counterfactual - base
    return torch.where(span.abs() > eps, (patched - base) / span, torch.full_like(patched, float("nan")))


def effect(metric: str, patched_logprobs: Tensor, patched_logit_diff: Tensor, base_logprobs: Tensor,
           base_logit_diff: Tensor, cf_logit_diff: Tensor) -> Tensor:
    """One metric from the raw quantities; the base / counterfactual ones broadcast over trailing cells."""
    if metric == "stolfo_ie":
        return stolfo_effect(base_logprobs, patched_logprobs)
    if metric == "logit_diff":
        return normalised_logit_diff(patched_logit_diff, base_logit_diff, cf_logit_diff)
    if metric == "logprob_base":
        return patched_logprobs[..., 0]
    if metric == "logprob_counterfactual":
        return patched_logprobs[..., 1]
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


def answer_quantities(logits: Tensor, base_answer: Tensor, cf_answer: Tensor) -> tuple[Tensor, Tensor]:
    """From last-position logits ``[row, vocab]``: log-probabilities ``[row, 2]`` of (r, r') (full-vocabulary
    softmax, float32) and the logit difference ``logit(r) - logit(r')`` ``[row]``."""
    logits = logits.float()
    logprobs = logits.log_softmax(-1)
    answers = torch.stack([base_answer, cf_answer], dim=-1)
    chosen = logits.gather(-1, answers)
    return logprobs.gather(-1, answers), chosen[:, 0] - chosen[:, 1]


mean_and_ci = normal_mean_interval  # the mediation name; one implementation in anchorlens.stats
