"""Resilience ("fighting back") and Counterfactual++ of chain-of-thought sentences (Thought Branches; docs/branches.md).

For a target sentence i, each of ``n_rollouts`` chains runs the resilience loop: remove the current target
(continue from the text before it), read the continuation, and look in it, from the replacement sentence on, for
the sentence most similar to the ORIGINAL sentence i; when its cosine reaches ``similarity_threshold`` (0.6) the
content came back, that sentence becomes the next target, and the loop repeats, up to ``max_iterations`` (20).
Each chain's score is the number of iterations in which the content came back (``scores.chain_score``);
a sentence's resilience is the mean over chains, with the persistence and abandonment rates beside it.

Counterfactual++ compares the outcome of the chains that finally abandoned the content (the answer of their
last continuation) with the outcome when the sentence is kept (the plain resampling rollouts of sentence i + 1,
whose prefix holds sentence i verbatim): ``acc(kept) - acc(abandoned)`` and ``KL(abandoned || kept)``. Its sign is
the OPPOSITE of Thought Anchors' counterfactual importance (``acc(dissimilar) - acc(kept)``): a positive
Counterfactual++ means removing the content for good lowers accuracy.

The first iteration of every chain continues exactly the prompt of a plain resampling rollout of sentence i, so
it IS that rollout (same store key): resilience shares its first iteration, and Counterfactual++ its kept side,
with ``resampling_importance`` at the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from anchorlens.branches.keyed import (BranchSettingsError, check_count, check_fraction, check_sentence, continue_from,
                                       seed_of)
from anchorlens.branches.result import BranchResult, interval_bars
from anchorlens.branches.run import BranchRun, branch_options, embedder_name, sentences_of
from anchorlens.branches.scores import chain_score
from anchorlens.embeddings import cosine_similarity, default_embedder, embed_unique
from anchorlens.progress import progress_bar
from anchorlens.resampling.metrics import KL_ALPHA
from anchorlens.results import Result
from anchorlens.stats import renamed_arguments

SIMILARITY_THRESHOLD = 0.6  # the reference's cut for "the content came back"
MAX_ITERATIONS = 20
N_ROLLOUTS = 30
_STRIDE = 1000  # seed number of chain r, iteration k: r * _STRIDE + k

SENTENCE_COLUMNS = ("sentence", "text", "n_chains", "resilience", "resilience_ci_low", "resilience_ci_high",
                    "persistence_rate", "persistence_ci_low", "persistence_ci_high", "abandonment_rate",
                    "abandonment_ci_low", "abandonment_ci_high", "mean_iterations", "n_abandoned", "n_kept",
                    "accuracy_abandoned", "accuracy_kept", "counterfactual_pp_accuracy",
                    "counterfactual_pp_accuracy_ci_low", "counterfactual_pp_accuracy_ci_high", "counterfactual_pp_kl",
                    "counterfactual_pp_kl_ci_low", "counterfactual_pp_kl_ci_high")


@renamed_arguments(confidence="level")
@dataclass
class ResilienceResult(BranchResult, Result):
    """Resilience, persistence / abandonment rates and Counterfactual++ of some sentences of one trace.

    Attributes:
        trace_id: the trace's id in the rollout store.
        rows: one dict per target sentence (``SENTENCE_COLUMNS``, ``to_dataframe``), intervals at ``level``.
        chains: one dict per chain: sentence, chain number, iterations, score, persisted, final answer and
            correctness, and the best cosine of each iteration.
        settings, run_info, level: as for every branch result (``BranchResult``): thresholds, counts, sampling,
            outcome reader; completions generated now and found in the store, tokens, seconds.
    """

    trace_id: str
    rows: list[dict]
    chains: list[dict] = field(default_factory=list)

    _columns = SENTENCE_COLUMNS

    def chains_dataframe(self):
        """One row per chain (rollout of the resilience loop)."""
        import pandas as pd

        return pd.DataFrame(self.chains)

    def plot(self, ax=None):
        """Resilience (bars, left axis) and Counterfactual++ accuracy (points, right axis) per sentence, with
        their intervals."""
        frame, ax = self._axes(ax, (max(4.0, 0.4 * len(self.rows) + 2), 3))
        x = np.arange(len(frame))
        ax.bar(x, np.nan_to_num(frame["resilience"].to_numpy(float)), color="tab:blue", alpha=0.7, label="resilience")
        interval_bars(ax, x, frame, "resilience", "resilience_ci_low", "resilience_ci_high")
        ax.set_xticks(x, [str(i) for i in frame["sentence"]])
        ax.set_xlabel("sentence")
        ax.set_ylabel("resilience (iterations the content came back)")
        twin = ax.twinx()
        c = frame["counterfactual_pp_accuracy"].to_numpy(float)
        twin.plot(x, c, "o", color="tab:red", label="Counterfactual++ (accuracy)")
        twin.axhline(0, color="tab:red", lw=0.5, ls=":")
        twin.set_ylabel("Counterfactual++ accuracy", color="tab:red")
        ax.set_title(f"resilience of {self.trace_id}")
        return ax

    def column(self, name: str, n_sentences: int) -> np.ndarray:
        """``name`` as a per-sentence array of length ``n_sentences`` (NaN for sentences not measured)."""
        out = np.full(n_sentences, np.nan)
        for row in self.rows:
            out[row["sentence"]] = row[name]
        return out


@branch_options
def resilience(
    model_or_sampler,
    trace,
    sentences: Sequence[int] | None = None,
    *,
    n_rollouts: int = N_ROLLOUTS,
    max_iterations: int = MAX_ITERATIONS,
    similarity_threshold: float = SIMILARITY_THRESHOLD,
    embed=None,
    alpha: float = KL_ALPHA,
    **options,
) -> ResilienceResult:
    """Resilience and Counterfactual++ of ``sentences`` of ``trace`` (default: all), from the same rollouts.

    Args:
        model_or_sampler: a ``TransformerBridge``, a ``Sampler`` (local or OpenAI-compatible server) or a URL.
        trace: the ``Trace``.
        sentences: the target sentences (indices).
        n_rollouts: chains per sentence (30 in the reference).
        max_iterations: the cap on iterations of one chain (20 in the reference).
        similarity_threshold: cosine at or above which content counts as back (0.6 in the reference).
        embed: the sentence embedder (default: the packaged all-MiniLM-L6-v2).
        alpha: KL smoothing (as resampling importance, 1e-9).
        store, trace_id, reference_answer, outcome, temperature, top_p, max_tokens, answer_equivalence,
            n_bootstrap, level, bootstrap_seed, batch_size, progress: the options every branch method takes
            (``anchorlens.branches.run.BranchOptions``): the rollout store (a killed call resumes), how
            continuations are sampled and their outcomes read (``outcome``: an extractor name, ``"boxed"``
            default, or a function ``text -> label``), and the percentile intervals over chains (and kept
            rollouts).

    >>> result = resilience(load_model(), trace, [3, 5], n_rollouts=30)  # doctest: +SKIP
    >>> result.to_dataframe()[["sentence", "resilience", "counterfactual_pp_accuracy"]]  # doctest: +SKIP
    """
    check_count("n_rollouts", n_rollouts)
    check_count("max_iterations", max_iterations)
    if max_iterations >= _STRIDE:
        raise BranchSettingsError(f"max_iterations must be below {_STRIDE}, not {max_iterations}")
    check_fraction("similarity_threshold", similarity_threshold)
    targets = (list(range(trace.n_sentences)) if sentences is None
               else sorted({check_sentence(trace, i) for i in sentences}))
    if not targets:
        raise BranchSettingsError("no target sentence: pass sentence indices, or None for all")
    if not trace.prompt.strip():
        raise BranchSettingsError("the trace has no prompt, so continuations would not know the problem: build it "
                                  "with Trace.from_text(model, text, prompt=...)")
    run = BranchRun.open(model_or_sampler, trace, options)
    embed = embed or default_embedder()

    # Iteration 1 of every chain, and the kept side of Counterfactual++: plain resampling rollouts.
    plain = run.plain_rollouts(sorted(set(targets) | {i + 1 for i in targets if i + 1 < trace.n_sentences}),
                               n_rollouts)
    keyed = run.keyed_sampler("resilience", "chain",
                              {"similarity_threshold": float(similarity_threshold), "embedder": embedder_name(embed),
                               "style": trace.style, "first_iteration": run.plain_settings_id})
    originals = {i: trace.sentences[i].text for i in targets}
    original_vectors = embed([originals[i] for i in targets])
    original_index = {i: k for k, i in enumerate(targets)}

    # chain state: (sentence, chain) -> head text, matches, best cosines, last rollout
    heads = {(i, r): trace.prefix_text(i) for i in targets for r in range(n_rollouts)}
    matches = {key: [] for key in heads}
    best = {key: [] for key in heads}
    last = {}
    active = list(heads)
    for k in progress_bar(range(max_iterations), desc="resilience iterations", progress=run.options.progress):
        if not active:
            break
        if k == 0:
            got = {key: plain[key[0]][key[1]] for key in active}
        else:
            jobs = {key: (key[0], seed_of(run.base_id, "resilience", "chain", key[0], key[1] * _STRIDE + k),
                          continue_from(trace.prompt, heads[key])) for key in active}
            done = keyed.sample(list(jobs.values()))
            got = {key: done[(job[0], job[1])] for key, job in jobs.items()}
        split = {key: sentences_of(got[key].text, trace.style) for key in active}
        texts = [s.text for key in active for s in split[key]]
        vectors, where = embed_unique(texts, embed) if texts else (None, [])
        position, still = 0, []
        for key in active:
            n = len(split[key])
            mine = vectors[where[position:position + n]] if n else None
            cos = cosine_similarity(original_vectors[original_index[key[0]]][None], mine)[0] if n else torch.zeros(0)
            position += n
            j = int(torch.argmax(cos)) if n else -1
            value = float(cos[j]) if n else float("nan")
            found = n > 0 and value >= similarity_threshold
            matches[key].append(found)
            best[key].append(value)
            last[key] = got[key]
            if found and k + 1 < max_iterations:
                heads[key] = heads[key].rstrip(" \t") + got[key].text[: split[key][j].start]
                still.append(key)
        active = still

    rows, chains = [], []
    for i in targets:
        scores = [chain_score(matches[(i, r)], max_iterations) for r in range(n_rollouts)]
        for r, s in enumerate(scores):
            final = last[(i, r)]
            chains.append({"sentence": i, "chain": r, "iterations": s.iterations, "score": s.score,
                           "persisted": s.persisted, "final_answer": final.answer, "final_correct": final.is_correct,
                           "best_cosine": best[(i, r)]})
        res = run.mean([s.score for s in scores])
        per = run.mean([float(s.persisted) for s in scores])
        abandoned = [last[(i, r)] for r, s in enumerate(scores) if s.abandoned]
        kept = plain.get(i + 1, [])
        cmp = run.compare(abandoned, kept, alpha)
        rows.append({
            "sentence": i, "text": originals[i], "n_chains": len(scores),
            "resilience": res[0], "resilience_ci_low": res[1], "resilience_ci_high": res[2],
            "persistence_rate": per[0], "persistence_ci_low": per[1], "persistence_ci_high": per[2],
            "abandonment_rate": 1 - per[0], "abandonment_ci_low": 1 - per[2], "abandonment_ci_high": 1 - per[1],
            "mean_iterations": float(np.mean([s.iterations for s in scores])),
            "n_abandoned": len(abandoned), "n_kept": len(kept),
            "accuracy_abandoned": cmp.accuracy_treated, "accuracy_kept": cmp.accuracy_base,
            "counterfactual_pp_accuracy": -cmp.difference,
            "counterfactual_pp_accuracy_ci_low": -cmp.difference_ci[1],
            "counterfactual_pp_accuracy_ci_high": -cmp.difference_ci[0],
            "counterfactual_pp_kl": cmp.kl, "counterfactual_pp_kl_ci_low": cmp.kl_ci[0],
            "counterfactual_pp_kl_ci_high": cmp.kl_ci[1],
        })
    settings = run.settings(n_rollouts=n_rollouts, max_iterations=max_iterations,
                            similarity_threshold=float(similarity_threshold), alpha=alpha,
                            embedder=embedder_name(embed), n_bootstrap=run.options.n_bootstrap)
    run_info = run.run_info(plain_generated=run.plain.generated, plain_reused=run.plain.already_done,
                            chain_generated=keyed.generated, chain_reused=keyed.reused)
    return ResilienceResult(run.base_id, rows, chains, settings=settings, run_info=run_info, level=run.options.level)
