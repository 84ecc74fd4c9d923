"""Point values and bootstrap intervals over rollouts for the branch methods (one place, reusing
``anchorlens.resampling.bootstrap``: its draws, accuracy, histograms, smoothed KL and percentile intervals).

Two estimates:

- ``anchorlens.stats.bootstrap_mean``: the mean of one number per rollout (a resilience
  score, an abandoned flag), with a percentile interval from resampling the rollouts with replacement;
- ``compare_outcomes``: two sets of rollouts (e.g. the abandoned ones and those that kept the sentence): the
  accuracy of each, the difference ``acc(treated) - acc(base)`` and ``KL(answers treated || answers base)`` with
  the same smoothing as resampling importance (``kl_divergence``), each set resampled independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from anchorlens.answers import normalize_answer
from anchorlens.resampling.bootstrap import _accuracy, _counts, _draws, kl_rows, make_group
from anchorlens.stats import percentile_interval
from anchorlens.resampling.metrics import _answered, canonical_answers
from anchorlens.resampling.rollout import Rollout

NAN = float("nan")


@dataclass
class Comparison:
    """``treated`` against ``base``: accuracies, their difference and the answer KL, each with an interval."""

    accuracy_treated: float = NAN
    accuracy_base: float = NAN
    difference: float = NAN  # acc(treated) - acc(base)
    difference_ci: tuple[float, float] = (NAN, NAN)
    kl: float = NAN  # KL(answers treated || answers base)
    kl_ci: tuple[float, float] = (NAN, NAN)
    n_treated: int = 0  # answered rollouts
    n_base: int = 0


def compare_outcomes(treated: Sequence[Rollout], base: Sequence[Rollout], *, alpha: float, n_bootstrap: int,
                     level: float, rng: np.random.Generator, answer_equivalence: bool = True,
                     reference: str | None = None) -> Comparison:
    """Compare the answers of two sets of rollouts (answered ones only, as resampling importance counts them)."""
    treated = [r for r in treated if _answered(r)]
    base = [r for r in base if _answered(r)]
    out = Comparison(n_treated=len(treated), n_base=len(base))
    if not treated or not base:
        return out
    if answer_equivalence:  # one labelling of answers for both sides, as sentence_importance does
        both = canonical_answers(list(treated) + list(base), reference)
        treated, base = both[: len(treated)], both[len(treated):]
    ids: dict = {}
    groups = [make_group([normalize_answer(r.answer) for r in g], [r.is_correct for r in g], ids)
              for g in (treated, base)]
    k = len(ids)
    point = [np.arange(len(g))[None, :] for g in groups]
    acc_t, acc_b = (_accuracy(g, ix)[0] for g, ix in zip(groups, point))
    out.accuracy_treated, out.accuracy_base = float(acc_t), float(acc_b)
    out.difference = float(acc_t - acc_b)
    kl = kl_rows(_counts(groups[0].answer[point[0]], k), _counts(groups[1].answer[point[1]], k), alpha)
    out.kl = float(kl[0])
    if n_bootstrap:
        idx = _draws(groups, n_bootstrap, rng)
        diff = _accuracy(groups[0], idx[0]) - _accuracy(groups[1], idx[1])
        kls = kl_rows(_counts(groups[0].answer[idx[0]], k), _counts(groups[1].answer[idx[1]], k), alpha)
        low, high = percentile_interval(np.stack([diff, kls], 1), level)
        out.difference_ci = (float(low[0]), float(high[0]))
        out.kl_ci = (float(low[1]), float(high[1]))
    return out
