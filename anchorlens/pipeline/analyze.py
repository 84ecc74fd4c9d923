"""``analyze``: one call from a problem (or an existing chain of thought) to a report, all three ways.

Steps (``anchorlens.pipeline.steps.STEP_TABLE``), each saved into the output folder as it finishes with the key it
was made under beside it (``<file>.key.json``: the model's identity, the trace, the step's settings), so that a
re-run reuses exactly the steps whose key is unchanged and a killed run resumes where it stopped:

1. the trace (generated under its seed and settings, or given) -> ``trace.json``;
2. sentence categories (the shipped taxonomy classifier) -> ``categories.json``;
3. receiver heads: sentence attention of every head, kurtosis, top heads, receiver scores (``ReceiverHeads``)
   -> ``receivers.npz``;
4. attention suppression: the sentence-to-sentence KL matrix (``SuppressionMatrix``) -> ``suppression.npz``;
5. resampling importance: rollouts in ``rollouts.sqlite`` (resumable), metrics (``ImportanceResult``)
   -> ``importance.npz``;
5b. only with ``resilience_top``: resilience and Counterfactual++ (Thought Branches) of the top sentences by
    counterfactual importance, from the same rollout store (``ResilienceResult``) -> ``resilience.npz``;
5c. information flow (L2 routes, Ferrando and Voita 2024) into the answer token, by sentence (``SentenceFlow``)
    -> ``flow.npz``;
5d. only with ``transcoders``: the same answer token's logit attributed back to sentences through a pruned
    attribution graph (``SentenceAttribution``) -> ``attribution.npz``;
6. the report, derived from those results (``Analysis.report_data``): ``report.html``, ``report.json``, PNGs;
   ``sentences.csv`` with every per-sentence number and ``sentences_columns.md`` saying what each column means
   (``anchorlens.views.VIEW_DEFINITIONS``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Callable

from anchorlens import settings, step_keys
from anchorlens.errors import DegenerateTraceError, OptionError
from anchorlens.generation import generate_trace
from anchorlens.pipeline.analysis import Analysis
from anchorlens.pipeline.steps import STEP_TABLE, TRACE_FILE, Run, run_step, timed
from anchorlens.settings import DEFAULT_STEPS, check_settings
from anchorlens.trace import Trace, degenerate_reason
from anchorlens.attribution.attribute import answer_token_position
from anchorlens.versions import version_report
from anchorlens.views import VIEW_DEFINITIONS, CI_NOTE


def analyze(
    model,
    out_dir: str | Path,
    *,
    problem: str | None = None,
    trace: Trace | None = None,
    reference_answer: str | None = None,
    n_rollouts: int = settings.N_ROLLOUTS,
    rollout_max_tokens: int = settings.ROLLOUT_MAX_TOKENS,
    max_new_tokens: int = settings.MAX_NEW_TOKENS,
    top_k_heads: int = settings.TOP_K_HEADS,
    seed: int = settings.SEED,
    temperature: float = settings.TEMPERATURE,
    top_p: float = settings.TOP_P,
    style: str = settings.STYLE,
    sampler=None,
    extractor: str = settings.EXTRACTOR,
    steps: tuple[str, ...] = DEFAULT_STEPS,
    progress: bool = True,
    transcoders=None,
    attribution_features: int = settings.ATTRIBUTION_FEATURES,
    answer_equivalence: bool = True,
    resilience_top: int = settings.RESILIENCE_TOP,
    resilience_iterations: int = settings.RESILIENCE_ITERATIONS,
    say: Callable[[str], None] | None = None,
) -> Analysis:
    """Find the thought anchors of one chain of thought three ways and write an interactive report.

    Args:
        model: a loaded ``TransformerBridge`` (``load_model(...)``).
        out_dir: the report folder. An existing one is reused step by step: each saved result is keyed on the
            model (name, dtype, weights), the trace and the step's settings, and recomputed when its key changed.
        problem: a problem to let the model reason about; or pass ``trace``.
        trace: an existing chain of thought (``Trace.from_text(model, text, prompt=...)``).
        reference_answer: the correct answer; by default the trace's own final answer, so accuracy then
            means "agrees with the original chain of thought".
        n_rollouts: resampled continuations per sentence (100 as published; a few for a quick look).
        rollout_max_tokens: tokens per continuation.
        max_new_tokens, seed, temperature, top_p, style: how the trace is generated and split.
        top_k_heads: number of receiver heads (16 and 32 in the paper's figures; 20 default there).
        sampler: where rollouts come from: None (the model itself), a ``Sampler``, or a server URL.
        extractor: how answers are read from rollouts: ``"boxed"`` (as published), ``"boxed_or_last_number"``
            (for small models that seldom write ``\\boxed{}``), or a callable ``text -> answer``.
        steps: which analyses to run (``STEPS``).
        transcoders: a ``TranscoderSet`` or its folder (``load_transcoders``): adds the attribution step (the
            answer token's logit attributed back to sentences through an attribution graph). Off by default.
        attribution_features: at most this many feature nodes in that graph (those of largest influence).
        answer_equivalence: count answers that ``check_answer`` deems equal (``42``, ``42.0``) as one answer in
            every answer distribution (default); False keeps the published string-level computation.
        resilience_top: adds the resilience step (Thought Branches): resilience and Counterfactual++ of this many
            sentences, those of highest counterfactual_importance_kl, with ``n_rollouts`` chains each (off: 0).
            It needs the resampling step, whose rollouts it shares.
        resilience_iterations: the cap on iterations of one chain (20 as in the reference).
        say: where the one line per step goes (``trace: reused``, ``receivers: recomputed (heads 16 -> 4)``);
            default: standard error when ``progress`` is on.

    >>> analysis = analyze(load_model(), "report/", problem="What is 12 + 30?")   # doctest: +SKIP
    >>> analysis.report_path                                                     # doctest: +SKIP
    """
    from anchorlens.models import model_identity

    steps = _checked_steps(steps, resilience_top, resilience_iterations, transcoders, problem, trace,
                           n_rollouts=n_rollouts, rollout_max_tokens=rollout_max_tokens, max_new_tokens=max_new_tokens,
                           top_k_heads=top_k_heads, attribution_features=attribution_features,
                           temperature=temperature, top_p=top_p, style=style, extractor=extractor)
    say = say if say is not None else (_to_stderr if progress else (lambda line: None))  # not the bar switch: a re-run always says what it reused
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    identity = model_identity(model)
    trace = _the_trace(model, identity, out, problem, trace, max_new_tokens, seed, temperature, top_p, style, say)
    analysis = Analysis(trace=trace, out_dir=out, report_path=out / "report.html")
    analysis.seconds["trace"] = time.perf_counter() - started
    analysis.keys["trace"] = step_keys.read_key(out / TRACE_FILE)
    transcoders = _checked_transcoders(transcoders, model)
    if "resampling" in steps and not trace.prompt.strip():  # refused before minutes of other steps
        raise OptionError(
            "the chain of thought has no prompt, so rollouts would not know the problem: give the problem "
            "(anchorlens analyze --problem ..., or Trace.from_text(model, text, prompt=problem_prompt(model, "
            "problem))) or leave resampling out (--skip resampling)"
        )
    analysis.answer = reference_answer if reference_answer is not None else _trace_answer(trace, extractor)
    found = answer_token_position(model.tokenizer, trace, analysis.answer)  # one search: a decode per position
    analysis.answer_position = trace.n_tokens - 1 if found is None else found

    run = Run(model=model, trace=trace, identity=identity, this_trace=step_keys.trace_key(trace), out=out,
              analysis=analysis, notes={}, say=say, progress=progress, answer=analysis.answer, sampler=sampler,
              transcoders=transcoders,
              options=dict(top_k_heads=top_k_heads, n_rollouts=n_rollouts, rollout_max_tokens=rollout_max_tokens,
                           temperature=temperature, top_p=top_p, extractor=extractor,
                           answer_equivalence=answer_equivalence, resilience_top=resilience_top,
                           resilience_iterations=resilience_iterations,
                           attribution_features=attribution_features))
    for spec in STEP_TABLE:
        if spec.name in steps:
            run_step(spec, run)
    answer_note = _answer_note(model, trace, analysis.answer, analysis.answer_position, found is not None)
    _write_outputs(run, steps, answer_note)
    return analysis


def _checked_steps(steps, resilience_top, resilience_iterations, transcoders, problem, trace, **options) -> tuple:
    """The steps to run, after every option is checked (before anything is loaded or computed)."""
    check_settings(steps=steps, **options)
    if resilience_top:
        check_settings(resilience_top=resilience_top, resilience_iterations=resilience_iterations)
        if "resampling" not in steps:
            raise OptionError("resilience_top picks the top sentences by counterfactual importance and shares the "
                              "resampling step's rollouts: keep the resampling step, or set resilience_top=0")
        steps = (*steps, "resilience") if "resilience" not in steps else steps
    if problem is None and trace is None:
        raise OptionError("pass a problem to reason about, or an existing trace")
    if transcoders is not None:
        steps = (*steps, "attribution") if "attribution" not in steps else steps
    elif "attribution" in steps:
        raise OptionError("the attribution step needs transcoders: pass transcoders=... (anchorlens analyze "
                          "--transcoders PATH), e.g. from anchorlens.train_transcoders or circuit-tracer's layout")
    return steps


def _checked_transcoders(transcoders, model):
    """The transcoders (loaded from their folder), checked against the model now, not after minutes of steps."""
    if transcoders is None:
        return None
    if isinstance(transcoders, (str, Path)):
        from anchorlens.attribution.transcoders import load_transcoders

        transcoders = load_transcoders(transcoders)
    transcoders.check_model(model)
    return transcoders


def _write_outputs(run: Run, steps, answer_note: str) -> None:
    """``sentences.csv`` and what its columns mean, the views' rank correlations, and the report."""
    from anchorlens.report import build_report

    analysis, notes, out = run.analysis, run.notes, run.out
    if "flow" in steps:
        notes["flow"] = answer_note
    if "attribution" in steps:
        notes["attribution"] = answer_note + " " + notes["attribution"]
    frame = analysis.to_dataframe()
    frame.to_csv(out / "sentences.csv", index=False)
    _write_column_notes(out / "sentences_columns.md", frame)
    correlations = analysis.view_correlations()
    if len(correlations):
        correlations.to_csv(out / "view_correlations.csv", index=False)
        pairs = [f"{r.view_a} ~ {r.view_b}: {r.spearman:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
                 for r in correlations.itertuples()]
        notes["summary"] = ("Rank correlations between views (Spearman over sentences, 95% bootstrap interval over "
                            "sentences): " + "; ".join(pairs) + ".")
    notes["cot"] = "What each number means. " + " ".join(
        f"{c}: {VIEW_DEFINITIONS[c]}" for c in frame.columns if c in VIEW_DEFINITIONS)
    with timed(analysis, "report"):
        analysis.report_path = build_report(out, analysis.report_data(notes), progress=run.progress)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _the_trace(model, identity, out: Path, problem, trace, max_new_tokens, seed, temperature, top_p, style,
               say) -> Trace:
    """The trace to analyse: the given one, or the saved one when it was generated under the same key (so stored
    rollouts stay valid), or a newly generated one."""
    path = out / TRACE_FILE
    old = step_keys.read_key(path) if path.exists() else None
    if trace is not None:
        key = step_keys.normalise({"given": step_keys.trace_key(trace)})
        reason = degenerate_reason(trace.cot)
        if reason:
            warnings.warn(f"this chain of thought looks degenerate ({reason}); its analyses may mean little")
        if old == key:
            say("trace: reused")
            return trace
        status = "given" if old is None else "given (replaces the saved trace)"
    else:
        key = step_keys.normalise({"model": identity, "problem": problem, "seed": seed, "temperature": temperature,
                                   "top_p": top_p, "max_new_tokens": max_new_tokens, "style": style})
        status = step_keys.status(old, key).replace("computed", "generated")
        if status == "reused":
            say("trace: reused")
            return Trace.load(path)
        trace = generate_trace(model, problem, max_new_tokens=max_new_tokens, seed=seed, temperature=temperature,
                               top_p=top_p, style=style)
        reason = degenerate_reason(trace.cot, trace.n_sentences)
        if reason:
            raise DegenerateTraceError(
                f"the model's chain of thought is degenerate ({reason}): {trace.cot[:120]!r}. Analysing it would "
                "give meaningless results. Try another seed (--seed), more tokens (--max-new-tokens), or a larger "
                f"model; if every seed gives such text, decoding itself may be broken: {version_report()}."
            )
    step_keys.key_path(path).unlink(missing_ok=True)
    trace.save(path)
    step_keys.write_key(path, key)
    say(f"trace: {status}")
    return trace


def _answer_note(model, trace: Trace, answer: str | None, position: int, found: bool) -> str:
    token = model.tokenizer.decode([trace.token_ids[position]])
    where = (f"the first token of the last occurrence of the answer {answer!r} in the chain of thought" if found
             else "the trace's last token (no answer, or it does not occur in the chain of thought)")
    return (f"The answer token, which flow_to_answer and attribution_to_answer both explain: {token!r} at position "
            f"{position}, {where}; both measure what feeds its prediction at position {position - 1}.")


def _write_column_notes(path: Path, frame) -> None:
    """``sentences_columns.md``: what each column of ``sentences.csv`` means, one sentence each."""
    lines = ["# sentences.csv: one row per sentence", ""]
    lines += [f"- `{c}`: {VIEW_DEFINITIONS[c]}" for c in frame.columns if c in VIEW_DEFINITIONS]
    if any(str(c).endswith("_ci_low") for c in frame.columns):
        lines += ["", CI_NOTE]
    path.write_text("\n".join(lines) + "\n")


def _trace_answer(trace: Trace, extractor) -> str | None:
    """The final answer the chain of thought itself gave (its text after ``</think>`` included)."""
    from anchorlens.answers import get_extractor

    return get_extractor(extractor)(trace.cot + trace.metadata.get("after_think", ""))


