"""``analyze``: one call from a problem (or an existing chain of thought) to a report, all three ways.

Steps, each saved into the output folder as it finishes so that a killed run resumes where it stopped:

1. the trace (generated, or read) -> ``trace.json``;
2. sentence categories (the shipped taxonomy classifier);
3. receiver heads: sentence attention of every head, kurtosis, top heads, receiver scores -> ``receivers.npz``;
4. attention suppression: the sentence-to-sentence KL matrix -> ``suppression.npz``;
5. resampling importance: rollouts in ``rollouts.sqlite`` (resumable), metrics -> ``importance.npz``;
5b. information flow (L2 routes, Ferrando and Voita 2024) aggregated to sentences -> ``flow.npz``;
5c. only with ``transcoders``: the final answer's logit attributed back to sentences through an attribution
    graph (circuit tracing) -> ``attribution.npz`` (per sentence) and ``attribution_graph.npz`` (pruned graph);
6. the report: ``report.html``, ``report.json``, PNGs; and ``sentences.csv`` with every per-sentence number.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anchorlens.errors import DegenerateTraceError
from anchorlens.generation import generate_trace
from anchorlens.io import load_arrays, save_arrays
from anchorlens.receivers.scores import PROXIMITY_IGNORE
from anchorlens.trace import Trace, degenerate_reason
from anchorlens.versions import version_report

log = logging.getLogger(__name__)

RECEIVERS_FILE, SUPPRESSION_FILE, IMPORTANCE_FILE = "receivers.npz", "suppression.npz", "importance.npz"
FLOW_FILE = "flow.npz"
ATTRIBUTION_FILE, ATTRIBUTION_GRAPH_FILE = "attribution.npz", "attribution_graph.npz"
# the per-sentence views compared by rank correlation (Analysis.view_correlations)
VIEW_COLUMNS = ["receiver_score", "suppression_out_kl", "flow_to_answer", "attribution_to_answer",
                "resampling_importance_accuracy", "counterfactual_importance_kl"]


@dataclass
class Analysis:
    """Everything ``analyze`` computed; ``report_path`` is the page to open."""

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
    flow_to_answer: torch.Tensor | None = None  # information flow: how much each sentence feeds the last token
    flow_matrix: torch.Tensor | None = None  # information flow [target sentence, source sentence]
    attribution_to_answer: torch.Tensor | None = None  # attribution graph: each sentence's influence on the answer
    attribution_graph: object | None = None  # the pruned AttributionGraph behind it
    attribution_info: dict = field(default_factory=dict)  # answer token and position, features kept, scores
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step in this run (resumed: short)

    @classmethod
    def load(cls, out_dir: str | Path) -> "Analysis":
        """What ``analyze`` (or ``anchorlens analyze``) saved in ``out_dir``, without a model: each analysis that
        was run and saved for the folder's trace."""
        from anchorlens.resampling.metrics import ImportanceResult

        out = Path(out_dir)
        if not (out / "trace.json").exists():
            raise FileNotFoundError(f"{out} has no trace.json: pass a folder that analyze wrote")
        trace = Trace.load(out / "trace.json")
        analysis = cls(trace=trace, out_dir=out, report_path=out / "report.html")
        if (out / "sentences.csv").exists():
            import pandas as pd

            frame = pd.read_csv(out / "sentences.csv")
            if "category" in frame:
                analysis.categories = frame["category"].tolist()
        if (saved := _fresh(out / RECEIVERS_FILE, trace)) is not None:
            _read_receivers(saved, analysis)
        if (saved := _fresh(out / SUPPRESSION_FILE, trace)) is not None:
            analysis.suppression_kl = saved["kl"]
        if (saved := _fresh(out / FLOW_FILE, trace)) is not None:
            analysis.flow_to_answer, analysis.flow_matrix = saved["to_answer"], saved["matrix"]
        if (saved := _fresh(out / ATTRIBUTION_FILE, trace)) is not None and (out / ATTRIBUTION_GRAPH_FILE).exists():
            _read_attribution(saved, out, analysis)
        if (out / IMPORTANCE_FILE).exists():
            importance = ImportanceResult.load(out / IMPORTANCE_FILE)
            if list(importance.sentences) == trace.sentence_texts():  # not one left from another trace
                analysis.importance = importance
        return analysis

    def to_dataframe(self):
        """One row per sentence: text, category, receiver score, suppression summaries, resampling metrics."""
        import pandas as pd

        frame = pd.DataFrame({"sentence": range(self.trace.n_sentences), "text": self.trace.sentence_texts()})
        if self.categories is not None:
            frame["category"] = self.categories
        if self.receiver_scores is not None:
            frame["receiver_score"] = self.receiver_scores.numpy()
        if self.suppression_kl is not None:
            kl = self.suppression_kl.nan_to_num(0.0)
            frame["suppression_out_kl"] = kl.sum(0).numpy()  # how much later sentences depend on it
            frame["suppression_in_kl"] = kl.sum(1).numpy()  # how much it depends on earlier ones
        if self.flow_to_answer is not None:
            frame["flow_to_answer"] = self.flow_to_answer.numpy()
        if self.attribution_to_answer is not None:
            frame["attribution_to_answer"] = self.attribution_to_answer.numpy()
        if self.importance is not None:
            importance = self.importance.to_dataframe().drop(columns=["chunk", "chunk_idx"], errors="ignore")
            frame = pd.concat([frame, importance.reset_index(drop=True)], axis=1)
        return frame

    def view_correlations(self):
        """Spearman rank correlations over sentences between the views that were computed (receiver score,
        suppression out-KL, information flow to the answer, resampling and counterfactual importance)."""
        from anchorlens.tracing.flow_sentences import rank_correlations

        return rank_correlations(self.to_dataframe(), VIEW_COLUMNS)


def analyze(
    model,
    out_dir: str | Path,
    *,
    problem: str | None = None,
    trace: Trace | None = None,
    reference_answer: str | None = None,
    n_rollouts: int = 8,
    rollout_max_tokens: int = 64,
    max_new_tokens: int = 200,
    top_k_heads: int = 16,
    seed: int = 0,
    style: str = "default",
    sampler=None,
    extractor: str = "boxed",
    steps: tuple[str, ...] = ("categories", "receivers", "suppression", "resampling", "flow"),
    progress: bool = True,
    transcoders=None,
    attribution_features: int = 1024,
) -> Analysis:
    """Find the thought anchors of one chain of thought three ways and write an interactive report.

    Args:
        model: a loaded ``TransformerBridge`` (``load_model(...)``).
        out_dir: the report folder; an existing one is resumed (same trace, rollouts kept).
        problem: a problem to let the model reason about; or pass ``trace``.
        trace: an existing chain of thought (``Trace.from_text(model, text, prompt=...)``).
        reference_answer: the correct answer; by default the trace's own final answer, so accuracy then
            means "agrees with the original chain of thought".
        n_rollouts: resampled continuations per sentence (100 as published; a few for a quick look).
        rollout_max_tokens: tokens per continuation.
        top_k_heads: number of receiver heads (16 and 32 in the paper's figures; 20 default there).
        sampler: where rollouts come from: None (the model itself), a ``Sampler``, or a server URL.
        extractor: how answers are read from rollouts: ``"boxed"`` (as published), ``"boxed_or_last_number"``
            (for small models that seldom write ``\\boxed{}``), or a callable ``text -> answer``.
        steps: which analyses to run.
        transcoders: a ``TranscoderSet`` or its folder (``load_transcoders``): adds the attribution step (the
            final answer's logit attributed back to sentences through an attribution graph). Off by default.
        attribution_features: at most this many feature nodes in that graph (those of largest influence).

    >>> analysis = analyze(load_model(), "report/", problem="What is 12 + 30?")   # doctest: +SKIP
    >>> analysis.report_path                                                     # doctest: +SKIP
    """
    from anchorlens.report import ReportData, build_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trace = _resume_trace(model, out, problem, trace, max_new_tokens, seed, style)
    analysis = Analysis(trace=trace, out_dir=out, report_path=out / "report.html")
    analysis.seconds["trace"] = time.perf_counter() - started
    notes: dict[str, str] = {}
    if transcoders is not None:
        steps = (*steps, "attribution") if "attribution" not in steps else steps
        if isinstance(transcoders, (str, Path)):
            from anchorlens.tracing.transcoders import load_transcoders

            transcoders = load_transcoders(transcoders)
        transcoders.check_model(model)  # a mismatch fails now, not after minutes of other steps
    elif "attribution" in steps:
        raise ValueError("the attribution step needs transcoders: pass transcoders=... (anchorlens analyze "
                         "--transcoders PATH), e.g. from anchorlens.train_transcoders or circuit-tracer's layout")
    if "resampling" in steps and not trace.prompt.strip():  # refused before minutes of other steps
        raise ValueError(
            "the chain of thought has no prompt, so rollouts would not know the problem: give the problem "
            "(anchorlens analyze --problem ..., or Trace.from_text(model, text, prompt=problem_prompt(model, "
            "problem))) or leave resampling out (--skip resampling)"
        )

    if "categories" in steps:
        from anchorlens.taxonomy import classify_sentences

        with _timed(analysis, "categories"):
            analysis.categories = list(classify_sentences(trace.sentence_texts()))
    if "receivers" in steps:
        with _timed(analysis, "receivers"):
            _receivers(model, trace, out, analysis, top_k_heads)
        if not analysis.receiver_heads:
            notes["receiver"] = notes["head_attention"] = (
                f"Too short for receiver heads: {trace.n_sentences} sentences, and a head's kurtosis needs "
                f"vertical scores of several sentences, each attended from {PROXIMITY_IGNORE} or more sentences later."
            )
    if "suppression" in steps:
        if trace.n_sentences < 2:
            notes["suppression"] = "The trace has a single sentence: nothing to suppress."
        else:
            with _timed(analysis, "suppression"):
                _suppression(model, trace, out, analysis, progress)
    answer = reference_answer if reference_answer is not None else _trace_answer(trace, extractor)
    if "resampling" in steps:
        if answer is None:
            notes["importance"] = (
                "No reference answer (the chain of thought has no \\boxed{} answer and none was given): "
                "accuracy-based columns are empty; KL-based ones still compare answer distributions."
            )
        with _timed(analysis, "resampling"):
            _resampling(model if sampler is None else sampler, trace, out, analysis, answer, n_rollouts,
                        rollout_max_tokens, extractor, progress)

    if "flow" in steps:
        with _timed(analysis, "flow"):
            _flow(model, trace, out, analysis)
    if "attribution" in steps:
        with _timed(analysis, "attribution"):
            _attribution(model, transcoders, trace, out, analysis, answer, attribution_features, progress)
        notes["attribution"] = _attribution_note(analysis.attribution_info)
    frame = analysis.to_dataframe()
    frame.to_csv(out / "sentences.csv", index=False)
    correlations = analysis.view_correlations()
    if len(correlations.columns) > 1:
        correlations.to_csv(out / "view_correlations.csv")
        pairs = [f"{a} ~ {b}: {correlations.loc[a, b]:+.2f}" for i, a in enumerate(correlations.columns)
                 for b in correlations.columns[i + 1:]]
        notes["summary"] = "Rank correlations between views (Spearman, over sentences): " + "; ".join(pairs) + "."

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


def _numpy(value):
    if value is None:
        return None
    return value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _resume_trace(model, out: Path, problem, trace, max_new_tokens, seed, style) -> Trace:
    """Reuse ``trace.json`` when it is the same problem (or trace), so stored rollouts stay valid."""
    path = out / "trace.json"
    if trace is None and path.exists():
        saved = Trace.load(path)
        if saved.metadata.get("problem") == problem and saved.model_name == getattr(model, "anchorlens_name", None):
            log.info("resuming %s", path)
            return saved
    if trace is None:
        if problem is None:
            raise ValueError("pass a problem to reason about, or an existing trace")
        trace = generate_trace(model, problem, max_new_tokens=max_new_tokens, seed=seed, style=style)
        reason = degenerate_reason(trace.cot, trace.n_sentences)
        if reason:
            raise DegenerateTraceError(
                f"the model's chain of thought is degenerate ({reason}): {trace.cot[:120]!r}. Analysing it would "
                "give meaningless results. Try another seed (--seed), more tokens (--max-new-tokens), or a larger "
                f"model; if every seed gives such text, decoding itself may be broken: {version_report()}."
            )
    else:
        reason = degenerate_reason(trace.cot)
        if reason:
            warnings.warn(f"this chain of thought looks degenerate ({reason}); its analyses may mean little")
    trace.save(path)
    return trace


def _fresh(path: Path, trace: Trace) -> dict | None:
    """Arrays saved for this very trace by an earlier run, else None."""
    if not path.exists():
        return None
    arrays, meta = load_arrays(path)
    if meta.get("token_ids") != trace.token_ids or meta.get("spans") != [list(s) for s in trace.token_spans]:
        return None
    return arrays | {"meta": meta}


def _stamp(trace: Trace) -> dict:
    return {"token_ids": trace.token_ids, "spans": [list(s) for s in trace.token_spans]}


def _receivers(model, trace, out, analysis, top_k) -> None:
    from anchorlens.receivers.attention import sentence_attention
    from anchorlens.receivers.scores import head_kurtosis, receiver_scores, top_heads, vertical_scores

    path = out / RECEIVERS_FILE
    if _fresh(path, trace) is None:
        matrix = sentence_attention(model, trace).matrix
        vertical = vertical_scores(matrix)
        kurtosis = head_kurtosis(vertical)
        finite = int(torch.isfinite(kurtosis).sum())  # a short trace leaves few or no heads with a kurtosis
        heads = top_heads(kurtosis, k=min(top_k, finite)) if finite else []
        head_matrix = matrix[heads[0][0], heads[0][1]] if heads else torch.zeros(0)
        scores = receiver_scores(vertical, heads) if heads else torch.zeros(0)
        save_arrays(path, {"kurtosis": kurtosis, "scores": scores, "head_matrix": head_matrix},
                    _stamp(trace) | {"heads": [list(h) for h in heads]})
    _read_receivers(_fresh(path, trace), analysis)


def _read_receivers(saved: dict, analysis: Analysis) -> None:
    heads = [tuple(h) for h in saved["meta"]["heads"]]
    analysis.receiver_heads = heads
    analysis.receiver_kurtosis = saved["kurtosis"] if heads else None
    analysis.receiver_scores = saved["scores"] if heads else None
    analysis.head_attention = saved["head_matrix"] if heads else None


def _suppression(model, trace, out, analysis, progress) -> None:
    from anchorlens.suppression import suppression_matrix

    path = out / SUPPRESSION_FILE
    if _fresh(path, trace) is None:
        save_arrays(path, {"kl": suppression_matrix(model, trace, progress=progress).kl}, _stamp(trace))
    analysis.suppression_kl = _fresh(path, trace)["kl"]


def _flow(model, trace, out, analysis) -> None:
    """Information flow (L2: it factors into dot products, about one forward's cost) aggregated to sentences."""
    from anchorlens.tracing.flow_sentences import sentence_flow

    path = out / FLOW_FILE
    if _fresh(path, trace) is None:
        flow = sentence_flow(model, trace, distance="l2")
        save_arrays(path, {"to_answer": flow.to_answer, "matrix": flow.matrix}, _stamp(trace))
    saved = _fresh(path, trace)
    analysis.flow_to_answer, analysis.flow_matrix = saved["to_answer"], saved["matrix"]


def _attribution(model, transcoders, trace, out, analysis, answer, max_features, progress) -> None:
    """The answer's logit (the first token of its last occurrence; else the last token) attributed to sentences."""
    from anchorlens.tracing.attribution import answer_token_position, trace_attribution

    path, graph_path = out / ATTRIBUTION_FILE, out / ATTRIBUTION_GRAPH_FILE
    settings = {"transcoders": transcoders.scan, "max_feature_nodes": max_features}
    saved = _fresh(path, trace)
    if saved is None or not graph_path.exists() or {k: saved["meta"].get(k) for k in settings} != settings:
        position = answer_token_position(model.tokenizer, trace, answer)
        if position is None:
            warnings.warn(f"the answer {answer!r} does not occur in the chain of thought: attributing the logit of "
                          "its last token instead")
            position = trace.n_tokens - 1
        graph, table = trace_attribution(model, transcoders, trace, answer_position=position,
                                         max_feature_nodes=max_features, progress=progress)
        pruned = graph.prune()
        replacement, completeness = pruned.scores()
        pruned.save(graph_path)
        info = settings | {"answer_position": position, "answer_token": table.attrs["answer_token"],
                           "answer_text": model.tokenizer.decode([table.attrs["answer_token"]]),
                           "answer_is_logit_node": bool(table.attrs["answer_is_logit_node"]),
                           "features_kept": graph.n_features, "features_dropped": len(graph.dropped_features),
                           "replacement": replacement, "completeness": completeness}
        arrays = {name: torch.tensor(table[name].to_numpy(), dtype=torch.float32)
                  for name in ("influence", "token_influence", "feature_influence")}
        save_arrays(path, arrays, _stamp(trace) | info)
        saved = _fresh(path, trace)
    _read_attribution(saved, out, analysis)


def _read_attribution(saved: dict, out: Path, analysis: Analysis) -> None:
    from anchorlens.tracing.graph import AttributionGraph

    analysis.attribution_to_answer = saved["influence"]
    analysis.attribution_info = {k: v for k, v in saved["meta"].items() if k not in ("token_ids", "spans", "kind")}
    analysis.attribution_graph = AttributionGraph.load(out / ATTRIBUTION_GRAPH_FILE)


def _attribution_note(info: dict) -> str:
    logit = ("one of the logit nodes: attribution_to_answer is each sentence's influence on its logit"
             if info["answer_is_logit_node"] else "NOT among the logit nodes (not among the model's top predictions "
             "there): attribution_to_answer is each sentence's influence on the top predictions instead")
    return (f"The logit of the answer token {info['answer_text']!r} (position {info['answer_position']}; {logit}) "
            f"through transcoders {info['transcoders']}: {info['features_kept']} feature nodes kept, "
            f"{info['features_dropped']} of smaller influence dropped (max_feature_nodes={info['max_feature_nodes']}); "
            f"pruned graph replacement score {info['replacement']:.3f}, completeness {info['completeness']:.3f}. "
            "A sentence's influence sums its token-embedding and feature nodes.")


def _trace_answer(trace: Trace, extractor) -> str | None:
    """The final answer the chain of thought itself gave (its text after ``</think>`` included)."""
    from anchorlens.answers import get_extractor

    return get_extractor(extractor)(trace.cot + trace.metadata.get("after_think", ""))


def _resampling(model_or_sampler, trace, out, analysis, answer, n_rollouts, max_tokens, extractor, progress) -> None:
    from anchorlens.resampling.runner import resampling_importance

    analysis.importance = resampling_importance(
        model_or_sampler,
        trace,
        n_rollouts=n_rollouts,
        store=out / "rollouts.sqlite",
        reference_answer=answer,
        max_tokens=max_tokens,
        extractor=extractor,
        progress=progress,
    )
    analysis.importance.save(out / IMPORTANCE_FILE)
