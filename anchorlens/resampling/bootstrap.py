"""Bootstrap intervals for the resampling metrics: resample each sentence's rollouts, recompute every metric.

One bootstrap replicate draws, for every sentence independently, as many rollouts as it has (its answered
resample rollouts, and its answered forced rollouts) with replacement, and recomputes all docs/methods.md 1.3
metrics from those draws exactly as ``sentence_importance`` does (``replicate_metrics`` with the identity
draw reproduces the point values; tested). The replicates are vectorised: each sentence is handled once
for all ``n_bootstrap`` draws (``[draws, rollouts]`` index arrays), so the cost is one Python step per
sentence, not per draw.

Percentile intervals (``anchorlens.stats.percentile_interval``: the two tail quantiles of the replicates,
NaN replicates left out). Since a replicate is a draw of the whole trace, the same replicates give paired
intervals for differences between sentences (``TopSentence``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from anchorlens.stats import interval, renamed_arguments, resample_indices

# The metrics, named as in the published chunks_labeled.json and in its order (metrics.METRIC_COLUMNS).
BOOTSTRAP_METRICS = (
    "accuracy",
    "resampling_importance_accuracy",
    "resampling_importance_kl",
    "counterfactual_importance_accuracy",
    "counterfactual_importance_kl",
    "forced_importance_accuracy",
    "forced_importance_kl",
    "different_trajectories_fraction",
    "overdeterminedness",
)


@dataclass
class Group:
    """The answered rollouts of one sentence and kind, as arrays (one entry per rollout)."""

    answer: np.ndarray  # int: answer class id, shared across the trace
    judged: np.ndarray  # bool: correctness known
    correct: np.ndarray  # bool
    similar: np.ndarray  # bool: replacement similar to the original sentence (resample rollouts only)
    chunk: np.ndarray  # int: id of the chunk_resampled string (resample rollouts only)

    def __len__(self) -> int:
        return len(self.answer)


def make_group(answers: Sequence[str], correct: Sequence[bool | None], ids: dict, similar=None, chunks=None,
               chunk_ids: dict | None = None) -> Group:
    """Arrays for one group; ``ids`` / ``chunk_ids`` map strings to ints and grow as new strings appear."""
    n = len(answers)
    answer = np.array([ids.setdefault(a, len(ids)) for a in answers], dtype=np.int64)
    judged = np.array([c is not None for c in correct], dtype=bool)
    ok = np.array([bool(c) for c in correct], dtype=bool)
    sim = np.zeros(n, dtype=bool) if similar is None else np.asarray(similar, dtype=bool)
    if chunks is None or chunk_ids is None:
        chunk = np.zeros(n, dtype=np.int64)
    else:
        chunk = np.array([chunk_ids.setdefault(c, len(chunk_ids)) for c in chunks], dtype=np.int64)
    return Group(answer, judged, ok, sim, chunk)


def _draws(groups: Sequence[Group], n_bootstrap: int | None, rng) -> list[np.ndarray]:
    """``[draws, n_g]`` row indices per group; ``n_bootstrap=None``: one identity draw (the point values)."""
    if n_bootstrap is None:
        return [np.arange(len(g))[None, :] for g in groups]
    return [resample_indices(len(g), n_bootstrap, rng) for g in groups]


def _accuracy(group: Group, idx: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Share correct among judged drawn rollouts (optionally only where ``mask``), NaN where none: ``[draws]``."""
    judged = group.judged[idx]
    if mask is not None:
        judged = judged & mask
    n = judged.sum(1)
    hits = (group.correct[idx] & judged).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def _counts(local: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-draw histograms ``[draws, k]`` of local class ids ``[draws, m]`` (one bincount for all draws)."""
    draws = local.shape[0]
    flat = (np.arange(draws)[:, None] * k + local).ravel()
    w = None if weights is None else weights.ravel().astype(np.float64)
    return np.bincount(flat, weights=w, minlength=draws * k).reshape(draws, k).astype(np.float64)


def kl_rows(p: np.ndarray, q: np.ndarray, alpha: float) -> np.ndarray:
    """Row-wise KL(p || q) of count histograms with ``kl_divergence``'s smoothing over each row's union support."""
    n_p, n_q = p.sum(1), q.sum(1)
    support = (p > 0) | (q > 0)
    v = support.sum(1)
    pp = (p + alpha) / (n_p + alpha * v)[:, None]
    qq = (q + alpha) / (n_q + alpha * v)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(support, pp * np.log(pp / qq), 0.0)
    kl = np.maximum(terms.sum(1), 0.0)
    return np.where((n_p > 0) & (n_q > 0), kl, 0.0)


def _local(a: Group, b: Group) -> tuple[np.ndarray, np.ndarray, int]:
    """Answer ids of two groups renumbered over their union (small histograms however many answers the trace has)."""
    classes, inverse = np.unique(np.concatenate([a.answer, b.answer]), return_inverse=True)
    return inverse[: len(a)], inverse[len(a):], len(classes)


def replicate_metrics(resample: Sequence[Group], forced: Sequence[Group], alpha: float,
                      n_bootstrap: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every metric of every sentence for each bootstrap draw: ``{metric: [draws, sentence]}``.

    ``resample[i]`` / ``forced[i]`` are the answered rollouts at sentence i. ``n_bootstrap=None`` computes
    the point values (one identity draw), which match ``sentence_importance``.
    """
    n = len(resample)
    # Hand-written, not scipy.stats.bootstrap: one draw of every sentence's rollouts feeds all metrics, the
    # next sentence's metrics (importance = acc[i+1] - acc[i]) and the top-vs-runner-up difference at once.
    rng = np.random.default_rng(seed)
    idx_r = _draws(resample, n_bootstrap, rng)
    idx_f = _draws(forced, n_bootstrap, rng)
    draws = 1 if n_bootstrap is None else n_bootstrap
    out = {name: np.full((draws, n), np.nan) for name in BOOTSTRAP_METRICS}
    acc = [_accuracy(g, ix) if len(g) else np.full(draws, np.nan) for g, ix in zip(resample, idx_r)]
    facc = [_accuracy(g, ix) if len(g) else np.full(draws, np.nan) for g, ix in zip(forced, idx_f)]
    for i in range(n):
        here, ix = resample[i], idx_r[i]
        out["accuracy"][:, i] = acc[i]
        if len(here):
            dissimilar = ~here.similar[ix]
            out["different_trajectories_fraction"][:, i] = dissimilar.mean(1)
            chunks = np.sort(here.chunk[ix], axis=1)
            distinct = 1 + (np.diff(chunks, axis=1) != 0).sum(1)
            out["overdeterminedness"][:, i] = 1.0 - distinct / len(here)
        if i + 1 >= n:
            continue
        after, ix_next = resample[i + 1], idx_r[i + 1]
        if len(here) and len(after):
            out["resampling_importance_accuracy"][:, i] = acc[i + 1] - acc[i]
            a, b, k = _local(here, after)
            p, q = _counts(a[ix], k), _counts(b[ix_next], k)
            out["resampling_importance_kl"][:, i] = kl_rows(p, q, alpha)
            sim = here.similar[ix]
            p_dis = _counts(a[ix], k, weights=~sim)
            kept = q + (p - p_dis)
            any_dis = (~sim).any(1)
            acc_d = _accuracy(here, ix, mask=~sim)
            cf_acc = np.where(np.isnan(acc_d), 0.0, acc_d - acc[i + 1])
            out["counterfactual_importance_accuracy"][:, i] = np.where(any_dis, cf_acc, 0.0)
            out["counterfactual_importance_kl"][:, i] = np.where(any_dis, kl_rows(p_dis, kept, alpha), 0.0)
        fh, fa = forced[i], forced[i + 1]
        if len(fh) and len(fa):
            out["forced_importance_accuracy"][:, i] = facc[i + 1] - facc[i]
            a, b, k = _local(fh, fa)
            out["forced_importance_kl"][:, i] = kl_rows(_counts(a[idx_f[i]], k), _counts(b[idx_f[i + 1]], k), alpha)
    return out


@renamed_arguments(confidence="level")
@dataclass
class TopSentence:
    """The sentence with the highest value of a metric, its interval, and how it compares with the runner-up.

    Attributes:
        metric: the metric's name.
        index: the top sentence (None when no sentence has a value).
        value, ci_low, ci_high: its value and interval.
        runner_up: the sentence with the second-highest value (None if there is none).
        difference, difference_ci_low, difference_ci_high: top - runner-up and its interval, from the same
            bootstrap draws (paired).
        stands_out: whether that interval lies above 0; None without bootstrap draws or a runner-up.
        level: the intervals' level (``confidence``, its old name, is deprecated and goes in 0.3).

    The top is chosen on the same data the interval is computed from, so the comparison is somewhat
    optimistic (winner's curse); measured on 100 synthetic traces with no real difference between sentences
    (10 sentences, 100 rollouts each, accuracy 0.5), the top stood out in none (tests/test_metrics.py).
    """

    metric: str
    index: int | None
    value: float
    ci_low: float
    ci_high: float
    runner_up: int | None
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    stands_out: bool | None
    level: float

    def __str__(self) -> str:
        if self.index is None:
            return f"no sentence has a {self.metric}"
        level = f"{round(100 * self.level)}%"
        head = f"sentence {self.index}, {self.value:+.2f} [{self.ci_low:+.2f}, {self.ci_high:+.2f}] ({level} interval)"
        if self.stands_out is None:
            return f"top sentence by {self.metric}: {head}; no interval against a runner-up"
        if self.stands_out:
            return (f"the thought anchor by {self.metric}: {head}; ahead of the runner-up (sentence {self.runner_up}) "
                    f"by {self.difference:+.2f} [{self.difference_ci_low:+.2f}, {self.difference_ci_high:+.2f}]")
        return (f"no sentence stands out from the runner-up by {self.metric}: the top, {head}, leads sentence "
                f"{self.runner_up} by {self.difference:+.2f} [{self.difference_ci_low:+.2f}, {self.difference_ci_high:+.2f}]")


def top_sentence(metric: str, values: np.ndarray, samples: np.ndarray | None, level: float) -> TopSentence:
    """``TopSentence`` from the point values ``[sentence]`` and bootstrap draws ``[draws, sentence]`` (or None)."""
    values = np.asarray(values, dtype=np.float64)
    order = [int(i) for i in np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable") if np.isfinite(values[i])]
    nan = float("nan")
    if not order:
        return TopSentence(metric, None, nan, nan, nan, None, nan, nan, nan, None, level)
    top = order[0]
    low = high = nan
    if samples is not None:
        low, high = interval(samples[:, top], level)
    if len(order) < 2:
        return TopSentence(metric, top, float(values[top]), low, high, None, nan, nan, nan, None, level)
    runner = order[1]
    difference = float(values[top] - values[runner])
    if samples is None:
        return TopSentence(metric, top, float(values[top]), low, high, runner, difference, nan, nan, None, level)
    d_low, d_high = interval(samples[:, top] - samples[:, runner], level)
    stands_out = bool(d_low > 0) if np.isfinite(d_low) else None
    return TopSentence(metric, top, float(values[top]), low, high, runner, difference, d_low, d_high, stands_out,
                       level)
