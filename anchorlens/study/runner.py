"""``study``: run ``analyze`` on every trace of a dataset (or a shard of it), then aggregate over traces.

Each trace goes through ``anchorlens.pipeline.analyze`` into its own folder (``out_dir/traces/<name>``), so every
step is computed by the one implementation ``analyze`` uses, saved under the same keys, reused on a re-run, and a
killed study resumes; the per-trace report is that trace's own report. Only one trace's tensors are held at a
time. The aggregation (``collect.aggregate_folder``) reads the saved files, so shards spread over machines into
one shared folder aggregate into the same ``Study`` as one run.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from anchorlens import settings
from anchorlens.stats import renamed_arguments
from anchorlens.errors import DegenerateTraceError, EmptyTextError, TraceTooLongError
from anchorlens.study import collect
from anchorlens.study.discovery import (
    StudyInputError,
    TraceSource,
    check_study_options,
    discover,
    published_trace,
    trace_from_sentences,
)
from anchorlens.study.result import Study

@renamed_arguments()
def study(
    model,
    traces,
    *,
    out_dir: str | Path,
    views=settings.STUDY_DEFAULT_VIEWS,
    importance: str | None = settings.STUDY_IMPORTANCE,
    top_k: int = settings.STUDY_TOP_K,
    base_model=None,
    shard=None,
    progress: bool = True,
    n_rollouts: int = settings.N_ROLLOUTS,
    rollout_max_tokens: int = settings.ROLLOUT_MAX_TOKENS,
    sampler=None,
    extractor: str = settings.EXTRACTOR,
    max_new_tokens: int = settings.MAX_NEW_TOKENS,
    generation_seed: int = settings.SEED,
    transcoders=None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> Study:
    """Analyse many chains of thought with one white-box model and aggregate over them, as the paper does.

    Args:
        model: the white-box model (a loaded ``TransformerBridge``), or None for a study of published importance
            alone (``views=()``, ``importance="published"``): no model is loaded and no trace refused for length.
        traces: a folder searched recursively for published trace folders (``problem.json``,
            ``base_solution.json``, ``chunks_labeled.json``; sorted by path; their published chunks stay the
            sentences), a list of ``Trace`` objects (named by ``metadata["name"]``, else ``trace_000``, ...), or a
            file of problems to generate traces for (``.txt``, one a line, or a ``.json`` list of problems or of
            ``{"problem", "answer"}``; generated as ``analyze`` does, with ``max_new_tokens`` and ``generation_seed``).
        out_dir: the study's folder; each trace's results go to ``out_dir/traces/<name>`` as ``analyze`` saves
            them (keyed: a re-run reuses them, a killed study resumes).
        views: among ``categories``, ``receivers``, ``suppression``, ``flow``, ``attribution`` (needs
            ``transcoders``); the receivers view gives the kurtosis, heads and reliability.
        importance: ``"published"`` reads the published metrics and first tags of ``chunks_labeled.json``;
            ``"rollouts"`` runs analyze's resampling step on every trace (``n_rollouts``, ``rollout_max_tokens``,
            ``sampler``, ``extractor`` as in ``analyze``); None leaves importance out.
        top_k: the number of receiver heads, chosen by mean kurtosis over traces (and per trace for its report).
        base_model: a base model to compare with: its receivers step on the same traces (``out_dir/base``).
        shard: ``"i/n"``: run only the traces whose index is ``i`` modulo ``n``; the returned ``Study`` aggregates
            whatever is complete in ``out_dir`` and lists the rest in ``missing``.
        say: where the per-trace lines go (default: standard error when ``progress`` is on).

    >>> s = study(load_model(), "data/thought-anchors", out_dir="study/")   # doctest: +SKIP
    >>> s.receiver_heads[:3], s.reliability, s.by_category()                # doctest: +SKIP
    """
    from anchorlens.models import model_identity

    views, shard = check_study_options(views, importance, top_k, shard)
    if not views and importance == "published" and base_model is None:
        model = None  # nothing needs a forward pass: the published files are read alone, no trace refused for length
    if model is None and (views or importance != "published" or base_model is not None):
        raise StudyInputError("a study without a model reads published importance and nothing else: pass "
                              "views=(), importance='published' and no base model, or pass a white-box model "
                              f"(views {list(views)}, importance {importance!r} need one)")
    if base_model is not None and "receivers" not in views:
        raise StudyInputError("a base model is compared by its heads' kurtosis: add the receivers view, or leave "
                              "base_model out")
    if "attribution" in views and transcoders is None:
        raise StudyInputError("the attribution view needs transcoders: pass transcoders=... or leave it out")
    sources = discover(traces)
    if importance == "published" and not all(s.published for s in sources):
        raise StudyInputError("importance='published' needs published trace folders (chunks_labeled.json): pass "
                              "their folder, or use importance='rollouts' or None with Trace objects")
    say = say if say is not None else (_to_stderr if progress else (lambda line: None))  # not the bar switch: a re-run always says what it reused
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"traces": [s.name for s in sources], "views": list(views), "importance": importance, "top_k": top_k,
                "model": model_identity(model) if model is not None else None, "base_model": model_identity(base_model) if base_model else None,
                "sources": {s.name: str(s.folder) for s in sources if s.published}}
    collect.write_manifest(out_dir, manifest)
    steps = tuple(v for v in views if v != "attribution") + (("resampling",) if importance == "rollouts" else ())
    chosen = [(i, s) for i, s in enumerate(sources) if shard is None or i % shard[1] == shard[0]]
    where = f" (shard {shard[0]}/{shard[1]}: {len(chosen)} of {len(sources)})" if shard else ""
    who = f"with {manifest['model']['name']}" if model is not None else "from the published files (no model)"
    say(f"study of {len(sources)} traces{where} {who} into {out_dir}")
    settings = dict(steps=steps, top_k_heads=top_k, n_rollouts=n_rollouts, rollout_max_tokens=rollout_max_tokens,
                    sampler=sampler, extractor=extractor, transcoders=transcoders if "attribution" in views else None,
                    max_new_tokens=max_new_tokens, seed=generation_seed)
    for done, (_, source) in enumerate(chosen, start=1):
        if model is None:
            line = copy_published(source, out_dir)
        else:
            line = run_trace(model, source, out_dir, importance=importance, base_model=base_model, **settings)
        say(f"[{done}/{len(chosen)}] {line}")
    result = collect.aggregate_folder(out_dir, n_bootstrap=n_bootstrap, seed=seed)
    if result.missing:
        say(f"aggregated {len(result.traces)} of {len(sources)} traces; missing: " +
            "; ".join(f"{name}: {why}" for name, why in result.missing.items()))
    result.save(out_dir)
    return result


def copy_published(source: TraceSource, out_dir: Path) -> str:
    """A study without a model: the published chunks are all there is to read (no tokenizer, no length limit)."""
    from anchorlens.study.discovery import published_records

    folder = collect.trace_dir(out_dir, source.name)
    folder.mkdir(parents=True, exist_ok=True)
    records = published_records(source.folder)  # checked here, before the aggregation reads it
    shutil.copyfile(source.folder / "chunks_labeled.json", folder / collect.PUBLISHED_COPY)
    (folder / collect.SKIPPED).unlink(missing_ok=True)
    return f"{source.name}: {len(records)} published sentences"


def _build(model, source: TraceSource):
    """The trace on the white-box model: a published folder's chunks on its tokenizer, or the given trace."""
    return published_trace(model, source.folder) if source.published else source.trace


def run_trace(model, source: TraceSource, out_dir: Path, *, importance, base_model=None, **settings) -> str:
    """Analyse one trace into ``out_dir/traces/<name>`` (and the base model's receivers into ``out_dir/base``);
    returns its one-line summary. A trace that cannot be analysed (too long for the model's context, empty) is
    recorded as skipped, with why, and the study goes on."""
    from anchorlens.pipeline import analyze

    folder = collect.trace_dir(out_dir, source.name)
    started = time.perf_counter()
    lines: list[str] = []
    try:
        if source.problem is not None:  # analyze generates the trace (keyed on its generation settings)
            analysis = analyze(model, folder, problem=source.problem, reference_answer=source.answer,
                               progress=False, say=lines.append, **settings)
        else:
            trace = _build(model, source)
            answer = trace.metadata.get("answer") if source.published else None
            analysis = analyze(model, folder, trace=trace, reference_answer=answer, progress=False,
                               say=lines.append, **settings)
    except (TraceTooLongError, EmptyTextError, DegenerateTraceError) as error:
        folder.mkdir(parents=True, exist_ok=True)
        collect.write_json(folder / collect.SKIPPED, {"reason": f"skipped: {error}"})
        return f"{source.name}: skipped ({error})"
    (folder / collect.SKIPPED).unlink(missing_ok=True)
    trace = analysis.trace
    if importance == "published":
        shutil.copyfile(source.folder / "chunks_labeled.json", folder / collect.PUBLISHED_COPY)
    statuses = ", ".join(f"{step}: {status}" for step, status in analysis.steps.items())
    summary = f"{source.name}: {trace.n_sentences} sentences, {trace.n_tokens} tokens"
    if analysis.receiver_heads:
        layer, head = analysis.receiver_heads[0]
        summary += f"; its top head L{layer}H{head} (kurtosis {float(analysis.receiver_kurtosis[layer, head]):.1f})"
    del analysis  # one trace's tensors at a time
    if base_model is not None:  # the same sentences on the base model's tokenizer
        base_folder = collect.trace_dir(out_dir, source.name, base=True)
        try:
            base_trace = trace_from_sentences(base_model, trace.prompt, trace.cot, trace.sentences, trace.metadata,
                                              style=trace.style)
        except TraceTooLongError as error:
            base_folder.mkdir(parents=True, exist_ok=True)
            collect.write_json(base_folder / collect.SKIPPED, {"reason": f"skipped for the base model: {error}"})
            statuses += ", base receivers: skipped (too long)"
        else:
            (base_folder / collect.SKIPPED).unlink(missing_ok=True)
            base = analyze(base_model, base_folder, trace=base_trace, steps=("receivers",),
                           top_k_heads=settings["top_k_heads"], progress=False, say=lines.append)
            statuses += f", base receivers: {base.steps.get('receivers')}"
            del base
    return f"{summary}; {time.perf_counter() - started:.1f} s ({statuses or 'nothing to compute'})"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

