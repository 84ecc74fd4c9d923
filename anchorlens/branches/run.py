"""One call of a Thought Branches method: the options the three methods share, and what a call opens and counts.

``resilience``, ``chain_disruption`` and ``transplant_resampling`` take the same options beyond their own
(``BranchOptions``: where the completions are stored, how they are sampled and read, the bootstrap) as keyword
arguments (``branch_options`` puts them in the functions' signatures), and each opens one ``BranchRun``: the
sampler and store, the trace's id and reference answer, the bootstrap's generator, the keyed samplers it makes,
the plain resampling rollouts it reuses, and the bookkeeping (settings, completions generated and reused, time)
that every result carries.
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from anchorlens import settings as defaults
from anchorlens.branches.intervals import Comparison, compare_outcomes
from anchorlens.branches.keyed import KeyedSampler, Outcome, check_count, keyed_sampler, open_run, outcome_name
from anchorlens.errors import EmptyTextError
from anchorlens.resampling.rollout import RESAMPLE, Rollout
from anchorlens.resampling.runner import RunSummary, default_trace_id, reread_answers, rollout_seed, run_rollouts
from anchorlens.resampling.samplers.base import Sampler, SamplingParams
from anchorlens.resampling.store import RolloutStore
from anchorlens.sentences import split_sentences
from anchorlens.stats import LEVEL, N_BOOTSTRAP, bootstrap_mean, check_level, renamed_arguments

MAX_TOKENS = 256


@dataclass(frozen=True)
class BranchOptions:
    """The keyword arguments every Thought Branches function takes besides its own.

    Attributes:
        store: the rollout store (default: the anchorlens cache's ``rollouts.sqlite``); every completion is
            stored as it arrives, so a killed call resumes where it stopped.
        trace_id: the trace's id in the store (default: a hash of its content).
        reference_answer: the correct answer (default ``trace.metadata["reference_answer"]``).
        outcome: how an outcome is read from a continuation: an extractor name (``"boxed"`` default,
            ``"boxed_or_last_number"``, ``"last_number"``) or any function ``text -> label``; labels are compared
            with ``check_answer`` (strings compare as normalised strings).
        temperature, top_p, max_tokens: sampling of every continuation.
        answer_equivalence: answers ``check_answer`` deems equal are one answer in the distributions.
        n_bootstrap, level, bootstrap_seed: percentile intervals (``level``: their coverage; the old name
            ``confidence`` is deprecated and goes in 0.3).
        batch_size: rows per batch for a model (None: the local sampler's default).
        progress: draw progress bars.
    """

    store: RolloutStore | str | Path | None = None
    trace_id: str | None = None
    reference_answer: str | None = None
    outcome: str | Outcome | None = None
    temperature: float = defaults.TEMPERATURE
    top_p: float = defaults.TOP_P
    max_tokens: int = MAX_TOKENS
    answer_equivalence: bool = True
    n_bootstrap: int = N_BOOTSTRAP
    level: float = LEVEL
    bootstrap_seed: int = 0
    batch_size: int | None = None
    progress: bool = True

    def __post_init__(self):
        check_count("max_tokens", self.max_tokens)
        check_count("n_bootstrap", self.n_bootstrap, minimum=0)
        check_level(self.level)


def branch_options(func: Callable) -> Callable:
    """A branch method taking ``**options``: its signature shows ``BranchOptions``' fields as keyword arguments
    (what ``help`` and editors list), an unknown keyword is a ``TypeError`` as for any function, and
    ``confidence=`` still works for ``level=`` (deprecated)."""
    own = inspect.signature(func)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type, default=f.default)
               for f in fields(BranchOptions)]
    signature = own.replace(parameters=params)

    @functools.wraps(func)
    def call(*args, **kwargs):
        signature.bind(*args, **kwargs)
        return func(*args, **kwargs)

    call.__signature__ = signature
    return renamed_arguments(confidence="level")(call)


@dataclass
class BranchRun:
    """What one branch call opened (sampler, store, ids, the bootstrap's generator) and what it sampled."""

    options: BranchOptions
    trace: object
    sampler: Sampler
    store: RolloutStore
    base_id: str  # the trace's id in the store (its branch completions go under "<base_id>:<method>")
    reference: str | None
    rng: np.random.Generator
    started: float
    plain: RunSummary | None = None  # the plain resampling rollouts this call ran or found
    keyed: list[KeyedSampler] = field(default_factory=list)

    @classmethod
    def open(cls, model_or_sampler, trace, options: dict) -> BranchRun:
        """The call's options checked, its sampler and store opened (``open_run``)."""
        opts = BranchOptions(**options)
        started = time.perf_counter()
        sampler, store = open_run(model_or_sampler, opts.store, opts.batch_size)
        reference = (opts.reference_answer if opts.reference_answer is not None
                     else trace.metadata.get("reference_answer"))
        return cls(opts, trace, sampler, store, opts.trace_id or default_trace_id(trace), reference,
                   np.random.default_rng(opts.bootstrap_seed), started)

    def keyed_sampler(self, method: str, part: str, settings: dict, max_tokens: int | None = None) -> KeyedSampler:
        """A ``KeyedSampler`` for ``part`` of ``method`` at this call's sampling (``max_tokens``: another budget),
        counted in ``run_info``."""
        o = self.options
        params = SamplingParams(o.temperature, o.top_p, o.max_tokens if max_tokens is None else max_tokens)
        made = keyed_sampler(self.sampler, self.store, self.trace, self.base_id, method, part, settings, params,
                             o.outcome, self.reference)
        self.keyed.append(made)
        return made

    def plain_rollouts(self, sentences: Sequence[int], n_rollouts: int) -> dict[int, list[Rollout]]:
        """The first ``n_rollouts`` plain resampling rollouts of each of ``sentences`` (``run_rollouts``: sampled,
        or found in the store, as ``resampling_importance`` makes them), answers read by the outcome reader."""
        o = self.options
        self.plain = run_rollouts(self.sampler, self.trace, self.store, trace_id=o.trace_id, n_rollouts=n_rollouts,
                                  sentences=list(sentences), forced=False, temperature=o.temperature, top_p=o.top_p,
                                  max_tokens=o.max_tokens, extractor=o.outcome, reference_answer=o.reference_answer)
        out = {}
        for j in sentences:
            by_seed = {r.seed: r for r in self.store.rollouts(self.base_id, sentence_index=j, kind=RESAMPLE,
                                                              settings_id=self.plain_settings_id)}
            rollouts = [by_seed[rollout_seed(self.base_id, j, RESAMPLE, r)] for r in range(n_rollouts)]
            out[j] = reread_answers(rollouts, o.outcome, None, self.reference)
        return out

    @property
    def plain_settings_id(self) -> str:
        return self.plain.settings_ids[RESAMPLE]

    def mean(self, values) -> tuple[float, float, float]:
        """``(mean, low, high)`` of one number per rollout or chain (``bootstrap_mean``)."""
        return bootstrap_mean(values, self.options.n_bootstrap, self.options.level, self.rng)

    def compare(self, treated: Sequence[Rollout], base: Sequence[Rollout], alpha: float) -> Comparison:
        """Accuracies, their difference and the answer KL of ``treated`` against ``base`` (``compare_outcomes``)."""
        o = self.options
        return compare_outcomes(treated, base, alpha=alpha, n_bootstrap=o.n_bootstrap, level=o.level, rng=self.rng,
                                answer_equivalence=o.answer_equivalence, reference=self.reference)

    def settings(self, **own) -> dict:
        """What made the result: the method's own settings and the shared sampling and reading ones."""
        o = self.options
        return {**own, "temperature": float(o.temperature), "top_p": float(o.top_p), "max_tokens": int(o.max_tokens),
                "outcome": outcome_name(o.outcome), "reference_answer": self.reference,
                "answer_equivalence": o.answer_equivalence, "sampler": self.sampler.name}

    def _counted(self, name: str, plain_name: str) -> int:
        plain = getattr(self.plain, plain_name) if self.plain is not None else 0
        return plain + sum(getattr(k, name) for k in self.keyed)

    @property
    def generated(self) -> int:
        """Completions this call sampled (plain rollouts and keyed ones)."""
        return self._counted("generated", "generated")

    @property
    def reused(self) -> int:
        """Completions this call found in the store."""
        return self._counted("reused", "already_done")

    def run_info(self, **own) -> dict:
        """Where the completions are, how many this call generated (and the method's own counts), their tokens,
        its time."""
        return {"store": str(self.store.path), **own, "generated": self.generated,
                "tokens": self._counted("tokens", "tokens"), "seconds": time.perf_counter() - self.started}


def sentences_of(text: str, style: str):
    """The sentences of a continuation (none for an empty one)."""
    try:
        return split_sentences(text, style=style)
    except EmptyTextError:
        return []


def embedder_name(embed) -> str:
    """What a similarity threshold is applied to (part of the completions' key)."""
    if embed is None or type(embed).__name__ == "MiniLMEmbedder":
        return "all-MiniLM-L6-v2"
    return f"{getattr(embed, '__module__', '')}.{getattr(embed, '__qualname__', type(embed).__name__)}"

