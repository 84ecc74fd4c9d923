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

from dataclasses import dataclass, field

import numpy as np

from anchorlens.branches.keyed import (BranchSettingsError, check_count, check_fraction, check_sentence,
                                       continue_from, seed_of)
from anchorlens.branches.result import BranchResult, interval_bars
from anchorlens.branches.run import BranchRun, branch_options, embedder_name, sentences_of
from anchorlens.embeddings import cosine_similarity, default_embedder
from anchorlens.progress import progress_bar
from anchorlens.resampling.metrics import KL_ALPHA
from anchorlens.results import Result
from anchorlens.stats import renamed_arguments

N_CANDIDATES, N_CONTINUATIONS, MAX_ITERATIONS, SUCCESS_THRESHOLD = 12, 8, 6, 0.7
N_ROLLOUTS = 30

EFFECT_COLUMNS = ("policy", "found", "prefix_tail", "n_answered", "accuracy", "accuracy_baseline", "accuracy_change",
                  "accuracy_change_ci_low", "accuracy_change_ci_high", "kl", "kl_ci_low", "kl_ci_high")


@renamed_arguments(confidence="level")
@dataclass
class ChainDisruptionResult(BranchResult, Result):
    """The on-policy search for ``target`` after sentence ``sentence`` and both effects on the answers.

    Attributes:
        trace_id, sentence, target: what was disrupted, where, with which idea.
        found: whether the on-policy search reached ``success_threshold``; similarity: its best cosine.
        replacement, next_sentence: the chosen replacement of the sentence and the model's own sentence that
            carries the idea (the best ones found, even when the search failed).
        search: one dict per search iteration (its best candidate, cosine, and every candidate's best cosine).
        effects: one dict per policy (``EFFECT_COLUMNS``): ``"on"`` and ``"off"``.
        settings, run_info, level: as for every branch result (``BranchResult``).
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

    # to_dataframe: one row per policy (on, off), the answers' change against the chain of thought kept through X
    _rows = "effects"
    _columns = EFFECT_COLUMNS

    def plot(self, ax=None):
        """The accuracy change of the on- and off-policy insertions, with intervals."""
        frame, ax = self._axes(ax, (4, 3))
        x = np.arange(len(frame))
        colours = ["tab:blue", "tab:orange"][: len(frame)]
        ax.bar(x, np.nan_to_num(frame["accuracy_change"].to_numpy(float)), color=colours)
        interval_bars(ax, x, frame, "accuracy_change", "accuracy_change_ci_low", "accuracy_change_ci_high", capsize=3)
        ax.set_xticks(x, [f"{p}-policy" for p in frame["policy"]])
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("accuracy change")
        ax.set_title(f"{self.target[:40]!r} after sentence {self.sentence}", fontsize=9)
        return ax


@branch_options
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
    off_policy: bool = True,
    embed=None,
    alpha: float = KL_ALPHA,
    **options,
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
        Other arguments as for ``resilience`` (``BranchOptions``).

    >>> result = chain_disruption(model, trace, 4, "Wait, let me double-check that.")  # doctest: +SKIP
    >>> result.to_dataframe()                                                        # doctest: +SKIP
    """
    for name, value in (("n_candidates", n_candidates), ("n_continuations", n_continuations),
                        ("max_iterations", max_iterations), ("n_rollouts", n_rollouts),
                        ("candidate_max_tokens", candidate_max_tokens),
                        ("continuation_max_tokens", continuation_max_tokens)):
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
    run = BranchRun.open(model_or_sampler, trace, options)
    embed = embed or default_embedder()
    baseline = run.plain_rollouts([sentence + 1], n_rollouts)[sentence + 1]

    common = {"sentence": sentence, "target": target, "embedder": embedder_name(embed), "style": trace.style}
    candidates_sampler = run.keyed_sampler("disruption", "candidates", common, candidate_max_tokens)
    continuations_sampler = run.keyed_sampler("disruption", "continuations", common, continuation_max_tokens)
    head = trace.prefix_text(sentence)
    target_vector = embed([target])
    search, best = [], {"cosine": -2.0}
    for t in progress_bar(range(max_iterations), desc="on-policy search", progress=run.options.progress):
        jobs = [(sentence, seed_of(run.base_id, "disruption", "candidates", sentence, t * 1000 + c),
                 continue_from(trace.prompt, head)) for c in range(n_candidates)]
        drawn = candidates_sampler.sample(jobs)
        replacements = []  # each candidate through its first sentence (all of it when it wrote none)
        for _, seed, _ in jobs:
            text = drawn[(sentence, seed)].text
            replacements.append(_first_sentence(text, trace.style)[1] or text)
        jobs = [(sentence, seed_of(run.base_id, "disruption", "continuations", sentence, (t * 1000 + c) * 1000 + s),
                 continue_from(trace.prompt, head.rstrip(" \t") + replacements[c]))
                for c in range(n_candidates) for s in range(n_continuations)]
        drawn = continuations_sampler.sample(jobs)
        nexts = [_first_sentence(drawn[(sentence, seed)].text, trace.style) for _, seed, _ in jobs]
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
    effects = []

    def effect(policy: str, text: str | None) -> None:
        row = {"policy": policy, "found": found if policy == "on" else True,
               "prefix_tail": None if text is None else text[-200:]}
        rollouts = []
        if text is not None:
            keyed = run.keyed_sampler("disruption", f"{policy}-policy", common | {"prefix": text})
            jobs = [(sentence, seed_of(run.base_id, "disruption", f"{policy}-policy", sentence, r),
                     continue_from(trace.prompt, text)) for r in range(n_rollouts)]
            done = keyed.sample(jobs)
            rollouts = [done[(i, s)] for i, s, _ in jobs]
        cmp = run.compare(rollouts, baseline, alpha)
        row |= {"n_answered": cmp.n_treated, "accuracy": cmp.accuracy_treated, "accuracy_baseline": cmp.accuracy_base,
                "accuracy_change": cmp.difference, "accuracy_change_ci_low": cmp.difference_ci[0],
                "accuracy_change_ci_high": cmp.difference_ci[1], "kl": cmp.kl, "kl_ci_low": cmp.kl_ci[0],
                "kl_ci_high": cmp.kl_ci[1]}
        effects.append(row)

    on_prefix = head.rstrip(" \t") + best["replacement"] + best["next"][1] if found else None
    effect("on", on_prefix)
    if off_policy:
        effect("off", trace.prefix_text(sentence + 1).rstrip(" \t") + " " + target.strip())
    settings = run.settings(n_candidates=n_candidates, n_continuations=n_continuations, max_iterations=max_iterations,
                            success_threshold=float(success_threshold), n_rollouts=n_rollouts,
                            candidate_max_tokens=candidate_max_tokens, continuation_max_tokens=continuation_max_tokens,
                            embedder=embedder_name(embed), alpha=alpha)
    run_info = run.run_info(baseline_generated=run.plain.generated, reused=run.reused)
    return ChainDisruptionResult(run.base_id, sentence, target, bool(found), float(best["cosine"]),
                                 best.get("replacement"), best.get("next", (None,))[0], search, effects,
                                 settings=settings, run_info=run_info, level=run.options.level)


def _first_sentence(text: str, style: str) -> tuple[str, str]:
    """The first sentence of a continuation and the continuation through it (``("", "")`` when it wrote none)."""
    found = sentences_of(text, style)
    return (found[0].text, text[: found[0].end]) if found else ("", "")
