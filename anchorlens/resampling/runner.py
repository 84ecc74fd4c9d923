"""Resumable resampling runs: build the rollout prompts of a trace, sample, store every rollout.

For sentence i of a trace (docs/methods.md 1.2) the model continues from the text before sentence i, so
sentence i itself is resampled (``kind="resample"``); a forced-answer rollout (``kind="forced"``)
appends ``"\\n</think>\\n\\nTherefore, the final answers is \\\\boxed{"`` to that prefix and reads the answer
the model would give right there.

Two prompt modes, chosen explicitly:

- ``"trace"`` (default): the trace's own prompt (e.g. its chat template) followed by the chain of thought
  before sentence i, exactly as written (spaces at the seam removed, so the model writes the space
  that starts sentence i itself, as it did in the trace);
- ``"reference"``: the published raw prompt,
  ``"Solve this math problem step by step. You MUST put your final answer in \\\\boxed{}. Problem: {problem}
  Solution: \\n<think>\\n{prefix}"``, with the prefix = sentences 0..i-1 joined by single spaces.

Every rollout has a seed fixed by (trace_id, sentence_index, kind, rollout number) and is stored under
the settings it was made with (``run_settings``: sampler identity, temperature, top_p, max_tokens,
prompt); the store refuses duplicates of (trace, settings, sentence, kind, seed) and the run skips keys
already stored. A run killed at any moment and started again therefore loses no finished rollout and
duplicates none, raising ``n_rollouts`` later adds only the missing rollouts, and a run with other
settings makes its own rollouts beside the old ones.

The answer extractor and the reference answer change no rollout, only how it is read: they are not part
of the key. ``resampling_importance`` re-reads every rollout's answer (``read_answer``) and correctness with
the current extractor and reference answer; the ``answer`` column of the store holds what the writing run
read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from anchorlens import settings
from anchorlens.answers import (
    AnswerExtractor,
    check_answer,
    extract_forced,
    extractor_name,
    get_extractor,
    normalize_answer,
    read_answer,
)
from anchorlens.errors import EmptyTextError, InputError
from anchorlens.generation import RAW_PROMPT
from anchorlens.resampling.rollout import FORCED, RESAMPLE, Rollout
from anchorlens.resampling.samplers.base import Completion, Sampler, SampleRequest, SamplingParams
from anchorlens.resampling.store import RolloutStore
from anchorlens.sentences import split_sentences
from anchorlens.stats import LEVEL, N_BOOTSTRAP, renamed_arguments
from anchorlens.results import Result

log = logging.getLogger(__name__)

PROMPT_MODES = ("trace", "reference")
FORCED_SUFFIX = "\n</think>\n\nTherefore, the final answers is \\boxed{"  # sic, as published
DEFAULT_ROLLOUTS = 100  # docs/methods.md 1.2
_SEED_SPACE = 2**31  # seeds every server accepts


RunSettingsError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


# --------------------------------------------------------------------------- prompts and seeds


def rollout_prompt(trace, sentence_index: int, kind: str = RESAMPLE, prompt_mode: str = "trace",
                   problem: str | None = None, forced_suffix: str = FORCED_SUFFIX) -> str:
    """The text a rollout of sentence ``sentence_index`` continues (see the module docstring).

    >>> rollout_prompt(trace, 2, prompt_mode="reference", problem="What is 2 + 2?")  # doctest: +SKIP
    'Solve this math problem step by step. ... Problem: What is 2 + 2? Solution: \\n<think>\\nFirst. Second.'
    """
    if prompt_mode not in PROMPT_MODES:
        raise RunSettingsError(f"unknown prompt_mode {prompt_mode!r}; choose one of {PROMPT_MODES}")
    if kind not in (RESAMPLE, FORCED):
        raise RunSettingsError(f"unknown rollout kind {kind!r}; choose {RESAMPLE!r} or {FORCED!r}")
    if not 0 <= sentence_index < trace.n_sentences:
        raise RunSettingsError(f"sentence_index {sentence_index} is outside the trace's {trace.n_sentences} sentences")
    if prompt_mode == "trace":
        # Spaces before sentence i belong to its first token (" So"), so the model writes them itself.
        text = trace.prompt + trace.prefix_text(sentence_index).rstrip(" \t")
    else:
        problem = problem if problem is not None else trace.metadata.get("problem")
        if not problem:
            raise RunSettingsError(
                "prompt_mode='reference' needs the problem text: pass problem=... "
                "(or use a trace made by generate_trace, which keeps it in trace.metadata['problem'])"
            )
        prefix = " ".join(s.text for s in trace.sentences[:sentence_index])
        text = RAW_PROMPT.format(problem=problem.strip()) + prefix
    return text + forced_suffix if kind == FORCED else text


def rollout_seed(trace_id: str, sentence_index: int, kind: str, number: int) -> int:
    """The seed of rollout ``number`` (0, 1, ...) of one sentence and kind: stable across runs and machines.

    A hash picks a base per (trace, sentence, kind), so different sentences never share random streams;
    the rollout number is added to it, so the seeds of one sentence never collide.

    >>> rollout_seed("t", 0, "resample", 1) - rollout_seed("t", 0, "resample", 0) in (1, 1 - 2**31)
    True
    """
    digest = hashlib.sha256(f"{trace_id}\x1f{sentence_index}\x1f{kind}".encode()).digest()
    base = int.from_bytes(digest[:8], "big") % _SEED_SPACE
    return (base + number) % _SEED_SPACE


def default_trace_id(trace) -> str:
    """A content hash of the trace (model, prompt, chain of thought, sentence split): the same trace, the same id."""
    key = json.dumps([trace.model_name, trace.prompt, trace.cot, trace.style, trace.sentence_texts()], ensure_ascii=False)
    return "trace-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def first_chunk(text: str) -> str:
    """The first sentence of a rollout (docs/methods.md 1.2's ``chunk_resampled``), "" if it wrote none."""
    try:
        return split_sentences(text, style="thought-anchors")[0].text
    except EmptyTextError:
        return ""


# --------------------------------------------------------------------------- the run


@dataclass
class RunSummary(Result):
    """What one ``run_rollouts`` call did.

    Attributes:
        trace_id: the trace's id in the store.
        store_path: the SQLite file.
        requested: rollouts the run should hold when complete (sentences x kinds x n_rollouts).
        already_done: of those, rollouts found in the store (from earlier, possibly killed, runs).
        generated: rollouts produced and stored by this call.
        tokens: tokens generated by this call.
        seconds: wall time of this call.
        settings: the run's settings: ``{"resample": {...}, "forced": {...}}`` (what the rollouts are keyed
            on) plus the extractors and the reference answer (how they are read).
        settings_ids: the store's id of each kind's settings, ``{"resample": "s-...", "forced": "s-..."}``.
    """

    trace_id: str
    store_path: str
    requested: int
    already_done: int
    generated: int = 0
    tokens: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    settings_ids: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.already_done + self.generated >= self.requested

    def to_dataframe(self):
        import pandas as pd

        row = {k: v for k, v in asdict(self).items() if k not in ("settings", "settings_ids")}
        row["tokens_per_second"] = self.tokens / self.seconds if self.seconds else float("nan")
        return pd.DataFrame([row])

    def plot(self, ax=None):
        """Bars: rollouts requested, found in the store, generated by this call."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(4, 3))[1]
        ax.bar(["requested", "already done", "generated"], [self.requested, self.already_done, self.generated])
        ax.set_ylabel("rollouts")
        ax.set_title(f"{self.trace_id}: {'complete' if self.complete else 'incomplete'}")
        return ax


def run_rollouts(
    sampler: Sampler,
    trace,
    store: RolloutStore | str | Path,
    *,
    trace_id: str | None = None,
    n_rollouts: int = DEFAULT_ROLLOUTS,
    sentences: Sequence[int] | None = None,
    forced: bool = True,
    prompt_mode: str = "trace",
    problem: str | None = None,
    reference_answer: str | None = None,
    temperature: float = settings.TEMPERATURE,
    top_p: float = settings.TOP_P,
    max_tokens: int = 256,
    forced_max_tokens: int = 16,
    extractor: str | AnswerExtractor | None = None,
    forced_extractor: str | AnswerExtractor | None = None,
) -> RunSummary:
    """Produce (or finish) the rollouts of a trace: ``n_rollouts`` per sentence and kind, stored one by one.

    Rollouts already in the store are skipped, so calling this again after a crash, a ``kill -9`` or
    Ctrl-C picks up where the last call stopped.

    Args:
        sampler: where completions come from (``LocalSampler``, ``ServerSampler``, ...).
        trace: the ``Trace`` whose sentences are resampled.
        store: a ``RolloutStore`` or the path of its SQLite file.
        trace_id: the trace's key in the store; default: a hash of its content.
        n_rollouts: rollouts per sentence and kind (100 in Thought Anchors).
        sentences: which sentence indices to resample (default: all).
        forced: also make forced-answer rollouts.
        prompt_mode: ``"trace"`` or ``"reference"`` (module docstring).
        problem: the problem text, for ``prompt_mode="reference"`` (default: ``trace.metadata["problem"]``).
        reference_answer: the correct answer; default ``trace.metadata["reference_answer"]``; without one
            ``is_correct`` is None and accuracy-based metrics are NaN.
        temperature, top_p, max_tokens: sampling of resample rollouts (0.6 and 0.95 as published;
            the published max_tokens was 16384, far beyond a CPU's reach).
        forced_max_tokens: budget of a forced answer (the answer and its closing brace).
        extractor: reads the answer of a resample rollout (default ``\\\\boxed{}``; see
            ``anchorlens.answers.get_extractor``).
        forced_extractor: reads a forced rollout's answer (default: up to the brace closing ``\\\\boxed{``).

    >>> summary = run_rollouts(LocalSampler(model), trace, "rollouts.sqlite", n_rollouts=4)  # doctest: +SKIP
    >>> summary.generated, summary.complete                                                # doctest: +SKIP
    (48, True)
    """
    if not isinstance(n_rollouts, int) or n_rollouts < 1:
        raise RunSettingsError(f"n_rollouts must be a positive integer, got {n_rollouts!r}")
    if prompt_mode not in PROMPT_MODES:
        raise RunSettingsError(f"unknown prompt_mode {prompt_mode!r}; choose one of {PROMPT_MODES}")
    resample_params = SamplingParams(temperature, top_p, max_tokens)
    forced_params = SamplingParams(temperature, top_p, forced_max_tokens)
    extract = get_extractor(extractor)
    extract_forced_answer = get_extractor(forced_extractor) if forced_extractor is not None else extract_forced
    if reference_answer is None:
        reference_answer = trace.metadata.get("reference_answer")
    if reference_answer is None:
        log.warning("no reference_answer: rollouts get is_correct=None and accuracy metrics will be NaN")
    indices = list(range(trace.n_sentences)) if sentences is None else sorted(set(sentences))
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < trace.n_sentences:
            raise RunSettingsError(f"sentence index {i!r} is outside the trace's {trace.n_sentences} sentences")
    if prompt_mode == "reference":
        problem = problem if problem is not None else trace.metadata.get("problem")

    store = store if isinstance(store, RolloutStore) else RolloutStore(store)
    trace_id = trace_id or default_trace_id(trace)
    kinds = [RESAMPLE, FORCED] if forced else [RESAMPLE]
    keyed = run_settings(sampler, trace, prompt_mode, problem, temperature, top_p, max_tokens, forced_max_tokens)
    store.register_trace(trace_id, trace.sentence_texts())
    ids = {kind: store.register_settings(trace_id, keyed[kind]) for kind in kinds}
    settings = {
        **{kind: keyed[kind] for kind in kinds},
        "reference_answer": reference_answer,
        "extractor": extractor_name(extract),
        "forced_extractor": extractor_name(extract_forced_answer),
    }

    work: dict[str, list[SampleRequest]] = {kind: [] for kind in kinds}
    requested = 0
    for kind in kinds:
        done = store.done(trace_id, ids[kind])
        for i in indices:
            prompt = rollout_prompt(trace, i, kind, prompt_mode, problem)
            for number in range(n_rollouts):
                seed = rollout_seed(trace_id, i, kind, number)
                requested += 1
                if (i, kind, seed) not in done:
                    work[kind].append(SampleRequest(prompt, seed, tag=(i, kind, seed)))
    pending = sum(len(v) for v in work.values())
    summary = RunSummary(trace_id, str(store.path), requested, requested - pending, settings=settings, settings_ids=ids)
    log.info("trace %s: %d of %d rollouts already stored, %d to go", trace_id, summary.already_done, requested, pending)

    started = time.perf_counter()
    try:
        for kind, requests in work.items():
            if not requests:
                continue
            params = forced_params if kind == FORCED else resample_params
            reader = extract_forced_answer if kind == FORCED else extract
            for completion in sampler.stream(requests, params):
                rollout = _rollout(trace_id, completion, reader, reference_answer)
                if store.add(rollout, sampler=sampler.name, settings_id=ids[kind]):
                    summary.generated += 1
                    summary.tokens += completion.n_tokens
    finally:
        summary.seconds = time.perf_counter() - started
    return summary


def run_settings(sampler: Sampler, trace, prompt_mode: str, problem: str | None, temperature: float, top_p: float,
                 max_tokens: int, forced_max_tokens: int) -> dict[str, dict]:
    """What the rollouts of each kind are keyed on in the store: everything that changes them.

    ``{"resample": {...}, "forced": {...}}``: the sampler's identity (model name, dtype, weights fingerprint
    for a local model; the served model's name for a server), temperature, top_p, the kind's max_tokens,
    and the prompt (mode, and the trace's prompt or the problem text; the forced suffix for forced rollouts).
    """
    common = {
        "sampler": sampler.identity,
        "prompt_mode": prompt_mode,
        "problem": problem if prompt_mode == "reference" else None,
        "prompt": trace.prompt if prompt_mode == "trace" else None,
        "temperature": float(temperature),  # 0 and 0.0 are one setting
        "top_p": float(top_p),
    }
    return {
        RESAMPLE: {**common, "kind": RESAMPLE, "max_tokens": int(max_tokens)},
        FORCED: {**common, "kind": FORCED, "max_tokens": int(forced_max_tokens), "forced_suffix": FORCED_SUFFIX},
    }


def _rollout(trace_id: str, completion: Completion, reader: AnswerExtractor, reference_answer: str | None) -> Rollout:
    sentence_index, kind, seed = completion.tag
    answer = read_answer(completion.text, reader, completion.finish_reason)
    correct = None if reference_answer is None else check_answer(answer, reference_answer)
    # A forced rollout replaces no sentence: its text is the answer itself.
    chunk = first_chunk(completion.text) if kind == RESAMPLE else ""
    return Rollout(trace_id, sentence_index, kind, seed, completion.text, chunk, answer, correct, completion.n_tokens,
                   completion.finish_reason)


def reread_answers(rollouts, extractor: str | AnswerExtractor | None = None,
                   forced_extractor: str | AnswerExtractor | None = None,
                   reference_answer: str | None = None) -> list[Rollout]:
    """The rollouts with ``answer`` and ``is_correct`` read again from their text with these extractors and
    this reference answer (cut-off rollouts by ``read_answer``'s rule). Each distinct answer is checked once."""
    from dataclasses import replace

    extract = get_extractor(extractor)
    extract_forced_answer = get_extractor(forced_extractor) if forced_extractor is not None else extract_forced
    verdicts: dict[str | None, bool | None] = {}
    out = []
    for r in rollouts:
        answer = read_answer(r.text, extract_forced_answer if r.kind == FORCED else extract, r.finish_reason)
        key = normalize_answer(answer)
        if key not in verdicts:
            verdicts[key] = None if reference_answer is None else check_answer(answer, reference_answer)
        out.append(replace(r, answer=answer, is_correct=verdicts[key]))
    return out


# --------------------------------------------------------------------------- the entry point


@renamed_arguments(confidence="level")
def resampling_importance(
    model_or_sampler,
    trace,
    *,
    n_rollouts: int = DEFAULT_ROLLOUTS,
    store: RolloutStore | str | Path | None = None,
    reference_answer: str | None = None,
    forced: bool = True,
    trace_id: str | None = None,
    prompt_mode: str = "trace",
    problem: str | None = None,
    temperature: float = settings.TEMPERATURE,
    top_p: float = settings.TOP_P,
    max_tokens: int = 256,
    forced_max_tokens: int = 16,
    sentences: Sequence[int] | None = None,
    extractor: str | AnswerExtractor | None = None,
    batch_size: int | None = None,
    embed=None,
    similarity_threshold: float = 0.8,
    alpha: float = 1e-9,
    answer_equivalence: bool = True,
    n_bootstrap: int = N_BOOTSTRAP,
    level: float = LEVEL,
    bootstrap_seed: int = 0,
    progress: bool = True,
):
    """Resampling importance of every sentence of a trace (Thought Anchors, docs/methods.md 1.2-1.3).

    Runs (or resumes) the rollouts, then computes the metrics with
    ``anchorlens.resampling.metrics.sentence_importance`` from the trace's rollouts in the store made with
    these settings (the first ``n_rollouts`` seeds of each sentence and kind), their answers re-read with
    ``extractor`` and judged against ``reference_answer`` (``reread_answers``).

    Args:
        model_or_sampler: a ``TransformerBridge`` (sampled in this process with ``LocalSampler``), a
            ``Sampler``, or the URL of an OpenAI-compatible server (``ServerSampler``).
        trace: the ``Trace`` to analyse.
        n_rollouts: rollouts per sentence and kind (100 as published; a few for a quick look).
        store: a ``RolloutStore`` or SQLite path; default ``<anchorlens cache>/rollouts.sqlite``, so an
            interrupted call resumes when called again.
        reference_answer: the correct final answer (see ``run_rollouts``).
        forced: also make forced-answer rollouts (for the forced importance columns).
        batch_size: rows per batch for a model (ignored for samplers and URLs); None: ``LocalSampler``'s default.
        embed, similarity_threshold, alpha, answer_equivalence, n_bootstrap, level, bootstrap_seed:
            passed to ``sentence_importance`` (answer_equivalence=False: the published string-level answer
            distributions; n_bootstrap=0: no intervals).
        Other arguments: as for ``run_rollouts``.

    Returns:
        the ``ImportanceResult`` of ``sentence_importance`` (``.to_dataframe()``: one row per sentence), with
        ``run_info``: the store, rollouts requested / found stored / generated now, and the settings they are
        keyed on (``settings_ids``, ``settings``).

    >>> result = resampling_importance(load_model(), trace, n_rollouts=10, reference_answer="42")  # doctest: +SKIP
    >>> result.to_dataframe()[["accuracy", "counterfactual_importance_kl"]]                       # doctest: +SKIP
    """
    from anchorlens.resampling.metrics import sentence_importance  # the metrics engineer's module

    sampler = as_sampler(model_or_sampler, batch_size=batch_size, progress=progress)
    if store is None:
        from anchorlens.models import cache_dir

        store = cache_dir() / "rollouts.sqlite"
    store = store if isinstance(store, RolloutStore) else RolloutStore(store)
    summary = run_rollouts(
        sampler, trace, store, trace_id=trace_id, n_rollouts=n_rollouts, sentences=sentences, forced=forced,
        prompt_mode=prompt_mode, problem=problem, reference_answer=reference_answer, temperature=temperature,
        top_p=top_p, max_tokens=max_tokens, forced_max_tokens=forced_max_tokens, extractor=extractor,
    )
    log.info("rollouts of %s stored in %s (%d new)", summary.trace_id, summary.store_path, summary.generated)
    rollouts = []
    for kind, sid in summary.settings_ids.items():
        wanted = {(i, rollout_seed(summary.trace_id, i, kind, k)) for i in range(trace.n_sentences) for k in range(n_rollouts)}
        rollouts += [r for r in store.rollouts(summary.trace_id, kind=kind, settings_id=sid)
                     if (r.sentence_index, r.seed) in wanted]
    rollouts = reread_answers(rollouts, extractor, None, summary.settings["reference_answer"])
    result = sentence_importance(
        rollouts, trace.sentence_texts(), embed=embed, similarity_threshold=similarity_threshold, alpha=alpha,
        answer_equivalence=answer_equivalence, reference_answer=summary.settings["reference_answer"],
        n_bootstrap=n_bootstrap, level=level, bootstrap_seed=bootstrap_seed, progress=progress,
    )
    result.trace_id = summary.trace_id
    result.run_info = {
        "store": summary.store_path, "requested": summary.requested, "already_done": summary.already_done,
        "generated": summary.generated, "settings_ids": summary.settings_ids, "settings": summary.settings,
    }
    return result


def as_sampler(model_or_sampler, batch_size: int | None = None, progress: bool = True) -> Sampler:
    """A ``Sampler`` from a sampler (returned as is), a server URL, or a ``TransformerBridge``."""
    from anchorlens.resampling.samplers.local import LocalSampler
    from anchorlens.resampling.samplers.remote import ServerSampler

    if isinstance(model_or_sampler, Sampler):
        return model_or_sampler
    if isinstance(model_or_sampler, str) and model_or_sampler.startswith(("http://", "https://")):
        return ServerSampler(model_or_sampler, progress=progress)
    if hasattr(model_or_sampler, "tokenizer") and hasattr(model_or_sampler, "cfg"):
        return LocalSampler(model_or_sampler, batch_size=batch_size, progress=progress)
    raise RunSettingsError(
        f"cannot sample from a {type(model_or_sampler).__name__}: pass a model from anchorlens.load_model, "
        "a Sampler (LocalSampler, ServerSampler), or an OpenAI-compatible server URL"
    )
