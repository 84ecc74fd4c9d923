"""``Analysis``: what ``analyze`` computed, as the methods' own results, and the report's data derived from them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from anchorlens import step_keys
from anchorlens.errors import OptionError
from anchorlens.pipeline.steps import STEP_TABLE, TRACE_FILE
from anchorlens.results import Result, expect_kind
from anchorlens.stats import renamed_arguments
from anchorlens.trace import Trace
from anchorlens.views import VIEW_COLUMNS, suppression_summaries, view_correlations

if TYPE_CHECKING:
    from anchorlens.attribution.sentences import SentenceAttribution
    from anchorlens.branches import ResilienceResult
    from anchorlens.flow.sentences import SentenceFlow
    from anchorlens.receivers.heads import ReceiverHeads
    from anchorlens.report import ReportData
    from anchorlens.resampling.metrics import ImportanceResult
    from anchorlens.suppression.result import SuppressionMatrix

# what analyze's table takes from the resilience step (per sentence; NaN for sentences it did not measure)
RESILIENCE_COLUMNS = ("resilience", "resilience_ci_low", "resilience_ci_high", "abandonment_rate",
                      "counterfactual_pp_accuracy", "counterfactual_pp_accuracy_ci_low",
                      "counterfactual_pp_accuracy_ci_high", "counterfactual_pp_kl")


@dataclass
class Analysis(Result):
    """Everything ``analyze`` computed, each method's own result; ``report_path`` is the page to open.

    Each result field is None when its step was not run: ``categories`` (one taxonomy label per sentence),
    ``receivers`` (``ReceiverHeads`` of this trace, with the top head's sentence attention), ``suppression``
    (``SuppressionMatrix``), ``importance`` (``ImportanceResult``), ``resilience`` (``ResilienceResult`` of the top
    sentences only), ``flow`` (``SentenceFlow`` into the answer token), ``attribution`` (``SentenceAttribution``
    of the answer token's logit). ``steps`` says, per step, whether this run computed, reused or recomputed it (and
    why); ``keys`` holds the key each saved result was made under (model, trace, settings). ``answer_position`` is
    the trace position of the answer token that flow and attribution explain (predicted at the position before).
    """

    trace: Trace
    out_dir: Path
    report_path: Path
    answer: str | None = None
    categories: list[str] | None = None
    receivers: ReceiverHeads | None = None
    suppression: SuppressionMatrix | None = None
    importance: ImportanceResult | None = None
    resilience: ResilienceResult | None = None
    flow: SentenceFlow | None = None
    attribution: SentenceAttribution | None = None
    answer_position: int | None = None
    steps: dict[str, str] = field(default_factory=dict)  # step -> "computed" / "reused" / "recomputed (...)"
    keys: dict[str, dict] = field(default_factory=dict)  # step -> the key its saved result was made under
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step in this run (resumed: short)

    # ---- shortcuts to the numbers the table and the report show (each read from its result) -----------------

    @property
    def receiver_heads(self) -> list[tuple[int, int]]:
        """The receiver heads, best first (empty when the trace is too short, or the step was not run)."""
        return [] if self.receivers is None else list(self.receivers.heads)

    @property
    def receiver_kurtosis(self) -> torch.Tensor | None:
        return self.receivers.kurtosis if self.receiver_heads else None

    @property
    def receiver_scores(self) -> torch.Tensor | None:
        return self.receivers.scores(0) if self.receiver_heads else None

    @property
    def head_attention(self) -> torch.Tensor | None:
        """Sentence attention of the top receiver head."""
        return self.receivers.head_attention[0] if self.receiver_heads else None

    @property
    def suppression_kl(self) -> torch.Tensor | None:
        return None if self.suppression is None else self.suppression.kl

    @property
    def flow_to_answer(self) -> torch.Tensor | None:
        return None if self.flow is None else self.flow.to_answer

    @property
    def flow_matrix(self) -> torch.Tensor | None:
        return None if self.flow is None else self.flow.matrix

    @property
    def attribution_to_answer(self) -> torch.Tensor | None:
        """Paths that start at each sentence's token embeddings, each counted once."""
        return None if self.attribution is None else self.attribution.token_influence

    @property
    def attribution_features(self) -> torch.Tensor | None:
        """The features at each sentence's positions (their influence includes what flows into them earlier)."""
        return None if self.attribution is None else self.attribution.feature_influence

    @property
    def attribution_graph(self):
        return None if self.attribution is None else self.attribution.graph

    @property
    def attribution_info(self) -> dict:
        return {} if self.attribution is None else self.attribution.info

    # ---- the Result protocol ------------------------------------------------------------------------------------

    @classmethod
    def load(cls, out_dir: str | Path) -> "Analysis":
        """What ``analyze`` (or ``anchorlens analyze``) saved in ``out_dir``, without a model: each analysis that
        was run and saved for the folder's trace (results left from another trace are not read, nor are files
        of an older layout: ``analyze`` recomputes those)."""
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
            if key.get("format") != spec.format:
                warnings.warn(f"{path.name} was saved by an older anchorlens in another layout: not read; run "
                              "analyze on this folder again to recompute it", stacklevel=2)
                continue
            analysis.keys[spec.name] = key
            setattr(analysis, spec.attribute, spec.read(path))
        position = [k.get("answer_position") for k in analysis.keys.values() if k.get("answer_position") is not None]
        analysis.answer_position = position[0] if position else None
        answers = [k["answer"] for k in analysis.keys.values() if "answer" in k]
        analysis.answer = answers[0] if answers else None
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

    def report_data(self, notes: dict[str, str] | None = None) -> ReportData:
        """The report's data, derived from the results (``build_report(folder, analysis.report_data())``)."""
        from anchorlens.report import ReportData

        metrics = self.to_dataframe().drop(columns=["sentence", "text", "category"], errors="ignore")
        heads = self.receiver_heads
        return ReportData(
            self.trace,
            title="Thought anchors",
            model_name=self.trace.model_name,
            problem=self.trace.metadata.get("problem"),
            answer=self.answer,
            metrics=metrics if len(metrics.columns) else None,
            categories=self.categories,
            suppression_kl=_numpy(self.suppression_kl),
            counterfactual_matrix=_numpy(getattr(self.importance, "counterfactual_matrix", None)),
            receiver_kurtosis=_numpy(self.receiver_kurtosis),
            receiver_heads=heads or None,
            head_attention=_numpy(self.head_attention),
            head_attention_head=heads[0] if heads else None,
            receiver_scores=_numpy(self.receiver_scores),
            flow_matrix=_numpy(self.flow_matrix),
            attribution_graph=self.attribution_graph,
            notes=notes or {},
        )

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

    @renamed_arguments()
    def view_correlations(self, n_bootstrap: int = 2000, seed: int = 0):
        """Spearman rank correlations over sentences between the views that were computed, one row per pair, with
        95% bootstrap intervals over sentences (``anchorlens.views.view_correlations``)."""
        return view_correlations(self.to_dataframe(), VIEW_COLUMNS, n_bootstrap=n_bootstrap, seed=seed)


def _numpy(value):
    if value is None:
        return None
    return value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else value
