"""Keyed sampling for the Thought Branches methods: every completion in the rollout store, resumable after a kill.

The branch methods (resilience, chain disruption, transplant resampling) sample continuations of prompts that
are not the plain "prefix before sentence i" of resampling importance: a chain whose target sentence moved, a
prefix with a chosen replacement, another problem's prompt. Their completions go into the same
``RolloutStore`` as resampling rollouts, under a derived trace id (``<trace_id>:<method>``, so readers of the
plain rollouts never see them) and under settings that hold everything that made them (sampler identity,
temperature, top_p, max_tokens, the trace's prompt, the method's own parameters). A completion is keyed on
``(sentence_index, seed)`` within those settings; the seed is fixed by (method, part, sentence, number) with
``anchorlens.resampling.runner.rollout_seed``, so a re-run finds every finished completion again and samples
only the missing ones, each stored as soon as it arrives.

Answers are read, and judged, as resampling importance reads them (``reread_answers``: the extractor, or any
outcome function ``text -> label``, and ``check_answer`` against the reference); they are not part of the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from anchorlens.answers import AnswerExtractor, extractor_name, get_extractor
from anchorlens.errors import InputError
from anchorlens.resampling.rollout import RESAMPLE, Rollout
from anchorlens.resampling.runner import _rollout, default_trace_id, reread_answers, rollout_seed
from anchorlens.resampling.samplers.base import Sampler, SampleRequest, SamplingParams
from anchorlens.resampling.store import RolloutStore

Outcome = Callable[[str], "str | None"]


BranchSettingsError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BranchSettingsError(f"{name} must be a whole number of at least {minimum}, not {value!r}")


def check_fraction(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
        raise BranchSettingsError(f"{name} is a cosine similarity and must lie in [-1, 1], not {value!r}")


def check_sentence(trace, index, what: str = "sentence") -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < trace.n_sentences:
        raise BranchSettingsError(f"{what} {index!r} is outside the trace's {trace.n_sentences} sentences "
                                  f"(0..{trace.n_sentences - 1})")
    return index


def continue_from(trace_prompt: str, text: str) -> str:
    """The prompt continuing ``text`` after ``trace_prompt``: trailing spaces dropped, so the model writes the
    space that starts the next sentence itself (as ``rollout_prompt`` does for the plain rollouts)."""
    return trace_prompt + text.rstrip(" \t")


@dataclass
class KeyedSampler:
    """One method's view of the store: sample prompts under fixed settings, reusing what is stored.

    ``settings`` is everything the method's completions depend on beyond their prompt's position in the
    method (sampler identity and sampling parameters are added here).
    """

    sampler: Sampler
    store: RolloutStore
    trace_id: str
    params: SamplingParams
    settings_id: str
    reader: AnswerExtractor
    reference: str | None
    generated: int = 0
    reused: int = 0
    tokens: int = 0

    def sample(self, jobs: Sequence[tuple[int, int, str]]) -> dict[tuple[int, int], Rollout]:
        """``jobs``: ``(sentence_index, seed, prompt)``; returns ``{(sentence_index, seed): Rollout}`` with
        answers read by ``reader``. Stored completions are reused; the rest are sampled and stored one by one."""
        wanted = {(i, s): p for i, s, p in jobs}
        stored = {(r.sentence_index, r.seed): r
                  for i in sorted({i for i, _ in wanted})
                  for r in self.store.rollouts(self.trace_id, sentence_index=i, kind=RESAMPLE,
                                               settings_id=self.settings_id)
                  if (r.sentence_index, r.seed) in wanted}
        self.reused += len(stored)
        requests = [SampleRequest(p, s, tag=(i, RESAMPLE, s)) for (i, s), p in wanted.items() if (i, s) not in stored]
        if requests:
            for completion in self.sampler.stream(requests, self.params):
                rollout = _rollout(self.trace_id, completion, self.reader, self.reference)
                self.store.add(rollout, sampler=self.sampler.name, settings_id=self.settings_id)
                self.generated += 1
                self.tokens += completion.n_tokens
                stored[(rollout.sentence_index, rollout.seed)] = rollout
        out = list(stored.values())
        out = reread_answers(out, self.reader, None, self.reference)
        return {(r.sentence_index, r.seed): r for r in out}


def open_run(model_or_sampler, store: RolloutStore | str | None,
             batch_size: int | None) -> tuple[Sampler, RolloutStore]:
    """The sampler (``as_sampler``: a model, a ``Sampler`` or a URL) and the store (default: the anchorlens cache's
    ``rollouts.sqlite``) of one call."""
    from anchorlens.resampling.runner import as_sampler

    sampler = as_sampler(model_or_sampler, batch_size=batch_size, progress=False)
    if store is None:
        from anchorlens.models import cache_dir

        store = cache_dir() / "rollouts.sqlite"
    return sampler, (store if isinstance(store, RolloutStore) else RolloutStore(store))


def keyed_sampler(sampler: Sampler, store: RolloutStore, trace, trace_id: str | None, method: str, part: str,
                  settings: dict, params: SamplingParams, outcome: str | Outcome | None,
                  reference: str | None) -> KeyedSampler:
    """A ``KeyedSampler`` for ``method`` (e.g. ``"resilience"``) and its ``part`` (``"chain"``, ``"candidates"``)."""
    base = trace_id or default_trace_id(trace)
    derived = f"{base}:{method}"
    store.register_trace(derived, trace.sentence_texts())
    keyed = {"sampler": sampler.identity, "temperature": float(params.temperature), "top_p": float(params.top_p),
             "max_tokens": int(params.max_tokens), "prompt": trace.prompt, "method": method, "part": part, **settings}
    sid = store.register_settings(derived, keyed)
    reader = get_extractor(outcome)
    return KeyedSampler(sampler, store, derived, params, sid, reader, reference)


def seed_of(trace_id: str, method: str, part: str, index: int, number: int) -> int:
    """The seed of completion ``number`` of ``part`` at sentence ``index``: stable across runs and machines."""
    return rollout_seed(trace_id, index, f"{method}/{part}", number)


def outcome_name(outcome: str | Outcome | None) -> str:
    return extractor_name(get_extractor(outcome))
