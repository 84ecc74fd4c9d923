"""On- and off-policy chain disruption (Thought Branches, the reference's ``onpolicy_chain_disruption.py``;
docs/branches.md).

To test what an idea (``target``, e.g. "Wait, let me double-check this.") does when it follows sentence X of a
chain of thought:

- on-policy: search the model's own resamples of sentence X for one after which the model itself writes the
  idea. Each search iteration draws ``n_candidates`` (12) replacements of X from the prefix before X and, for
  each, ``n_continuations`` (8) short continuations; a candidate scores the best cosine between the first
  sentence of its continuations and ``target``. The search stops at the first iteration whose best candidate
  reaches ``success_threshold`` (0.7), or after ``max_iterations`` (6). The chosen prefix is the prefix before
  X, the chosen replacement and the continuation up to the end of its matching sentence;
- off-policy: the handwritten ``target`` inserted right after sentence X;
- baseline: the chain of thought kept through X (the plain resampling rollouts of sentence X + 1).

``n_rollouts`` full continuations from each of the two prefixes give the effects: ``acc(intervened) -
acc(baseline)`` and ``KL(answers intervened || answers baseline)``, with bootstrap intervals. The on-policy effect
is measured only when the search succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anchorlens import settings
from anchorlens.branches.intervals import compare_outcomes
from anchorlens.branches.keyed import (BranchSettingsError, Outcome, check_count, check_fraction, check_sentence,
                                       continue_from, keyed_sampler, open_run, outcome_name, seed_of)
from anchorlens.branches.resilience import _sentences, embedder_name
from anchorlens.embeddings import cosine_similarity, default_embedder
from anchorlens.progress import progress_bar
from anchorlens.resampling.metrics import KL_ALPHA
from anchorlens.resampling.rollout import RESAMPLE
from anchorlens.resampling.runner import reread_answers, rollout_seed, run_rollouts
from anchorlens.resampling.samplers.base import SamplingParams
from anchorlens.resampling.store import RolloutStore
from anchorlens.results import Result

N_CANDIDATES, N_CONTINUATIONS, MAX_ITERATIONS, SUCCESS_THRESHOLD = 12, 8, 6, 0.7
N_ROLLOUTS = 30

EFFECT_COLUMNS = ("policy", "found", "prefix_tail", "n_answered", "accuracy", "accuracy_baseline", "accuracy_change",
                  "accuracy_change_ci_low", "accuracy_change_ci_high", "kl", "kl_ci_low", "kl_ci_high")


@dataclass
class ChainDisruptionResult(Result):
    """The on-policy search for ``target`` after sentence ``sentence`` and both effects on the answers.

    Attributes:
        trace_id, sentence, target: what was disrupted, where, with which idea.
        found: whether the on-policy search reached ``success_threshold``; similarity: its best cosine.
        replacement, next_sentence: the chosen replacement of the sentence and the model's own sentence that
            carries the idea (the best ones found, even when the search failed).
        search: one dict per search iteration (its best candidate, cosine, and every candidate's best cosine).
        effects: one dict per policy (``EFFECT_COLUMNS``): ``"on"`` and ``"off"``.
    """

    trace_id: str
    sentence: int
    target: str
    found: bool
    similarity: float
    replacement: str | None
    next_sentence: str | None
    search: list[dict] = field(default_factory=list)
    effects: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    run_info: dict = field(default_factory=dict)
    confidence: float = 0.95

    def to_dataframe(self):
        """One row per policy (on, off): the answers' change against the chain of thought kept through the sentence."""
        import pandas as pd

        return pd.DataFrame(self.effects, columns=list(EFFECT_COLUMNS))

    def plot(self, ax=None):
        """The accuracy change of the on- and off-policy insertions, with intervals."""
        import matplotlib.pyplot as plt

        frame = self.to_dataframe()
        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3))
        y = frame["accuracy_change"].to_numpy(float)
        low, high = frame["accuracy_change_ci_low"].to_numpy(float), frame["accuracy_change_ci_high"].to_numpy(float)
        x = np.arange(len(frame))
        ax.bar(x, np.nan_to_num(y), color=["tab:blue", "tab:orange"][: len(frame)])
        ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(y)
        ax.errorbar(x[ok], y[ok], yerr=[y[ok] - low[ok], high[ok] - y[ok]], fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(x, [f"{p}-policy" for p in frame["policy"]])
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("accuracy change")
        ax.set_title(f"{self.target[:40]!r} after sentence {self.sentence}", fontsize=9)
        return ax


def chain_disruption(
    model_or_sampler,
    trace,
    sentence: int,
    target: str,
    *,
    n_candidates: int = N_CANDIDATES,
    n_continuations: int = N_CONTINUATIONS,
    max_iterations: int = MAX_ITERATIONS,
    success_threshold: float = SUCCESS_THRESHOLD,
    n_rollouts: int = N_ROLLOUTS,
    candidate_max_tokens: int = 48,
    continuation_max_tokens: int = 64,
    max_tokens: int = 256,
    off_policy: bool = True,
    store: RolloutStore | str | Path | None = None,
    trace_id: str | None = None,
    reference_answer: str | None = None,
    outcome: str | Outcome | None = None,
    embed=None,
    temperature: float = settings.TEMPERATURE,
    top_p: float = settings.TOP_P,
    alpha: float = KL_ALPHA,
    answer_equivalence: bool = True,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> ChainDisruptionResult:
    """Insert the idea ``target`` after sentence ``sentence`` on-policy (found among the model's own resamples)
    and off-policy (handwritten), and measure how the answers change (module docstring).

    Args:
        sentence: X, the sentence whose replacement should lead to the idea (it needs a sentence after it: the
            baseline keeps the chain of thought through X).
        target: the idea, as a sentence.
        n_candidates, n_continuations, max_iterations, success_threshold: the search (12, 8, 6, 0.7 as in the
            reference); candidate_max_tokens, continuation_max_tokens: token budgets of its samples (48, 64).
        n_rollouts, max_tokens: the full continuations from each prefix (and of the baseline).
        off_policy: also measure the handwritten insertion.
        Other arguments as for ``resilience``.

    >>> result = chain_disruption(model, trace, 4, "Wait, let me double-check that.")  # doctest: +SKIP
    >>> result.to_dataframe()                                                        # doctest: +SKIP
    """
    for name, value in (("n_candidates", n_candidates), ("n_continuations", n_continuations),
                        ("max_iterations", max_iterations), ("n_rollouts", n_rollouts),
                        ("candidate_max_tokens", candidate_max_tokens),
                        ("continuation_max_tokens", continuation_max_tokens), ("max_tokens", max_tokens)):
        check_count(name, value)
    if n_candidates >= 1000 or n_continuations >= 1000:
        raise BranchSettingsError("n_candidates and n_continuations must stay below 1000")
    check_fraction("success_threshold", success_threshold)
    check_sentence(trace, sentence)
    if sentence + 1 >= trace.n_sentences:
        raise BranchSettingsError(f"sentence {sentence} is the trace's last: the baseline keeps the chain of thought "
                                  "through it and continues from the next sentence, so pick an earlier sentence")
    if not isinstance(target, str) or not target.strip():
        raise BranchSettingsError("target is empty: pass the idea to insert, as a sentence")
    if not 0 < confidence < 1:
        raise BranchSettingsError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence!r}")
    started = time.perf_counter()
    sampler, store = open_run(model_or_sampler, store, batch_size)
    embed = embed or default_embedder()

    summary = run_rollouts(sampler, trace, store, trace_id=trace_id, n_rollouts=n_rollouts, sentences=[sentence + 1],
                           forced=False, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                           extractor=outcome, reference_answer=reference_answer)
    reference = summary.settings["reference_answer"]
    base_id, plain_sid = summary.trace_id, summary.settings_ids[RESAMPLE]
    by_seed = {r.seed: r for r in store.rollouts(base_id, sentence_index=sentence + 1, kind=RESAMPLE,
                                                  settings_id=plain_sid)}
    baseline = reread_answers([by_seed[rollout_seed(base_id, sentence + 1, RESAMPLE, r)] for r in range(n_rollouts)],
                              outcome, None, reference)

    common = {"sentence": sentence, "target": target, "embedder": embedder_name(embed), "style": trace.style}
    make = lambda part, tokens, extra=None: keyed_sampler(  # noqa: E731
        sampler, store, trace, base_id, "disruption", part, common | (extra or {}),
        SamplingParams(temperature, top_p, tokens), outcome, reference)
    candidates_sampler = make("candidates", candidate_max_tokens)
    continuations_sampler = make("continuations", continuation_max_tokens)
    samplers = [candidates_sampler, continuations_sampler]
    head = trace.prefix_text(sentence)
    target_vector = embed([target])
    search, best = [], {"cosine": -2.0}
    for t in progress_bar(range(max_iterations), desc="on-policy search", progress=progress):
        jobs = [(sentence, seed_of(base_id, "disruption", "candidates", sentence, t * 1000 + c),
                 continue_from(trace.prompt, head)) for c in range(n_candidates)]
        drawn = candidates_sampler.sample(jobs)
        replacements = []
        for _, seed, _ in jobs:
            text = drawn[(sentence, seed)].text
            first = _sentences(text, trace.style)
            replacements.append(text[: first[0].end] if first else text)
        jobs = [(sentence, seed_of(base_id, "disruption", "continuations", sentence, (t * 1000 + c) * 1000 + s),
                 continue_from(trace.prompt, head.rstrip(" \t") + replacements[c]))
                for c in range(n_candidates) for s in range(n_continuations)]
        drawn = continuations_sampler.sample(jobs)
        nexts = []
        for _, seed, _ in jobs:
            text = drawn[(sentence, seed)].text
            first = _sentences(text, trace.style)
            nexts.append((first[0].text, text[: first[0].end]) if first else ("", ""))
        cos = cosine_similarity(target_vector, embed([n for n, _ in nexts]))[0].view(n_candidates, n_continuations)
        per_candidate = cos.max(1).values
        c = int(per_candidate.argmax())
        s = int(cos[c].argmax())
        value = float(cos[c, s])
        search.append({"iteration": t, "best_candidate": replacements[c],
                       "next_sentence": nexts[c * n_continuations + s][0], "cosine": value,
                       "candidate_cosines": [float(v) for v in per_candidate]})
        if value > best["cosine"]:
            best = {"cosine": value, "replacement": replacements[c], "next": nexts[c * n_continuations + s]}
        if value >= success_threshold:
            break
    found = best["cosine"] >= success_threshold
    rng = np.random.default_rng(bootstrap_seed)
    effects = []

    def effect(policy: str, text: str | None) -> None:
        row = {"policy": policy, "found": found if policy == "on" else True,
               "prefix_tail": None if text is None else text[-200:]}
        rollouts = []
        if text is not None:
            keyed = make(f"{policy}-policy", max_tokens, {"prefix": text})
            samplers.append(keyed)
            jobs = [(sentence, seed_of(base_id, "disruption", f"{policy}-policy", sentence, r),
                     continue_from(trace.prompt, text)) for r in range(n_rollouts)]
            done = keyed.sample(jobs)
            rollouts = [done[(i, s)] for i, s, _ in jobs]
        cmp = compare_outcomes(rollouts, baseline, alpha=alpha, n_bootstrap=n_bootstrap, confidence=confidence, rng=rng,
                               answer_equivalence=answer_equivalence, reference=reference)
        row |= {"n_answered": cmp.n_treated, "accuracy": cmp.accuracy_treated, "accuracy_baseline": cmp.accuracy_base,
                "accuracy_change": cmp.difference, "accuracy_change_ci_low": cmp.difference_ci[0],
                "accuracy_change_ci_high": cmp.difference_ci[1], "kl": cmp.kl, "kl_ci_low": cmp.kl_ci[0],
                "kl_ci_high": cmp.kl_ci[1]}
        effects.append(row)

    on_prefix = head.rstrip(" \t") + best["replacement"] + best["next"][1] if found else None
    effect("on", on_prefix)
    if off_policy:
        effect("off", trace.prefix_text(sentence + 1).rstrip(" \t") + " " + target.strip())
    settings = {"n_candidates": n_candidates, "n_continuations": n_continuations, "max_iterations": max_iterations,
                "success_threshold": float(success_threshold), "n_rollouts": n_rollouts,
                "candidate_max_tokens": candidate_max_tokens, "continuation_max_tokens": continuation_max_tokens,
                "max_tokens": max_tokens, "temperature": float(temperature), "top_p": float(top_p),
                "outcome": outcome_name(outcome), "reference_answer": reference, "embedder": embedder_name(embed),
                "alpha": alpha, "answer_equivalence": answer_equivalence, "sampler": sampler.name}
    run_info = {"store": str(store.path), "baseline_generated": summary.generated,
                "generated": summary.generated + sum(k.generated for k in samplers),
                "reused": summary.already_done + sum(k.reused for k in samplers),
                "tokens": summary.tokens + sum(k.tokens for k in samplers), "seconds": time.perf_counter() - started}
    return ChainDisruptionResult(base_id, sentence, target, bool(found), float(best["cosine"]),
                                 best.get("replacement"), best.get("next", (None,))[0], search, effects, settings,
                                 run_info, confidence)
