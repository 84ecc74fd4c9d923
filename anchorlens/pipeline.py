"""``analyze``: one call from a problem (or an existing chain of thought) to a report, all three ways.

Steps, each saved into the output folder as it finishes, with the key it was made under beside it
(``<file>.key.json``: the model's identity, the trace, the step's settings), so that a re-run reuses exactly the
steps whose key is unchanged and a killed run resumes where it stopped:

1. the trace (generated under its seed and settings, or given) -> ``trace.json``;
2. sentence categories (the shipped taxonomy classifier) -> ``categories.json``;
3. receiver heads: sentence attention of every head, kurtosis, top heads, receiver scores -> ``receivers.npz``;
4. attention suppression: the sentence-to-sentence KL matrix -> ``suppression.npz``;
5. resampling importance: rollouts in ``rollouts.sqlite`` (resumable), metrics -> ``importance.npz``;
5b. information flow (L2 routes, Ferrando and Voita 2024) into the answer token, by sentence -> ``flow.npz``;
5b'. only with ``resilience_top``: resilience and Counterfactual++ (Thought Branches) of the top sentences by
    counterfactual importance, from the same rollout store (their first iteration and kept side are the
    resampling step's rollouts) -> ``resilience.npz``;
5c. only with ``transcoders``: the same answer token's logit attributed back to sentences through an attribution
    graph (circuit tracing) -> ``attribution.npz`` (per sentence) and ``attribution_graph.npz`` (pruned graph);
6. the report: ``report.html``, ``report.json``, PNGs; ``sentences.csv`` with every per-sentence number and
   ``sentences_columns.md`` saying what each column means (``anchorlens.views.VIEW_DEFINITIONS``).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from anchorlens import step_keys
from anchorlens.errors import DegenerateTraceError, OptionError
from anchorlens.generation import generate_trace
from anchorlens.io import load_arrays, save_arrays
from anchorlens.receivers.scores import PROXIMITY_IGNORE
from anchorlens.trace import Trace, degenerate_reason
from anchorlens.attribution.attribute import answer_token_position
from anchorlens.versions import version_report
from anchorlens.views import VIEW_COLUMNS, VIEW_DEFINITIONS, CI_NOTE, suppression_summaries, view_correlations
from anchorlens.results import Result, expect_kind
from anchorlens import settings
from anchorlens.settings import DEFAULT_STEPS, EXTRACTORS, STEPS, STYLES, check_settings  # noqa: F401 (re-exported)

TRACE_FILE, CATEGORIES_FILE = "trace.json", "categories.json"
RECEIVERS_FILE, SUPPRESSION_FILE, IMPORTANCE_FILE = "receivers.npz", "suppression.npz", "importance.npz"
FLOW_FILE = "flow.npz"
RESILIENCE_FILE = "resilience.npz"
# what analyze's table takes from the resilience step (per sentence; NaN for sentences it did not measure)
RESILIENCE_COLUMNS = ("resilience", "resilience_ci_low", "resilience_ci_high", "abandonment_rate",
                      "counterfactual_pp_accuracy", "counterfactual_pp_accuracy_ci_low",
                      "counterfactual_pp_accuracy_ci_high", "counterfactual_pp_kl")
ATTRIBUTION_FILE, ATTRIBUTION_GRAPH_FILE = "attribution.npz", "attribution_graph.npz"


@dataclass
class Analysis(Result):
    """Everything ``analyze`` computed; ``report_path`` is the page to open.

    ``steps`` says, per step, whether this run computed, reused or recomputed it (and why); ``keys`` holds the
    key each saved result was made under (model, trace, settings). ``answer_position`` is the trace position of
    the answer token that the flow and attribution views explain (predicted at the position before it).
    """

    trace: Trace
    out_dir: Path
    report_path: Path
    categories: list[str] | None = None
    receiver_heads: list[tuple[int, int]] = field(default_factory=list)
    receiver_kurtosis: torch.Tensor | None = None
    receiver_scores: torch.Tensor | None = None
    head_attention: torch.Tensor | None = None  # sentence attention of the top receiver head
    suppression_kl: torch.Tensor | None = None
    importance: object | None = None  # ImportanceResult
    resilience: object | None = None  # ResilienceResult (Thought Branches), of the top sentences only
    flow_to_answer: torch.Tensor | None = None  # information flow: how much each sentence feeds the answer token
    flow_matrix: torch.Tensor | None = None  # information flow [target sentence, source sentence]
    attribution_to_answer: torch.Tensor | None = None  # paths from each sentence's tokens to the answer's logit
    attribution_features: torch.Tensor | None = None  # influence of the features at each sentence's positions
    attribution_graph: object | None = None  # the pruned AttributionGraph behind it
    attribution_info: dict = field(default_factory=dict)  # answer token and position, features kept, scores
    answer_position: int | None = None
    steps: dict[str, str] = field(default_factory=dict)  # step -> "computed" / "reused" / "recomputed (...)"
    keys: dict[str, dict] = field(default_factory=dict)  # step -> the key its saved result was made under
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step in this run (resumed: short)

    @classmethod
    def load(cls, out_dir: str | Path) -> "Analysis":
        """What ``analyze`` (or ``anchorlens analyze``) saved in ``out_dir``, without a model: each analysis that
        was run and saved for the folder's trace (results left from another trace are not read)."""
        out = Path(out_dir)
        expect_kind(out, cls)  # e.g. a study's folder, or one result's file
        if not (out / TRACE_FILE).exists():
            raise FileNotFoundError(f"{out} has no {TRACE_FILE}: pass a folder that analyze wrote")
        trace = Trace.load(out / TRACE_FILE)
        analysis = cls(trace=trace, out_dir=out, report_path=out / "report.html")
        this_trace = step_keys.trace_key(trace)

        for spec in STEP_TABLE:
            path = out / spec.file
            key = step_keys.read_key(path)
            if key is None or key.get("trace") != this_trace or not path.exists():
                continue
            analysis.keys[spec.name] = key
            spec.read(path, analysis)
        position = [k.get("answer_position") for k in analysis.keys.values() if k.get("answer_position") is not None]
        analysis.answer_position = position[0] if position else None
        return analysis

    def to_dataframe(self):
        """One row per sentence: text, category and each view's value (``VIEW_DEFINITIONS`` says what each means)."""
        import pandas as pd

        frame = pd.DataFrame({"sentence": range(self.trace.n_sentences), "text": self.trace.sentence_texts()})
        if self.categories is not None:
            frame["category"] = self.categories
        if self.receiver_scores is not None:
            frame["receiver_score"] = self.receiver_scores.numpy()
        if self.suppression_kl is not None:
            out_kl, in_kl = suppression_summaries(self.suppression_kl)
            frame["suppression_out_kl"] = out_kl.numpy()
            frame["suppression_in_kl"] = in_kl.numpy()
        if self.flow_to_answer is not None:
            frame["flow_to_answer"] = self.flow_to_answer.numpy()
        if self.attribution_to_answer is not None:
            frame["attribution_to_answer"] = self.attribution_to_answer.numpy()
        if self.attribution_features is not None:
            frame["attribution_features_at_sentence"] = self.attribution_features.numpy()
        if self.importance is not None:
            importance = self.importance.to_dataframe().drop(columns=["chunk", "chunk_idx"], errors="ignore")
            frame = pd.concat([frame, importance.reset_index(drop=True)], axis=1)
        if self.resilience is not None:
            for column in RESILIENCE_COLUMNS:
                frame[column] = self.resilience.column(column, self.trace.n_sentences)
        return frame

    def save(self, folder: str | Path) -> Path:
        """Copy the analysis's folder (what ``analyze`` wrote: trace, results, their keys, the report) to ``folder``;
        ``Analysis.load(folder)`` reads it back. Saving to its own folder does nothing: it is saved already."""
        import shutil

        source, folder = self.out_dir.resolve(), Path(folder)
        if folder.resolve() == source:
            return folder
        if source in folder.resolve().parents:
            raise OptionError(f"{folder} is inside the analysis's folder {source}: save it somewhere else")
        shutil.copytree(source, folder, dirs_exist_ok=True)
        return folder

    def plot(self, columns: list[str] | None = None):
        """One bar chart per computed view (``VIEW_COLUMNS``), sentences along x, sharing the axis: where the
        views agree on a sentence. Returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        frame = self.to_dataframe()
        columns = columns or [c for c in VIEW_COLUMNS if c in frame] or ["sentence"]
        figure, axes = plt.subplots(len(columns), 1, figsize=(max(5.0, 0.25 * len(frame)), 1.8 * len(columns)),
                                    sharex=True, squeeze=False)
        for column, ax in zip(columns, axes[:, 0]):
            ax.bar(frame["sentence"], frame[column].astype(float))
            ax.set_ylabel(column, rotation=0, ha="right", fontsize=8)
        axes[-1, 0].set_xlabel("sentence")
        return figure

    def view_correlations(self, n_boot: int = 2000, seed: int = 0):
        """Spearman rank correlations over sentences between the views that were computed, one row per pair, with
        95% bootstrap intervals over sentences (``anchorlens.views.view_correlations``)."""
        return view_correlations(self.to_dataframe(), VIEW_COLUMNS, n_bootstrap=n_boot, seed=seed)


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
    from anchorlens.report import ReportData, build_report

    check_settings(n_rollouts=n_rollouts, rollout_max_tokens=rollout_max_tokens, max_new_tokens=max_new_tokens,
                   top_k_heads=top_k_heads, attribution_features=attribution_features, temperature=temperature,
                   top_p=top_p, style=style, extractor=extractor, steps=steps)
    if resilience_top:
        check_settings(resilience_top=resilience_top, resilience_iterations=resilience_iterations)
        if "resampling" not in steps:
            raise OptionError("resilience_top picks the top sentences by counterfactual importance and shares the "
                              "resampling step's rollouts: keep the resampling step, or set resilience_top=0")
        steps = (*steps, "resilience") if "resilience" not in steps else steps
    if problem is None and trace is None:
        raise OptionError("pass a problem to reason about, or an existing trace")
    say = say if say is not None else (_to_stderr if progress else (lambda line: None))  # not the bar switch: a re-run always says what it reused
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    identity = model_identity(model)
    trace = _the_trace(model, identity, out, problem, trace, max_new_tokens, seed, temperature, top_p, style, say)
    analysis = Analysis(trace=trace, out_dir=out, report_path=out / "report.html")
    analysis.seconds["trace"] = time.perf_counter() - started
    analysis.keys["trace"] = step_keys.read_key(out / TRACE_FILE)
    this_trace = step_keys.trace_key(trace)
    notes: dict[str, str] = {}
    if transcoders is not None:
        steps = (*steps, "attribution") if "attribution" not in steps else steps
        if isinstance(transcoders, (str, Path)):
            from anchorlens.attribution.transcoders import load_transcoders

            transcoders = load_transcoders(transcoders)
        transcoders.check_model(model)  # a mismatch fails now, not after minutes of other steps
    elif "attribution" in steps:
        raise OptionError("the attribution step needs transcoders: pass transcoders=... (anchorlens analyze "
                          "--transcoders PATH), e.g. from anchorlens.train_transcoders or circuit-tracer's layout")
    if "resampling" in steps and not trace.prompt.strip():  # refused before minutes of other steps
        raise OptionError(
            "the chain of thought has no prompt, so rollouts would not know the problem: give the problem "
            "(anchorlens analyze --problem ..., or Trace.from_text(model, text, prompt=problem_prompt(model, "
            "problem))) or leave resampling out (--skip resampling)"
        )
    answer = reference_answer if reference_answer is not None else _trace_answer(trace, extractor)
    found = answer_token_position(model.tokenizer, trace, answer)  # one search: a decode per position
    analysis.answer_position = trace.n_tokens - 1 if found is None else found

    run = _Run(model=model, trace=trace, identity=identity, this_trace=this_trace, out=out, analysis=analysis,
               notes=notes, say=say, progress=progress, answer=answer, sampler=sampler, transcoders=transcoders,
               options=dict(top_k_heads=top_k_heads, n_rollouts=n_rollouts, rollout_max_tokens=rollout_max_tokens,
                            temperature=temperature, top_p=top_p, extractor=extractor,
                            answer_equivalence=answer_equivalence, resilience_top=resilience_top,
                            resilience_iterations=resilience_iterations,
                            attribution_features=attribution_features))
    for spec in STEP_TABLE:
        if spec.name in steps:
            run_step(spec, run)
    answer_note = _answer_note(model, trace, answer, analysis.answer_position, found is not None)
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

    metrics = frame.drop(columns=["sentence", "text", "category"], errors="ignore")
    data = ReportData(
        trace,
        title="Thought anchors",
        model_name=trace.model_name,
        problem=trace.metadata.get("problem"),
        answer=answer,
        metrics=metrics if len(metrics.columns) else None,
        categories=analysis.categories,
        suppression_kl=_numpy(analysis.suppression_kl),
        counterfactual_matrix=_numpy(getattr(analysis.importance, "counterfactual_matrix", None)),
        receiver_kurtosis=_numpy(analysis.receiver_kurtosis),
        receiver_heads=analysis.receiver_heads or None,
        head_attention=_numpy(analysis.head_attention),
        head_attention_head=analysis.receiver_heads[0] if analysis.receiver_heads else None,
        receiver_scores=_numpy(analysis.receiver_scores),
        flow_matrix=_numpy(analysis.flow_matrix),
        attribution_graph=analysis.attribution_graph,
        notes=notes,
    )
    with _timed(analysis, "report"):
        analysis.report_path = build_report(out, data, progress=progress)
    return analysis


@contextmanager
def _timed(analysis: Analysis, step: str):
    started = time.perf_counter()
    yield
    analysis.seconds[step] = time.perf_counter() - started


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _numpy(value):
    if value is None:
        return None
    return value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)


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


def _classifier_version() -> str:
    """A digest of the shipped taxonomy classifier's weights: new weights recompute the categories."""
    import hashlib

    from anchorlens.taxonomy.classifier import DEFAULT_WEIGHTS

    return hashlib.sha256(Path(DEFAULT_WEIGHTS).read_bytes()).hexdigest()[:16]


def _sampler_key(identity: dict, sampler) -> dict:
    """Who samples the rollouts: the model itself, or a server (its URL and the model it serves)."""
    if sampler is None:
        return {"local": identity}
    if isinstance(sampler, str):
        return {"server": sampler}
    return {"sampler": getattr(sampler, "name", type(sampler).__name__)}


def _receivers(model, trace, path: Path, top_k: int, progress: bool) -> None:
    from anchorlens.receivers.attention import sentence_attention
    from anchorlens.receivers.scores import head_kurtosis, receiver_scores, top_heads, vertical_scores

    matrix = sentence_attention(model, trace).matrix
    vertical = vertical_scores(matrix)
    kurtosis = head_kurtosis(vertical)
    heads = top_heads(kurtosis, top_k)  # fewer, or none, on a trace too short for a kurtosis
    head_matrix = matrix[heads[0][0], heads[0][1]] if heads else torch.zeros(0)
    scores = receiver_scores(vertical, heads) if heads else torch.zeros(0)
    # vertical: every head's vertical scores, so a study can score sentences with heads chosen over many traces
    save_arrays(path, {"kurtosis": kurtosis, "scores": scores, "head_matrix": head_matrix, "vertical": vertical},
                {"heads": [list(h) for h in heads]})


def _read_receivers(path: Path, analysis: Analysis) -> None:
    saved, meta = load_arrays(path)
    heads = [tuple(h) for h in meta["heads"]]
    analysis.receiver_heads = heads
    analysis.receiver_kurtosis = saved["kurtosis"] if heads else None
    analysis.receiver_scores = saved["scores"] if heads else None
    analysis.head_attention = saved["head_matrix"] if heads else None


def _suppression_kl(model, trace, progress) -> torch.Tensor:
    from anchorlens.suppression import suppression_matrix

    return suppression_matrix(model, trace, progress=progress).kl


def _flow(model, trace, path: Path, answer_position: int, progress: bool) -> None:
    """Information flow (L2: it factors into dot products) into the prediction of the answer token, by sentence."""
    from anchorlens.flow.sentences import sentence_flow

    flow = sentence_flow(model, trace, distance="l2", position=answer_position - 1, progress=progress)
    save_arrays(path, {"to_answer": flow.to_answer, "matrix": flow.matrix})


def _read_flow(path: Path, analysis: Analysis) -> None:
    saved = load_arrays(path)[0]
    analysis.flow_to_answer, analysis.flow_matrix = saved["to_answer"], saved["matrix"]


def _attribution(model, transcoders, trace, path: Path, position: int, max_features: int, progress) -> None:
    """The answer token's logit attributed to sentences (the graph of the tokens before it)."""
    from anchorlens.attribution.attribute import trace_attribution

    graph, table = trace_attribution(model, transcoders, trace, answer_position=position,
                                     max_feature_nodes=max_features, progress=progress)
    pruned = graph.prune()
    features_kept, features_dropped = graph.n_features, len(graph.dropped_features)
    del graph  # at 1k tokens each dense adjacency is 3.3 GB: keep one
    replacement, completeness = pruned.scores()
    pruned.save(path.with_name(ATTRIBUTION_GRAPH_FILE))
    info = {"transcoders": transcoders.scan, "max_feature_nodes": max_features, "answer_position": position,
            "answer_token": table.attrs["answer_token"],
            "answer_text": model.tokenizer.decode([table.attrs["answer_token"]]),
            "answer_is_logit_node": bool(table.attrs["answer_is_logit_node"]),
            "features_kept": features_kept, "features_dropped": features_dropped,
            "replacement": replacement, "completeness": completeness}
    arrays = {name: torch.tensor(table[name].to_numpy(), dtype=torch.float32)
              for name in ("influence", "token_influence", "feature_influence")}
    save_arrays(path, arrays, info)


def _read_attribution(path: Path, analysis: Analysis) -> None:
    from anchorlens.attribution.graph import AttributionGraph

    saved, meta = load_arrays(path)
    # Paths that start at the sentence's token embeddings, each counted once; the features at its positions
    # apart (their influence includes what flows into them from earlier sentences' tokens).
    analysis.attribution_to_answer = saved["token_influence"]
    analysis.attribution_features = saved["feature_influence"]
    analysis.attribution_info = {k: v for k, v in meta.items() if k != "kind"}
    analysis.attribution_graph = AttributionGraph.load(path.with_name(ATTRIBUTION_GRAPH_FILE))


def _attribution_note(info: dict) -> str:
    logit = ("one of the logit nodes: attribution_to_answer is each sentence's influence on its logit"
             if info["answer_is_logit_node"] else "NOT among the logit nodes (not among the model's top predictions "
             "there): attribution_to_answer is each sentence's influence on the top predictions instead")
    return (f"The logit of the answer token {info['answer_text']!r} (position {info['answer_position']}; {logit}) "
            f"through transcoders {info['transcoders']}: {info['features_kept']} feature nodes kept, "
            f"{info['features_dropped']} of smaller influence dropped (max_feature_nodes={info['max_feature_nodes']}); "
            f"pruned graph replacement score {info['replacement']:.3f}, completeness {info['completeness']:.3f}. "
            "attribution_to_answer counts the paths that start at a sentence's token embeddings; "
            "attribution_features_at_sentence the features computed at its positions (which overlap).")


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


def _resampling(model_or_sampler, trace, path: Path, answer, n_rollouts, max_tokens, temperature, top_p, extractor,
                answer_equivalence, progress) -> None:
    from anchorlens.resampling.runner import resampling_importance

    importance = resampling_importance(
        model_or_sampler,
        trace,
        n_rollouts=n_rollouts,
        store=path.with_name("rollouts.sqlite"),
        reference_answer=answer,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        extractor=extractor,
        answer_equivalence=answer_equivalence,
        progress=progress,
    )
    importance.save(path)


def _top_sentences(importance, top: int) -> list[int]:
    """The ``top`` sentences of highest counterfactual_importance_kl (the reference's choice of sentences to
    test), in trace order; sentences without a value are left out."""
    values = importance.counterfactual_importance_kl.double().numpy()
    order = [int(i) for i in np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable") if np.isfinite(values[i])]
    return sorted(order[:top])


def _resilience(model_or_sampler, trace, path: Path, targets, answer, n_rollouts, max_tokens, temperature, top_p,
                extractor, answer_equivalence, max_iterations, progress) -> None:
    from anchorlens.branches import resilience

    result = resilience(model_or_sampler, trace, targets, n_rollouts=n_rollouts, max_iterations=max_iterations,
                        store=path.with_name("rollouts.sqlite"), reference_answer=answer, outcome=extractor,
                        temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                        answer_equivalence=answer_equivalence, progress=progress)
    result.save(path)


# ---- the steps: one table that analyze runs, Analysis.load reads and the study looks up ----------------------


@dataclass
class _Run:
    """What one ``analyze`` call's steps share: the model, the trace, its answer and the call's options."""

    model: object
    trace: Trace
    identity: dict
    this_trace: dict
    out: Path
    analysis: Analysis
    notes: dict
    say: Callable[[str], None]
    progress: bool
    answer: str | None
    sampler: object
    transcoders: object
    options: dict
    targets: list[int] = field(default_factory=list)

    @property
    def sampling(self):
        """Who samples the rollouts: the model itself or the given sampler."""
        return self.model if self.sampler is None else self.sampler

    def sampling_key(self) -> dict:
        o = self.options
        extractor = o["extractor"]
        return {"sampler": _sampler_key(self.identity, self.sampler), "rollouts": o["n_rollouts"],
                "rollout_tokens": o["rollout_max_tokens"], "temperature": o["temperature"], "top_p": o["top_p"],
                "extractor": extractor if isinstance(extractor, str) else getattr(extractor, "__name__", "custom"),
                "answer": self.answer, "answer_equivalence": o["answer_equivalence"],
                # the sampler names the model that samples (a server's own), so the local model's identity is out
                "model": None}


@dataclass(frozen=True)
class Step:
    """One step of ``analyze``: its name, the file its result is saved to (its key beside it), the step's own
    settings for the key (``settings(run)``; None: nothing to compute, a note says why), how it computes and saves
    its result (``compute(run, path)``), how a saved result is read into an ``Analysis`` (``read(path, analysis)``)
    and what it adds to the report's notes afterwards (``after(run)``)."""

    name: str
    file: str
    settings: Callable[["_Run"], dict | None]
    compute: Callable[["_Run", Path], None]
    read: Callable[[Path, Analysis], None]
    after: Callable[["_Run"], None] | None = None


def run_step(spec: Step, run: _Run) -> None:
    """Reuse ``spec``'s saved result when it was made under the same key; else compute and save it."""
    settings = spec.settings(run)
    if settings is not None:
        path = run.out / spec.file
        key = step_keys.normalise({"model": run.identity, "trace": run.this_trace} | settings)
        old = step_keys.read_key(path) if path.exists() else None
        status = step_keys.status(old, key)
        with _timed(run.analysis, spec.name):
            if status != "reused":
                step_keys.key_path(path).unlink(missing_ok=True)  # a run killed while writing leaves no stale key
                spec.compute(run, path)
                step_keys.write_key(path, key)
        run.analysis.steps[spec.name], run.analysis.keys[spec.name] = status, key
        run.say(f"{spec.name}: {status}")
        spec.read(path, run.analysis)
    if spec.after is not None:
        spec.after(run)


def saved_key(folder: str | Path, step: str) -> dict | None:
    """The key under which ``analyze`` saved step ``step``'s result in ``folder``, or None when it is not saved
    (the result's file or its key is missing)."""
    path = Path(folder) / STEP_FILES[step]
    return step_keys.read_key(path) if path.exists() else None


def _categories_compute(run: _Run, path: Path) -> None:
    from anchorlens.taxonomy import classify_sentences

    _write_json(path, list(classify_sentences(run.trace.sentence_texts())))


def _categories_read(path: Path, analysis: Analysis) -> None:
    analysis.categories = json.loads(path.read_text())


def _receivers_after(run: _Run) -> None:
    if not run.analysis.receiver_heads:
        run.notes["receiver"] = run.notes["head_attention"] = (
            f"Too short for receiver heads: {run.trace.n_sentences} sentences, and a head's kurtosis needs "
            f"vertical scores of several sentences, each attended from {PROXIMITY_IGNORE} or more sentences later.")


def _suppression_settings(run: _Run) -> dict | None:
    if run.trace.n_sentences < 2:
        run.notes["suppression"] = "The trace has a single sentence: nothing to suppress."
        return None
    return {}


def _suppression_read(path: Path, analysis: Analysis) -> None:
    analysis.suppression_kl = load_arrays(path)[0]["kl"]


def _resampling_settings(run: _Run) -> dict:
    if run.answer is None:
        run.notes["importance"] = (
            "No reference answer (the chain of thought has no \\boxed{} answer and none was given): "
            "accuracy-based columns are empty; KL-based ones still compare answer distributions.")
    return run.sampling_key()


def _resampling_compute(run: _Run, path: Path) -> None:
    o = run.options
    _resampling(run.sampling, run.trace, path, run.answer, o["n_rollouts"], o["rollout_max_tokens"],
                o["temperature"], o["top_p"], o["extractor"], o["answer_equivalence"], run.progress)


def _importance_read(path: Path, analysis: Analysis) -> None:
    from anchorlens.resampling.metrics import ImportanceResult

    analysis.importance = ImportanceResult.load(path)


def _resampling_after(run: _Run) -> None:
    info = run.analysis.importance.run_info
    if run.analysis.steps["resampling"] != "reused" and info:
        run.say(f"resampling rollouts: {info.get('already_done', 0)} found in {Path(info.get('store', '')).name} "
                f"under the same settings, {info.get('generated', 0)} generated")


def _resilience_settings(run: _Run) -> dict | None:
    importance = run.analysis.importance
    run.targets = _top_sentences(importance, run.options["resilience_top"]) if importance is not None else []
    if not run.targets:
        run.notes["importance"] = run.notes.get("importance", "") + (
            " Resilience was asked for, but no sentence has a counterfactual importance to pick the top ones by "
            "(no answered rollouts): nothing measured.").lstrip()
        return None
    return run.sampling_key() | {"sentences": run.targets, "max_iterations": run.options["resilience_iterations"]}


def _resilience_compute(run: _Run, path: Path) -> None:
    o = run.options
    _resilience(run.sampling, run.trace, path, run.targets, run.answer, o["n_rollouts"], o["rollout_max_tokens"],
                o["temperature"], o["top_p"], o["extractor"], o["answer_equivalence"], o["resilience_iterations"],
                run.progress)


def _resilience_read(path: Path, analysis: Analysis) -> None:
    from anchorlens.branches import ResilienceResult

    analysis.resilience = ResilienceResult.load(path)


def _resilience_after(run: _Run) -> None:
    if not run.targets:
        return
    info = run.analysis.resilience.run_info
    if run.analysis.steps["resilience"] != "reused" and info:
        run.say(f"resilience completions: {info.get('chain_reused', 0) + info.get('plain_reused', 0)} found in "
                f"{Path(info.get('store', '')).name}, {info.get('generated', 0)} generated")
    run.notes["importance"] = run.notes.get("importance", "") + (
        f" Resilience (Thought Branches) of sentences {run.targets}, the top {len(run.targets)} by "
        "counterfactual_importance_kl: each of n_rollouts chains removes the sentence, continues, and follows "
        "its content wherever it comes back (cosine >= 0.6), up to "
        f"{run.options['resilience_iterations']} iterations; Counterfactual++ is accuracy kept minus accuracy when "
        "the content was finally abandoned (the opposite sign of counterfactual importance).").lstrip()


def _attribution_settings(run: _Run) -> dict:
    return {"transcoders": run.transcoders.scan, "max_feature_nodes": run.options["attribution_features"],
            "answer_position": run.analysis.answer_position}


def _attribution_after(run: _Run) -> None:
    run.notes["attribution"] = _attribution_note(run.analysis.attribution_info)


STEP_TABLE: tuple[Step, ...] = (
    Step("categories", CATEGORIES_FILE, lambda run: {"classifier": _classifier_version()}, _categories_compute,
         _categories_read),
    Step("receivers", RECEIVERS_FILE,
         lambda run: {"heads": run.options["top_k_heads"], "proximity_ignore": PROXIMITY_IGNORE},
         lambda run, path: _receivers(run.model, run.trace, path, run.options["top_k_heads"], run.progress),
         lambda path, analysis: _read_receivers(path, analysis), _receivers_after),
    Step("suppression", SUPPRESSION_FILE, _suppression_settings,
         lambda run, path: save_arrays(path, {"kl": _suppression_kl(run.model, run.trace, run.progress)}),
         _suppression_read),
    Step("resampling", IMPORTANCE_FILE, _resampling_settings, _resampling_compute, _importance_read,
         _resampling_after),
    Step("resilience", RESILIENCE_FILE, _resilience_settings, _resilience_compute, _resilience_read,
         _resilience_after),
    Step("flow", FLOW_FILE, lambda run: {"distance": "l2", "answer_position": run.analysis.answer_position},
         lambda run, path: _flow(run.model, run.trace, path, run.analysis.answer_position, run.progress),
         lambda path, analysis: _read_flow(path, analysis)),
    Step("attribution", ATTRIBUTION_FILE, _attribution_settings,
         lambda run, path: _attribution(run.model, run.transcoders, run.trace, path, run.analysis.answer_position,
                                        run.options["attribution_features"], run.progress),
         lambda path, analysis: _read_attribution(path, analysis), _attribution_after),
)
STEP_FILES = {"trace": TRACE_FILE} | {spec.name: spec.file for spec in STEP_TABLE}
