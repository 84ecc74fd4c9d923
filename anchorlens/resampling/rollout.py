"""One rollout: a continuation sampled from the prefix before a sentence (docs/methods.md 1.2)."""

from __future__ import annotations

from dataclasses import dataclass

RESAMPLE = "resample"  # the model continues from the prefix before sentence i (sentence i is resampled)
FORCED = "forced"  # the prefix plus a forced "</think> ... \boxed{" ending: the answer it would give now


@dataclass(frozen=True)
class Rollout:
    """A sampled continuation of the prefix before sentence ``sentence_index``.

    Attributes:
        trace_id: which trace (see the rollout store).
        sentence_index: i, the sentence resampled (its prefix is sentences 0..i-1).
        kind: ``"resample"`` or ``"forced"``.
        seed: the sampling seed (unique per trace, sentence and kind: the resume key).
        text: the generated text.
        chunk_resampled: the first sentence of ``text`` (what replaced sentence i).
        answer: the extracted final answer, None if there is none.
        is_correct: whether ``answer`` matches the reference answer, None if unknown.
        n_tokens: generated tokens.
        finish_reason: ``"stop"`` (the model ended it) or ``"length"`` (cut off at the token limit: its
            answer, if any, is a complete ``\\boxed{}``; see ``anchorlens.answers.read_answer``).
    """

    trace_id: str
    sentence_index: int
    kind: str
    seed: int
    text: str
    chunk_resampled: str
    answer: str | None
    is_correct: bool | None
    n_tokens: int = 0
    finish_reason: str = "stop"

    @property
    def truncated(self) -> bool:
        """Whether the rollout was cut off at the token limit."""
        return self.finish_reason == "length"
