"""``Study``: the results of many traces together, as the paper reports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from anchorlens.stats import LEVEL, renamed_arguments
from anchorlens.io import load_arrays, save_arrays
from anchorlens.receivers.scores import Head
from anchorlens.study import aggregate, categories
from anchorlens.views import VIEW_COLUMNS, view_correlations
from anchorlens.results import Result, expect_kind

# The importance metrics correlated with the views by default (the accuracy-based and KL-based ones).
IMPORTANCE_METRICS = ["resampling_importance_accuracy", "resampling_importance_kl", "counterfactual_importance_accuracy",
                      "counterfactual_importance_kl", "forced_importance_accuracy", "forced_importance_kl"]
# Columns of ``sentences`` that are not metrics (never averaged by category nor correlated).
NOT_METRICS = {"trace", "sentence", "position", "text", "category", "classifier_category", "function_tags", "depends_on",
               "summary", "chunk_idx"}


@dataclass
class Study(Result):
    """Per-trace results of one white-box model over many traces, and the statistics over traces.

    Attributes:
        traces: the names of the complete traces, in study order (their folders under ``out_dir/traces``).
        kurtosis: ``[trace, layer, head]`` kurtosis of each head's vertical scores per trace (NaN where undefined:
            layer 0, a trace too short). Empty (``[trace, 0, 0]``) without the receivers view.
        receiver_heads: the ``top_k`` heads by mean kurtosis over traces, layer 0 excluded (docs/methods.md 1.5).
        reliability: Pearson r between the heads' mean kurtosis over the even- and over the odd-numbered traces
            (layers 1 and up); ``reliability_ci``: its 95% interval over traces (jackknife of Fisher's z, each
            half's traces left out one at a time; ``aggregate.reliability_interval``).
        sentences: one row per sentence of every trace: ``trace``, ``sentence``, ``text``, ``category``, the
            importance columns, ``receiver_score`` (mean vertical score over the study's receiver heads) and the
            other views' values. With published importance, ``category`` is the first published tag and
            ``classifier_category`` the shipped classifier's (when the categories view ran).
        missing: traces of the study without complete results, and why (another shard's, not run yet, too long).
        importance_columns: the importance metrics in ``sentences``.
        base_kurtosis: with a base model, its ``[trace, layer, head]`` kurtosis on the same traces (the traces
            complete for both), ``base_traces`` their names.
    """

    traces: list[str]
    kurtosis: Float[Tensor, "trace layer head"]
    receiver_heads: list[Head]
    reliability: float
    reliability_ci: tuple[float, float]
    sentences: pd.DataFrame
    missing: dict[str, str] = field(default_factory=dict)
    importance_columns: list[str] = field(default_factory=list)
    top_k: int = 20
    model_name: str | None = None
    base_model_name: str | None = None
    base_kurtosis: Tensor | None = None
    base_traces: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        missing = f", {len(self.missing)} missing" if self.missing else ""
        heads = ", ".join(f"L{l}H{h}" for l, h in self.receiver_heads[:3])
        receivers = (f", receiver heads {heads}{'...' if len(self.receiver_heads) > 3 else ''}, reliability "
                     f"{self.reliability:.2f} [{self.reliability_ci[0]:.2f}, {self.reliability_ci[1]:.2f}]"
                     if self.receiver_heads else "")
        return (f"Study({len(self.traces)} traces{missing}, {len(self.sentences)} sentences, "
                f"model={self.model_name!r}{receivers})")

    # ------------------------------------------------------------------ tables

    @property
    def mean_kurtosis(self) -> Float[Tensor, "layer head"]:
        """Each head's mean kurtosis over the traces (layer 0: NaN)."""
        return aggregate.mean_kurtosis(self.kurtosis)

    def to_dataframe(self) -> pd.DataFrame:
        """The sentences table: one row per sentence of every complete trace."""
        return self.sentences.copy()

    def heads_dataframe(self) -> pd.DataFrame:
        """One row per head: its mean kurtosis over all, the even- and the odd-numbered traces, whether it is a
        receiver head (and its rank), and the base model's mean kurtosis when there is one."""
        n_layers, n_heads = self.kurtosis.shape[1:]
        values = self.kurtosis.double().numpy()
        even, odd = aggregate._half_means(values, 0)
        rank = {head: i for i, head in enumerate(self.receiver_heads)}
        frame = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers),
                              "mean_kurtosis": self.mean_kurtosis.numpy().ravel(), "even_traces": even, "odd_traces": odd})
        frame.loc[frame.layer == 0, ["even_traces", "odd_traces"]] = np.nan
        frame["receiver_rank"] = [rank.get((l, h)) for l, h in zip(frame.layer, frame["head"])]
        if self.base_kurtosis is not None and tuple(self.base_kurtosis.shape[1:]) == (n_layers, n_heads):
            frame["base_mean_kurtosis"] = aggregate.mean_kurtosis(self.base_kurtosis).numpy().ravel()
        return frame

    def metric_columns(self) -> list[str]:
        """The numeric per-sentence metrics of ``sentences`` (views and importance, no interval bounds)."""
        numeric = self.sentences.select_dtypes(include="number").columns
        return [c for c in numeric if c not in NOT_METRICS and not c.endswith(("_ci_low", "_ci_high"))
                and not c.startswith("n_")]

    @renamed_arguments()
    def by_category(self, metrics: list[str] | None = None, *, convergence: bool | None = None, run_length: int = 4,
                    high: float = 0.99, low: float = 0.01, clip: bool = True, weighting: str = "trace",
                    min_sentences: int = 3, min_traces: int = 3, debias: str | None = None, degree: int = 10,
                    figure_excludes=categories.FIGURE_EXCLUDES, n_bootstrap: int = 2000, level: float = LEVEL,
                    seed: int = 0) -> pd.DataFrame:
        """One row per category, computed as the Thought Anchors figure computes it (``anchorlens.study.categories``
        says each step; docs/methods.md, "Studies: importance by category").

        Defaults are the reference's: the convergence filter (first run of ``run_length`` sentences with accuracy
        all above ``high`` or all below ``low``: it and everything after it dropped; ``convergence=None`` applies it
        when the study has an ``accuracy`` column), importance metrics clipped at zero (``clip``), each trace's mean
        per category then the mean over traces (``weighting="trace"``; ``"sentence"``: pooled over sentences),
        categories with at least ``min_sentences`` sentences and metrics with at least ``min_traces`` traces.
        ``debias="polynomial"`` subtracts a degree-``degree`` polynomial fit of each metric on normalised position
        first. Rows: ``category``, ``n_sentences``, ``n_traces``, ``position`` (mean normalised position) and
        ``position_se``, each metric with ``<metric>_se`` (standard error over traces, or sentences),
        ``<metric>_ci_low`` / ``_ci_high`` (percentile bootstrap over whole traces) and ``<metric>_n_traces``;
        ``shown``: whether the paper's figure shows it (not in ``figure_excludes``). ``table.attrs["definition"]``
        records every option.

        The pooled mean over every sentence with no filter (the earlier default):
        ``by_category(convergence=False, clip=False, weighting="sentence", min_sentences=1, min_traces=1)``.
        """
        metrics = list(metrics or self.metric_columns())
        frame, convergence = self._prepared(metrics, convergence, run_length=run_length, high=high, low=low,
                                            clip=clip, debias=debias, degree=degree)
        table = categories.category_table(frame, metrics, weighting=weighting, min_sentences=min_sentences,
                                          min_traces=min_traces, figure_excludes=figure_excludes,
                                          n_bootstrap=n_bootstrap, level=level, seed=seed)
        table.attrs["definition"] = dict(
            convergence=convergence, run_length=run_length, high=high, low=low, clip=clip, weighting=weighting,
            min_sentences=min_sentences, min_traces=min_traces, debias=debias, degree=degree if debias else None,
            figure_excludes=list(figure_excludes or ()), n_bootstrap=n_bootstrap, level=level, seed=seed,
            n_sentences_kept=len(frame), n_sentences=len(self.sentences))
        return table

    def _prepared(self, metrics: list[str], convergence: bool | None, **options) -> tuple[pd.DataFrame, bool]:
        """The sentences ``by_category`` averages (``categories.prepare``), and whether the filter applied."""
        from anchorlens.study.discovery import StudyInputError

        if "category" not in self.sentences:
            raise StudyInputError("the study has no categories: run it with the categories view or published importance")
        unknown = [m for m in metrics if m not in self.sentences]
        if unknown:
            raise StudyInputError(f"no column {', '.join(map(repr, unknown))} in the study's sentences: choose from "
                                  f"{', '.join(self.metric_columns())}")
        has_accuracy = "accuracy" in self.sentences and self.sentences["accuracy"].notna().any()
        if convergence is None:
            convergence = bool(has_accuracy)
        elif convergence and not has_accuracy:
            raise StudyInputError("the convergence filter reads each sentence's rollout accuracy, which this study "
                                  "has not: use published or rollout importance, or convergence=False")
        return categories.prepare(self.sentences, metrics, convergence=convergence, **options), convergence

    @renamed_arguments()
    def category_differences(self, metric: str | None = None, which=None, *, convergence: bool | None = None,
                             clip: bool = True, debias: str | None = None, degree: int = 10,
                             weighting: str = "trace", min_sentences: int = 3, n_bootstrap: int = 2000,
                             level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
        """Every pair of categories (``which``; default: those the paper's figure shows, with at least
        ``min_sentences`` sentences): the difference of their ``metric`` means as ``by_category`` computes them,
        a percentile bootstrap interval over traces (both means on the same draws) and ``excludes_zero``."""
        metric = metric or self.default_metric()
        frame, _ = self._prepared([metric], convergence, clip=clip, debias=debias, degree=degree)
        if which is None:
            sizes = frame.groupby("category").size()
            which = [c for c in sizes[sizes >= min_sentences].index if c not in categories.FIGURE_EXCLUDES]
        return categories.category_differences(frame, metric, which, weighting=weighting, n_bootstrap=n_bootstrap,
                                               level=level, seed=seed)

    def plot_categories(self, metric: str | None = None, ax=None, **options):
        """The paper's figure: each shown category's mean ``metric`` against its mean normalised position, error
        bars one standard error over traces, marker area by number of traces (``options`` go to ``by_category``)."""
        from anchorlens.study.plots import plot_category_effects

        return plot_category_effects(self, metric or self.default_metric(), ax=ax, **options)

    def default_metric(self) -> str | None:
        """The metric the figures show by default: counterfactual KL importance, else the first there is."""
        return next((c for c in ("counterfactual_importance_kl", "resampling_importance_accuracy", "receiver_score")
                     if c in self.sentences), None)

    def explain(self, metric: str | None = None, predictors=None, **options):
        """How much of ``metric``'s variance position, indecision, category, length and the views explain, alone and
        together, within traces, with intervals over traces (``anchorlens.study.explain.explain_importance``)."""
        from anchorlens.study.explain import explain_importance

        return explain_importance(self.sentences, metric or self.default_metric(), predictors=predictors, **options)

    @renamed_arguments()
    def view_correlations(self, columns: list[str] | None = None, n_bootstrap: int = 2000,
                          seed: int = 0) -> pd.DataFrame:
        """Spearman rank correlations between the views and the importance metrics: pooled over all sentences
        (``scope = "pooled"``) and per trace (``scope`` = the trace's name), each with a 95% bootstrap interval
        over its sentences (``anchorlens.views.view_correlations``). The pooled interval treats sentences as
        independent; the spread of the per-trace rows shows how much traces differ."""
        importance = [c for c in IMPORTANCE_METRICS if c in self.importance_columns]
        views = [c for c in VIEW_COLUMNS if c in self.sentences and c not in importance]
        if columns is None:
            columns = views + importance
        pooled = view_correlations(self.sentences, columns, n_bootstrap=n_bootstrap, seed=seed).assign(scope="pooled")
        parts = [pooled]
        for name, frame in self.sentences.groupby("trace", sort=False):
            parts.append(view_correlations(frame, columns, n_bootstrap=n_bootstrap, seed=seed).assign(scope=name))
        out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else pooled
        if views and importance and columns == views + importance:  # views against importance, not metric vs metric
            out = out[out.view_a.isin(views) | out.view_b.isin(views)].reset_index(drop=True)
        return out[["scope", "view_a", "view_b", "spearman", "ci_low", "ci_high", "n"]]

    def base_comparison(self, threshold: float | None = None) -> dict:
        """Reasoning vs base model on the same traces (``aggregate.compare_kurtosis``); needs a base model."""
        if self.base_kurtosis is None:
            from anchorlens.study.discovery import StudyInputError

            raise StudyInputError("the study has no base model: pass base_model=... (anchorlens study --base-model)")
        index = [self.traces.index(name) for name in self.base_traces]
        return aggregate.compare_kurtosis(self.kurtosis[index], self.base_kurtosis, threshold,
                                          (self.model_name or "model", self.base_model_name or "base"))

    # ------------------------------------------------------------------ figures

    def plot(self, metric: str | None = None):
        """The paper's figures in one figure: mean kurtosis by layer and head (receiver heads outlined), the
        split-half scatter, ``metric`` by category with intervals, pooled view correlations, and reasoning vs
        base kurtosis when there is a base model."""
        from anchorlens.study.plots import plot_study

        return plot_study(self, metric=metric)

    def write_page(self, folder: str | Path | None = None) -> Path:
        """``study.html`` in ``folder`` (default: the study's folder): the figures and tables, and a link to each
        trace's own report."""
        from anchorlens.study.page import write_study_page

        return write_study_page(self, folder or self.settings["out_dir"])

    # ------------------------------------------------------------------ I/O

    def save(self, folder: str | Path) -> Path:
        """Write ``study.npz`` (arrays and settings) and ``study_sentences.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"kurtosis": self.kurtosis}
        if self.base_kurtosis is not None:
            arrays["base_kurtosis"] = self.base_kurtosis
        meta = {"traces": self.traces, "receiver_heads": [list(h) for h in self.receiver_heads],
                "reliability": self.reliability, "reliability_ci": list(self.reliability_ci), "missing": self.missing,
                "importance_columns": self.importance_columns, "top_k": self.top_k, "model_name": self.model_name,
                "base_model_name": self.base_model_name, "base_traces": self.base_traces, "settings": self.settings}
        save_arrays(folder / "study.npz", arrays, meta, kind="Study")
        tmp = folder / "study_sentences.json.tmp"
        tmp.write_text(self.sentences.to_json(orient="split", index=False, force_ascii=False))
        tmp.replace(folder / "study_sentences.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Study":
        folder = Path(folder)
        expect_kind(folder, cls)  # e.g. an analysis's folder, or one result's file
        arrays, meta = load_arrays(folder / "study.npz", kind="Study")
        sentences = pd.read_json(folder / "study_sentences.json", orient="split", dtype=False)
        return cls(traces=meta["traces"], kurtosis=arrays["kurtosis"],
                   receiver_heads=[tuple(h) for h in meta["receiver_heads"]], reliability=meta["reliability"],
                   reliability_ci=tuple(meta["reliability_ci"]), sentences=sentences, missing=meta["missing"],
                   importance_columns=meta["importance_columns"], top_k=meta["top_k"], model_name=meta["model_name"],
                   base_model_name=meta["base_model_name"], base_kurtosis=arrays.get("base_kurtosis"),
                   base_traces=meta["base_traces"], settings=meta["settings"])
