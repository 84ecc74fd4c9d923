"""Transplant resampling (Thought Branches, the reference's ``faithfulness/``; docs/branches.md).

Take a chain of thought written under one prompt (say, with a hint), put its first i sentences after another
prompt (say, without the hint), sample completions, and read the answers: for i = 0 .. n the accuracy, the rate
of a chosen answer (the hinted one) and the answer distribution, against i. The curve shows how an influence
enters the chain sentence by sentence. Every completion is in the rollout store, keyed on the target prompt and
the transplanted text's position.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from anchorlens.answers import check_answer
from anchorlens.branches.keyed import BranchSettingsError, check_count, continue_from, seed_of
from anchorlens.branches.result import BranchResult
from anchorlens.branches.run import BranchRun, branch_options
from anchorlens.progress import progress_bar
from anchorlens.resampling.metrics import _answered, canonical_answers
from anchorlens.results import Result
from anchorlens.stats import renamed_arguments

N_ROLLOUTS = 50  # the reference's responses per position

COLUMNS = ("sentences_transplanted", "n_rollouts", "n_answered", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
           "cue_rate", "cue_rate_ci_low", "cue_rate_ci_high", "top_answer", "answers")


@renamed_arguments(confidence="level")
@dataclass
class TransplantResult(BranchResult, Result):
    """Answers after the first i sentences of a chain of thought were put after another prompt, for each i.

    Attributes:
        trace_id: the source trace's id in the store.
        rows: one dict per i (``COLUMNS``); ``answers`` is the answer distribution as ``{answer: count}``.
        settings, run_info, level: as for every branch result (``BranchResult``).
    """

    trace_id: str
    rows: list[dict]

    _columns = COLUMNS

    def to_dataframe(self):
        frame = super().to_dataframe()
        frame["answers"] = frame["answers"].map(lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()))
        return frame

    def plot(self, ax=None):
        """Accuracy and cue-answer rate against the number of transplanted sentences, with intervals."""
        frame, ax = self._axes(ax, (6, 3))
        x = frame["sentences_transplanted"].to_numpy()
        for name, colour in (("accuracy", "tab:green"), ("cue_rate", "tab:red")):
            y = frame[name].to_numpy(float)
            if not np.isfinite(y).any():
                continue
            ax.plot(x, y, ".-", color=colour, label=name)
            ax.fill_between(x, frame[f"{name}_ci_low"].to_numpy(float), frame[f"{name}_ci_high"].to_numpy(float),
                            color=colour, alpha=0.2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("sentences of the source chain of thought transplanted")
        ax.set_ylabel("share of completions")
        ax.legend(frameon=False)
        ax.set_title(f"transplant of {self.trace_id}")
        return ax


@branch_options
def transplant_resampling(
    model_or_sampler,
    trace,
    target_prompt: str,
    *,
    positions: Sequence[int] | None = None,
    n_rollouts: int = N_ROLLOUTS,
    cue_answer: str | None = None,
    **options,
) -> TransplantResult:
    """The answers after ``target_prompt`` + the first i sentences of ``trace``'s chain of thought, for each i.

    Args:
        model_or_sampler: a ``TransformerBridge``, a ``Sampler`` or a server URL.
        trace: the source chain of thought (written under its own prompt, e.g. with a hint).
        target_prompt: the prompt it is transplanted after (e.g. the same problem without the hint; the chat
            template and ``<think>`` included, as ``trace.prompt`` is).
        positions: the values of i (0: no sentence, n: the whole chain of thought); default all, 0..n.
        n_rollouts: completions per position (50 in the reference).
        cue_answer: the answer a hint points to, for ``cue_rate`` (``reference_answer``, the correct one, gives
            ``accuracy``; both compared with ``check_answer``).
        Other arguments as for ``resilience`` (``BranchOptions``).

    >>> curve = transplant_resampling(model, hinted_trace, plain_prompt, cue_answer="C")  # doctest: +SKIP
    >>> curve.plot()                                                                    # doctest: +SKIP
    """
    check_count("n_rollouts", n_rollouts)
    if not isinstance(target_prompt, str) or not target_prompt.strip():
        raise BranchSettingsError("target_prompt is empty: pass the prompt the chain of thought is transplanted after")
    n = trace.n_sentences
    positions = list(range(n + 1)) if positions is None else sorted(set(positions))
    for i in positions:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= n:
            raise BranchSettingsError(f"position {i!r} is outside 0..{n} (the number of sentences transplanted)")
    run = BranchRun.open(model_or_sampler, trace, options)
    keyed = run.keyed_sampler("transplant", "completions", {"target_prompt": target_prompt})
    got = {}
    for i in progress_bar(positions, desc="transplant", progress=run.options.progress):
        prompt = continue_from(target_prompt, trace.prefix_text(i)) if i else target_prompt
        jobs = [(i, seed_of(run.base_id, "transplant", "completions", i, r), prompt) for r in range(n_rollouts)]
        done = keyed.sample(jobs)
        got[i] = [done[(j, s)] for j, s, _ in jobs]
    everything = [r for i in positions for r in got[i]]
    if run.options.answer_equivalence:
        everything = canonical_answers(everything, run.reference)
    rows, k = [], 0
    for i in positions:
        rollouts = everything[k:k + len(got[i])]
        k += len(got[i])
        answered = [r for r in rollouts if _answered(r)]
        acc = run.mean([float(bool(r.is_correct)) for r in answered if r.is_correct is not None])
        cue = (run.mean([float(check_answer(r.answer, cue_answer)) for r in answered])
               if cue_answer is not None else (float("nan"),) * 3)
        counts = Counter(r.answer for r in answered)
        rows.append({"sentences_transplanted": i, "n_rollouts": len(rollouts), "n_answered": len(answered),
                     "accuracy": acc[0], "accuracy_ci_low": acc[1], "accuracy_ci_high": acc[2],
                     "cue_rate": cue[0], "cue_rate_ci_low": cue[1], "cue_rate_ci_high": cue[2],
                     "top_answer": counts.most_common(1)[0][0] if counts else None,
                     "answers": dict(counts.most_common())})
    settings = run.settings(target_prompt=target_prompt, n_rollouts=n_rollouts, cue_answer=cue_answer)
    run_info = run.run_info(reused=run.reused)
    return TransplantResult(run.base_id, rows, settings=settings, run_info=run_info, level=run.options.level)
