"""Per-sentence importance from resampled rollouts (docs/methods.md 1.3), and the result object.

Given the rollouts of one trace (``kind="resample"``: continue from the prefix before sentence i;
``kind="forced"``: force the answer right after that prefix), every sentence i gets

- ``accuracy``: share of correct answers among the rollouts resampled at i that gave an answer;
- ``resampling_importance_accuracy`` = acc[i+1] - acc[i]; ``resampling_importance_kl`` =
  KL(answers_i || answers_{i+1}): what keeping sentence i (rather than resampling it) changes;
- ``counterfactual_importance_*``: the same, but comparing only the rollouts where the sentence that
  replaced i is *dissimilar* to it (cosine < 0.8), against rollouts_{i+1} (plus the similar ones for KL);
- ``forced_importance_*``: the resampling metrics on forced-answer rollouts;
- ``different_trajectories_fraction`` (share of dissimilar replacements) and ``overdeterminedness``
  (1 - distinct replacements / replacements);
- a sentence-to-sentence ``counterfactual_matrix`` M[i, j] (j > i): how much more often a sentence like
  j appears later when i is kept than when i is resampled into something different.


Conventions (documented choices):

- Rollouts without an answer are left out of every answer-based number *and* of the trajectory
  counts (the published values were computed that way). The matrix uses all resample rollouts.
- Metrics that compare i with i+1 do not exist for the last sentence: they are NaN here (the published
  files write 0.0; ``export_chunks_labeled`` does the same). ``different_trajectories_fraction`` and
  ``overdeterminedness`` need no i+1 and are computed for the last sentence too (published: 0.0).
- NaN also marks "not measured" (no forced rollouts, no answered rollouts). Where docs/methods.md defines a
  value as 0 (no dissimilar rollout; an empty answer distribution in a KL) it is 0.
- Answers as equivalence classes (``answer_equivalence=True``, the default): answers that ``check_answer``
  deems equal (``42``, ``6*7``, ``\\frac{84}{2}``, ``42.0``) are one answer in every answer distribution
  (the KL metrics, resample and forced); each answer is replaced by its class representative once,
  before anything is counted (``canonical_answers``). ``answer_equivalence=False`` keeps the published
  string-level distributions (normalised strings). Accuracy uses ``is_correct`` (already ``check_answer``
  against the reference) either way; the counterfactual matrix reads sentences, not answers.
- Intervals: ``n_bootstrap`` resamples of the rollouts within each sentence (answered rollouts, with
  replacement, each sentence independently, seeded) give percentile intervals for every metric
  (``<metric>_ci_low`` / ``_ci_high``); ``ImportanceResult.top_sentence`` compares the top sentence with the
  runner-up on the same resamples.
- Cut-off rollouts (``finish_reason="length"``) count in ``n_truncated``; their answer is a complete
  ``\\boxed{}`` or none (``anchorlens.answers.read_answer``).

>>> from anchorlens.resampling.rollout import Rollout
>>> r = lambda i, ans, ok, chunk="x": Rollout("t", i, "resample", 0, chunk, chunk, ans, ok)
>>> rollouts = [r(0, "1", False), r(0, "2", True), r(1, "2", True), r(1, "2", True)]
>>> res = sentence_importance(rollouts, ["x", "y"], embed=lambda ts: torch.ones(len(ts), 1))
>>> float(res.resampling_importance_accuracy[0])
0.5
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from anchorlens.answers import answer_classes, normalize_answer
from anchorlens.errors import AnchorlensError, InputError
from anchorlens.resampling.bootstrap import BOOTSTRAP_METRICS, TopSentence, make_group, replicate_metrics, top_sentence
from anchorlens.stats import check_level, percentile_interval, renamed_arguments
from anchorlens.resampling.rollout import FORCED, RESAMPLE, Rollout
from anchorlens.resampling.similarity import SIMILARITY_THRESHOLD, Embedder, cosine_similarity, embed_unique
from anchorlens.results import Result
from anchorlens.stats import LEVEL, N_BOOTSTRAP
from anchorlens.progress import progress_bar

KL_ALPHA = 1e-9  # the reference's smoothing constant (1 would be Laplace smoothing)
TRUNCATED_SHARE = 0.25  # warn when more than this share of a sentence's rollouts were cut off

# Column names exactly as in the published chunks_labeled.json, in its order.
COUNT_COLUMNS = ("n_rollouts", "n_answered", "n_forced", "n_truncated")

METRIC_COLUMNS = BOOTSTRAP_METRICS  # every metric carries a bootstrap interval: one list, kept in bootstrap.py


RolloutMismatchError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


# --------------------------------------------------------------------------- pure helpers


def answer_counts(answers: Iterable[str | None]) -> Counter:
    """Counts of normalised answers, leaving out missing and empty ones.

    >>> answer_counts([r"\\dfrac{1}{2}", r"\\frac12", None, ""])
    Counter({'\\\\frac{1}{2}': 1, '\\\\frac12': 1})
    """
    counts: Counter = Counter()
    for answer in answers:
        key = normalize_answer(answer)
        if key and key != "none":
            counts[key] += 1
    return counts


def kl_divergence(p_counts: Counter, q_counts: Counter, alpha: float = KL_ALPHA) -> float:
    """KL(p || q) between two answer-count distributions over their union support (docs/methods.md 1.3).

    Each side is smoothed as ``(count + alpha) / (total + alpha * V)`` with V the size of the union
    support; the result is clipped at 0. An empty side gives 0 (nothing to compare).

    >>> round(kl_divergence(Counter(a=1, b=1), Counter(a=2), alpha=1.0), 4)
    0.1438
    """
    support = set(p_counts) | set(q_counts)
    n_p, n_q = sum(p_counts.values()), sum(q_counts.values())
    if n_p == 0 or n_q == 0:
        return 0.0
    v = len(support)
    total = 0.0
    for answer in support:
        p = (p_counts.get(answer, 0) + alpha) / (n_p + alpha * v)
        q = (q_counts.get(answer, 0) + alpha) / (n_q + alpha * v)
        total += p * math.log(p / q)
    return max(0.0, total)


def canonical_answers(rollouts: Sequence[Rollout], reference: str | None = None) -> list[Rollout]:
    """The rollouts with each answer replaced by the representative of its ``check_answer`` class.

    Classes are formed once over all the answers given (``anchorlens.answers.answer_classes``, visiting the
    reference answer first when given, then answers from most to least frequent), so every sentence and
    both kinds share one labelling. Missing and empty answers are left as they are.

    >>> rs = [Rollout("t", 0, "resample", k, "", "", a, None) for k, a in enumerate(["42", "6*7", "41"])]
    >>> [r.answer for r in canonical_answers(rs)]
    ['42', '42', '41']
    """
    classes = answer_classes([r.answer for r in rollouts], reference)
    out = []
    for r in rollouts:
        key = normalize_answer(r.answer)
        out.append(replace(r, answer=classes[key]) if key in classes else r)
    return out


def _answered(rollout: Rollout) -> bool:
    key = normalize_answer(rollout.answer)
    return bool(key) and key != "none"


def rollout_accuracy(rollouts: Sequence[Rollout]) -> float:
    """Share of correct answers among rollouts with an answer and a known correctness; NaN if none.

    >>> rollout_accuracy([])
    nan
    """
    judged = [r for r in rollouts if _answered(r) and r.is_correct is not None]
    if not judged:
        return float("nan")
    return sum(bool(r.is_correct) for r in judged) / len(judged)


def similarity_to(
    original: str, resampled: Sequence[str], embed: Embedder | None = None
) -> Float[Tensor, "n"]:
    """Cosine similarity between ``original`` and each resampled sentence (each string embedded once)."""
    vectors, index = embed_unique([original, *resampled], embed)
    sims = cosine_similarity(vectors[index[:1]], vectors)[0]
    return sims[torch.tensor(index[1:], dtype=torch.long)]


def different_trajectories_fraction(
    original: str, resampled: Sequence[str], threshold: float = SIMILARITY_THRESHOLD, *, embed: Embedder | None = None
) -> float:
    """Share of resampled sentences whose cosine similarity to ``original`` is below ``threshold``.

    ``resampled`` are the ``chunk_resampled`` strings of the rollouts at one sentence; ``embed`` defaults to
    all-MiniLM-L6-v2. NaN when ``resampled`` is empty.

    >>> different_trajectories_fraction("Let me compute 2+2.", ["Let me compute 2 + 2.", "Wait, that's wrong."])
    0.5
    """
    if isinstance(resampled, str):
        raise AnchorlensError("resampled must be a list of strings (the chunk_resampled of each rollout), not one str")
    if len(resampled) == 0:
        return float("nan")
    sims = similarity_to(original, list(resampled), embed)
    return float((sims < threshold).float().mean())


def overdeterminedness(resampled: Sequence[str]) -> float:
    """1 - (distinct resampled sentences) / (resampled sentences): how often resampling repeats itself.

    Strings are compared exactly, as published. NaN when ``resampled`` is empty.

    >>> overdeterminedness(["a", "a", "b", "c"])
    0.25
    """
    if isinstance(resampled, str):
        raise AnchorlensError("resampled must be a list of strings (the chunk_resampled of each rollout), not one str")
    if len(resampled) == 0:
        return float("nan")
    return 1.0 - len(set(resampled)) / len(resampled)


def matching_sentences(
    texts: Sequence[str],
    originals: Sequence[str],
    threshold: float = SIMILARITY_THRESHOLD,
    embed: Embedder | None = None,
    progress: bool = True,
) -> Bool[Tensor, "rollout sentence"]:
    """For each rollout text, which original sentences it contains a match of (cosine >= threshold).

    Each text is split into sentences with the thought-anchors rules; distinct sentences are embedded once.
    """
    from anchorlens.sentences import split_sentences

    pieces: list[list[str]] = []
    for text in texts:
        try:
            pieces.append([s.text for s in split_sentences(text, style="thought-anchors")])
        except AnchorlensError:  # an empty continuation holds no sentence
            pieces.append([])
    flat = [p for ps in pieces for p in ps]
    out = torch.zeros(len(texts), len(originals), dtype=torch.bool)
    if not flat:
        return out
    vectors, index = embed_unique(list(originals) + flat, embed)
    n = len(originals)
    orig = vectors[torch.tensor(index[:n])]
    distinct = sorted(set(index[n:]))
    row = {u: k for k, u in enumerate(distinct)}
    hits = cosine_similarity(vectors[torch.tensor(distinct)], orig) >= threshold  # [distinct, sentence]
    k = n
    for r, ps in enumerate(progress_bar(pieces, desc="matching rollout sentences", progress=progress)):
        if ps:
            rows = torch.tensor([row[index[k + m]] for m in range(len(ps))])
            out[r] = hits[rows].any(dim=0)
        k += len(ps)
    return out


# --------------------------------------------------------------------------- the result


@renamed_arguments(confidence="level")
@dataclass
class ImportanceResult(Result):
    """Per-sentence importance of one trace. Every metric is a ``Float[Tensor, "sentence"]``.

    ``to_dataframe()`` gives one row per sentence with the published column names (``chunk``,
    ``chunk_idx``, the metrics of ``METRIC_COLUMNS``), plus rollout counts (``n_rollouts``, ``n_answered``,
    ``n_forced``, ``n_truncated``), the bootstrap intervals (``<metric>_ci_low`` / ``_ci_high``) and
    ``category`` when known.

    ``intervals`` maps each metric to its ``[2, sentence]`` (low, high) interval; ``bootstrap`` keeps the
    ``[draws, sentence]`` replicates behind them (for ``top_sentence``).

    >>> df = result.to_dataframe()                                  # doctest: +SKIP
    >>> df.sort_values("counterfactual_importance_kl").tail(3)      # doctest: +SKIP
    """

    sentences: list[str]
    accuracy: Float[Tensor, "sentence"]
    resampling_importance_accuracy: Float[Tensor, "sentence"]
    resampling_importance_kl: Float[Tensor, "sentence"]
    counterfactual_importance_accuracy: Float[Tensor, "sentence"]
    counterfactual_importance_kl: Float[Tensor, "sentence"]
    forced_importance_accuracy: Float[Tensor, "sentence"]
    forced_importance_kl: Float[Tensor, "sentence"]
    different_trajectories_fraction: Float[Tensor, "sentence"]
    overdeterminedness: Float[Tensor, "sentence"]
    counterfactual_matrix: Float[Tensor, "sentence sentence"]
    n_rollouts: Float[Tensor, "sentence"]  # resample rollouts per sentence
    n_answered: Float[Tensor, "sentence"]  # of which gave an answer
    n_forced: Float[Tensor, "sentence"]  # forced-answer rollouts per sentence
    categories: list[str] | None = None  # taxonomy tag per sentence (docs/methods.md 1.4), when known
    trace_id: str | None = None
    extra: dict = field(default_factory=dict)  # other per-sentence columns kept on import (summary, depends_on)
    n_truncated: Float[Tensor, "sentence"] | None = None  # resample rollouts cut off at the token limit
    intervals: dict = field(default_factory=dict)  # metric -> Float[Tensor, "2 sentence"] (low, high)
    bootstrap: dict = field(default_factory=dict)  # metric -> Float[Tensor, "draw sentence"]
    level: float = LEVEL  # the intervals' level (old name ``confidence``: deprecated, goes in 0.3)
    answer_equivalence: bool | None = None  # None: unknown (imported results)
    run_info: dict = field(default_factory=dict)  # how the rollouts were obtained (resampling_importance fills it)

    def __post_init__(self) -> None:
        n = len(self.sentences)
        if self.n_truncated is None:
            self.n_truncated = torch.full((n,), float("nan"))
        for name in (*METRIC_COLUMNS, *COUNT_COLUMNS):
            value = torch.as_tensor(getattr(self, name), dtype=torch.float64)
            if value.shape != (n,):
                raise AnchorlensError(f"{name} has shape {tuple(value.shape)}; expected ({n},), one value per sentence")
            setattr(self, name, value)
        self.counterfactual_matrix = torch.as_tensor(self.counterfactual_matrix, dtype=torch.float64)
        if self.counterfactual_matrix.shape != (n, n):
            raise AnchorlensError(f"counterfactual_matrix must be ({n}, {n}), got {tuple(self.counterfactual_matrix.shape)}")
        if self.categories is not None and len(self.categories) != n:
            raise AnchorlensError(f"{len(self.categories)} categories for {n} sentences; give one per sentence")
        self.intervals = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in self.intervals.items()}
        self.bootstrap = {k: torch.as_tensor(v) for k, v in self.bootstrap.items()}
        for name, value in self.intervals.items():
            if value.shape != (2, n):
                raise AnchorlensError(f"the interval of {name} has shape {tuple(value.shape)}; expected (2, {n})")

    def __len__(self) -> int:
        return len(self.sentences)

    def metric(self, name: str) -> Float[Tensor, "sentence"]:
        """One metric by its published column name."""
        if name not in METRIC_COLUMNS:
            raise AnchorlensError(f"unknown metric {name!r}; choose one of {METRIC_COLUMNS}")
        return getattr(self, name)

    def to_dataframe(self):
        """One row per sentence: ``chunk``, ``chunk_idx``, the metrics, counts, intervals, and ``category`` if known."""
        import pandas as pd

        data = {"chunk": list(self.sentences), "chunk_idx": list(range(len(self)))}
        for name in METRIC_COLUMNS:
            data[name] = getattr(self, name).numpy()
        for name in COUNT_COLUMNS:
            data[name] = pd.array(getattr(self, name).numpy(), dtype="Int64")  # <NA> where unknown (imported files)
        for name in METRIC_COLUMNS:
            if name in self.intervals:
                data[f"{name}_ci_low"] = self.intervals[name][0].numpy()
                data[f"{name}_ci_high"] = self.intervals[name][1].numpy()
        if self.categories is not None:
            data["category"] = list(self.categories)
        for name, values in self.extra.items():
            if len(values) == len(self):
                data[name] = list(values)
        return pd.DataFrame(data)

    def top_sentence(self, metric: str = "resampling_importance_accuracy") -> TopSentence:
        """The sentence with the highest ``metric``, its interval, and whether it stands out from the runner-up
        (the interval of top - runner-up over the same bootstrap draws lies above 0).

        ``str()`` of the result is a line for people: "the thought anchor by ...: sentence 4, +0.38 [+0.12,
        +0.60] ..." or "no sentence stands out from the runner-up ...".

        >>> print(result.top_sentence("resampling_importance_accuracy"))   # doctest: +SKIP
        """
        values = self.metric(metric).numpy()
        samples = self.bootstrap.get(metric)
        return top_sentence(metric, values, None if samples is None else samples.double().numpy(), self.level)

    def truncated_sentences(self, threshold: float = TRUNCATED_SHARE) -> list[int]:
        """Sentences more than ``threshold`` of whose resample rollouts were cut off at the token limit."""
        share = self.n_truncated / self.n_rollouts.clamp(min=1)
        return [int(i) for i in torch.nonzero(share > threshold).flatten()]

    def truncation_message(self, threshold: float = TRUNCATED_SHARE) -> str | None:
        """A warning naming the sentences ``truncated_sentences`` finds and the setting that fixes it; None if none."""
        flagged = self.truncated_sentences(threshold)
        if not flagged:
            return None
        shown = ", ".join(str(i) for i in flagged[:12]) + (", ..." if len(flagged) > 12 else "")
        total, cut = int(self.n_rollouts.nansum()), int(self.n_truncated.nansum())
        return (
            f"{len(flagged)} of {len(self)} sentences (sentences {shown}) had more than {threshold:.0%} of their "
            f"rollouts cut off at the token limit ({cut} of {total} rollouts in all); a cut-off rollout counts only "
            "if it already wrote a complete \\boxed{} answer. Give the rollouts more tokens: --rollout-tokens on "
            "the command line, rollout_max_tokens= in analyze, max_tokens= in resampling_importance."
        )

    def plot(self, metric: str = "counterfactual_importance_kl", ax=None):
        """Bars of one importance metric per sentence with its bootstrap interval as error bars, coloured by
        category when known. Returns the axes. Only metrics are plotted here: the rollout counts behind them are
        drawn by ``plot_counts``.

        >>> ax = result.plot("resampling_importance_accuracy")   # doctest: +SKIP
        """
        import matplotlib.pyplot as plt

        values = self.metric(metric).numpy()
        if ax is None:
            _, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(self)), 3.0))
        x = np.arange(len(self))
        if self.categories is None:
            ax.bar(x, np.nan_to_num(values), color="tab:blue")
        else:
            names = sorted(set(self.categories))
            palette = plt.get_cmap("tab10")
            colour = {c: palette(k % 10) for k, c in enumerate(names)}
            ax.bar(x, np.nan_to_num(values), color=[colour[c] for c in self.categories])
            handles = [plt.Rectangle((0, 0), 1, 1, color=colour[c]) for c in names]
            ax.legend(handles, names, fontsize=7, ncol=2, frameon=False)
        if metric in self.intervals:
            low, high = self.intervals[metric].numpy()
            ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
            ax.errorbar(x[ok], values[ok], yerr=[values[ok] - low[ok], high[ok] - values[ok]], fmt="none",
                        ecolor="black", elinewidth=0.8, capsize=2)
        ax.set_xlabel("sentence")
        ax.set_ylabel(metric)
        ax.set_title(self.trace_id or "sentence importance")
        return ax

    def plot_counts(self, ax=None):
        """The rollouts behind each sentence's estimates (``n_rollouts``, ``n_answered``, ``n_forced``,
        ``n_truncated``) as grouped bars per sentence. Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(6.0, 0.2 * len(self)), 3.0))
        x, width = np.arange(len(self)), 0.8 / len(COUNT_COLUMNS)
        for k, name in enumerate(COUNT_COLUMNS):
            ax.bar(x + (k - (len(COUNT_COLUMNS) - 1) / 2) * width, np.nan_to_num(getattr(self, name).numpy()), width,
                   label=name)
        ax.legend(fontsize=7, ncol=len(COUNT_COLUMNS), frameon=False)
        ax.set_xlabel("sentence")
        ax.set_ylabel("rollouts")
        ax.set_title(self.trace_id or "rollouts per sentence")
        return ax

    def plot_matrix(self, ax=None):
        """The sentence-to-sentence counterfactual matrix as a heat map (rows i, columns j). Returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4.5))
        m = self.counterfactual_matrix.numpy()
        bound = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
        image = ax.imshow(m, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.figure.colorbar(image, ax=ax)
        ax.set_xlabel("later sentence j")
        ax.set_ylabel("resampled sentence i")
        return ax

    _array_dicts = {"intervals": "ci__", "bootstrap": "bootstrap__"}  # metric -> array, one per metric

    def _to_file(self) -> tuple[dict, dict]:
        arrays, meta = super()._to_file()  # bootstrap draws in float32: half the file
        return {k: v.float() if k.startswith("bootstrap__") else v for k, v in arrays.items()}, meta


# --------------------------------------------------------------------------- the computation


def _group(rollouts: Sequence[Rollout], n: int) -> tuple[list[list[Rollout]], list[list[Rollout]]]:
    resample: list[list[Rollout]] = [[] for _ in range(n)]
    forced: list[list[Rollout]] = [[] for _ in range(n)]
    trace_ids = {r.trace_id for r in rollouts}
    if len(trace_ids) > 1:
        raise RolloutMismatchError(
            f"rollouts of {len(trace_ids)} traces ({sorted(trace_ids)[:3]}...): pass the rollouts of one trace at a time"
        )
    for r in rollouts:
        if not 0 <= r.sentence_index < n:
            raise RolloutMismatchError(
                f"a rollout resamples sentence {r.sentence_index} but the trace has {n} sentences: "
                "pass the trace's own sentences (original_sentences) with its rollouts"
            )
        if r.kind == RESAMPLE:
            resample[r.sentence_index].append(r)
        elif r.kind == FORCED:
            forced[r.sentence_index].append(r)
        else:
            raise RolloutMismatchError(f"unknown rollout kind {r.kind!r}; expected {RESAMPLE!r} or {FORCED!r}")
    return resample, forced


def _acc_and_kl(here: Sequence[Rollout], after: Sequence[Rollout], alpha: float) -> tuple[float, float]:
    """(acc[after] - acc[here], KL(answers here || answers after)); NaN where either side is unmeasured."""
    if not here or not after:
        return float("nan"), float("nan")
    acc = rollout_accuracy(after) - rollout_accuracy(here)
    kl = kl_divergence(answer_counts(r.answer for r in here), answer_counts(r.answer for r in after), alpha)
    return acc, kl


@renamed_arguments(confidence="level")
def sentence_importance(
    rollouts: Sequence[Rollout],
    original_sentences: list[str],
    *,
    embed: Embedder | None = None,
    similarity_threshold: float = SIMILARITY_THRESHOLD,
    alpha: float = KL_ALPHA,
    compute_matrix: bool = True,
    categories: list[str] | None = None,
    answer_equivalence: bool = True,
    reference_answer: str | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    level: float = LEVEL,
    bootstrap_seed: int = 0,
    progress: bool = True,
) -> ImportanceResult:
    """All docs/methods.md 1.3 metrics for one trace from its rollouts.

    Args:
        rollouts: the ``"resample"`` and ``"forced"`` rollouts of ONE trace; ``sentence_index`` i is the
            sentence resampled (its prefix is sentences 0..i-1).
        original_sentences: the trace's sentences, in order.
        embed: ``list[str] -> Float[Tensor, "n d"]`` of normalised embeddings; default all-MiniLM-L6-v2.
        similarity_threshold: cosine at or above which a resampled sentence counts as "similar" (0.8).
        alpha: KL smoothing (1e-9 as published; 1 is Laplace).
        compute_matrix: also compute the sentence-to-sentence counterfactual matrix (embeds every sentence
            of every rollout's text: the slow part); NaN matrix when False.
        categories: optional taxonomy tag per sentence, carried into the DataFrame and plots.
        answer_equivalence: count answers that ``check_answer`` deems equal as one answer (default); False
            gives the published string-level answer distributions.
        reference_answer: visited first when forming answer classes (optional).
        n_bootstrap: bootstrap draws for the intervals (0: none); level: their level; bootstrap_seed:
            the draws' seed.

    >>> result = sentence_importance(store.rollouts("trace-0"), trace_sentences)   # doctest: +SKIP
    >>> result.to_dataframe().head()                                                # doctest: +SKIP
    """
    n = len(original_sentences)
    if n == 0:
        raise AnchorlensError("original_sentences is empty: pass the trace's sentences (e.g. [s.text for s in trace.sentences])")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise AnchorlensError(f"n_bootstrap must be an integer >= 0 (0: no intervals), got {n_bootstrap!r}")
    check_level(level)
    if answer_equivalence:
        rollouts = canonical_answers(rollouts, reference_answer)  # once, before any distribution is counted
    resample, forced = _group(rollouts, n)
    answered = [[r for r in group if _answered(r)] for group in resample]
    similar_flags: list = [None] * n
    nan = float("nan")
    cols: dict[str, list[float]] = {name: [nan] * n for name in METRIC_COLUMNS}

    for i in progress_bar(range(n), desc="sentence importance", progress=progress and n >= 20):
        here = answered[i]
        cols["accuracy"][i] = rollout_accuracy(here)
        if here:
            sims = similarity_to(original_sentences[i], [r.chunk_resampled for r in here], embed)
            similar = sims >= similarity_threshold
            similar_flags[i] = similar.numpy()
            cols["different_trajectories_fraction"][i] = float((~similar).float().mean())
            cols["overdeterminedness"][i] = overdeterminedness([r.chunk_resampled for r in here])
        else:
            similar = torch.zeros(0, dtype=torch.bool)
        if i + 1 >= n:
            continue  # no sentence i+1: the comparisons below are undefined for the last sentence
        after = answered[i + 1]
        cols["resampling_importance_accuracy"][i], cols["resampling_importance_kl"][i] = _acc_and_kl(here, after, alpha)
        forced_here = [r for r in forced[i] if _answered(r)]
        forced_after = [r for r in forced[i + 1] if _answered(r)]
        cols["forced_importance_accuracy"][i], cols["forced_importance_kl"][i] = _acc_and_kl(forced_here, forced_after, alpha)
        if here and after:
            dissimilar = [r for r, s in zip(here, similar.tolist()) if not s]
            kept = list(after) + [r for r, s in zip(here, similar.tolist()) if s]
            if dissimilar:
                acc_d = rollout_accuracy(dissimilar)
                acc_next = rollout_accuracy(after)
                cols["counterfactual_importance_accuracy"][i] = (acc_d - acc_next) if not math.isnan(acc_d) else 0.0
                cols["counterfactual_importance_kl"][i] = kl_divergence(
                    answer_counts(r.answer for r in dissimilar), answer_counts(r.answer for r in kept), alpha
                )
            else:  # resampling never changed the sentence: no counterfactual to compare (docs/methods.md 1.3)
                cols["counterfactual_importance_accuracy"][i] = 0.0
                cols["counterfactual_importance_kl"][i] = 0.0

    intervals, samples = {}, {}
    if n_bootstrap:
        samples = bootstrap_samples(answered, forced, similar_flags, alpha, n_bootstrap, bootstrap_seed)
        for name, draws in samples.items():
            intervals[name] = np.stack(percentile_interval(draws, level))
            samples[name] = torch.from_numpy(draws)
    matrix = torch.full((n, n), nan, dtype=torch.float64)
    if compute_matrix:
        matrix = counterfactual_matrix(
            resample, original_sentences, embed=embed, threshold=similarity_threshold, progress=progress
        )
    return ImportanceResult(
        sentences=list(original_sentences),
        n_rollouts=torch.tensor([len(g) for g in resample], dtype=torch.float64),
        n_answered=torch.tensor([len(g) for g in answered], dtype=torch.float64),
        n_forced=torch.tensor([len(g) for g in forced], dtype=torch.float64),
        n_truncated=torch.tensor([sum(r.truncated for r in g) for g in resample], dtype=torch.float64),
        counterfactual_matrix=matrix,
        categories=categories,
        trace_id=rollouts[0].trace_id if rollouts else None,
        intervals=intervals,
        bootstrap=samples,
        level=level,
        answer_equivalence=answer_equivalence,
        **{name: torch.tensor(values, dtype=torch.float64) for name, values in cols.items()},
    )


def bootstrap_samples(answered: Sequence[Sequence[Rollout]], forced: Sequence[Sequence[Rollout]],
                      similar: Sequence, alpha: float, n_bootstrap: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every metric recomputed on ``n_bootstrap`` draws of each sentence's rollouts: ``{metric: [draws, sentence]}``.

    ``answered[i]``: the answered resample rollouts at i; ``forced[i]``: the forced rollouts at i (the
    unanswered are dropped here); ``similar[i]``: whether each of ``answered[i]`` kept sentence i (cosine >=
    threshold), None when ``answered[i]`` is empty. ``n_bootstrap=None`` gives the point values (one draw).
    """
    ids: dict = {}
    chunk_ids: dict = {}
    groups = [
        make_group([normalize_answer(r.answer) for r in g], [r.is_correct for r in g], ids,
                   similar=sim, chunks=[r.chunk_resampled for r in g], chunk_ids=chunk_ids)
        for g, sim in zip(answered, similar)
    ]
    forced_groups = []
    for g in forced:
        g = [r for r in g if _answered(r)]
        forced_groups.append(make_group([normalize_answer(r.answer) for r in g], [r.is_correct for r in g], ids))
    return replicate_metrics(groups, forced_groups, alpha, n_bootstrap, seed)


def counterfactual_matrix(
    resample: Sequence[Sequence[Rollout]],
    original_sentences: Sequence[str],
    *,
    embed: Embedder | None = None,
    threshold: float = SIMILARITY_THRESHOLD,
    progress: bool = True,
) -> Float[Tensor, "sentence sentence"]:
    """M[i, j] (j > i): P(a sentence like j appears | i kept) - P(same | i resampled into something else).

    ``resample[i]`` are the resample rollouts at sentence i. "Kept" are the rollouts resampled at i+1 (their
    prefix holds sentence i verbatim) plus those at i whose replacement is similar to i (cosine >=
    ``threshold``), as for ``counterfactual_importance_kl``; "resampled" are the dissimilar ones. A rollout
    "contains j" when a sentence of its text has cosine >= ``threshold`` with sentence j. Rows with no
    dissimilar rollout are 0 (as for counterfactual importance); entries with no rollouts, and j <= i, NaN.
    """
    n = len(original_sentences)
    flat = [r for group in resample for r in group]
    matrix = torch.full((n, n), float("nan"), dtype=torch.float64)
    if not flat:
        return matrix
    contains = matching_sentences([r.text for r in flat], original_sentences, threshold, embed, progress)
    offsets = np.cumsum([0] + [len(g) for g in resample])
    first = [
        similarity_to(original_sentences[i], [r.chunk_resampled for r in resample[i]], embed) >= threshold
        if resample[i]
        else torch.zeros(0, dtype=torch.bool)
        for i in range(n)
    ]
    for i in range(n - 1):
        rows_i = contains[offsets[i] : offsets[i + 1]]
        rows_next = contains[offsets[i + 1] : offsets[i + 2]]
        kept = torch.cat([rows_next, rows_i[first[i]]])
        changed = rows_i[~first[i]]
        if len(kept) == 0:
            continue
        if len(changed) == 0:
            matrix[i, i + 1 :] = 0.0
            continue
        diff = kept.double().mean(0) - changed.double().mean(0)
        matrix[i, i + 1 :] = diff[i + 1 :]
    return matrix
