"""The report's static figures with matplotlib: per-sentence importance bars and the heatmaps.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend needed), so
they render the same in a test, a server or a notebook.

>>> fig = importance_figure(data)                  # doctest: +SKIP
>>> fig.savefig("importance.png")                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from anchorlens.report.categories import CATEGORIES, CATEGORY_COLORS, UNLABELLED_COLOR
from anchorlens.report.errors import ReportDataError
from anchorlens.report.display_math import color_range, suppression_for_display

if TYPE_CHECKING:  # for the annotations only: data.py imports this module to plot itself
    from anchorlens.report.data import ReportData


def _colors(data: ReportData) -> list[str]:
    categories = data.categories or [None] * data.n_sentences
    return [CATEGORY_COLORS[c] if c else UNLABELLED_COLOR for c in categories]


def importance_axes(data: ReportData, metric: str | None = None, ax=None):
    """Draw one metric per sentence as bars coloured by category on ``ax`` (a new figure if None)."""
    table = data.metric_table()
    if not table:
        raise ReportDataError("this report has no per-sentence metrics to plot: pass `metrics` or `receiver_scores`")
    metric = metric or data.default_metric()
    if metric not in table:
        raise ReportDataError(f"unknown metric {metric!r}; choose one of {list(table)}")
    if ax is None:
        ax = Figure(figsize=(max(6.0, min(18.0, 0.06 * data.n_sentences + 4)), 2.6), layout="constrained").subplots()
    values = np.nan_to_num(table[metric], nan=0.0)
    ax.bar(np.arange(data.n_sentences), values, width=0.85, color=_colors(data), linewidth=0)
    interval = data.interval_table().get(metric)
    if interval is not None:  # 95% intervals as error bars
        low, high = interval
        shown = np.isfinite(low) & np.isfinite(high)
        x = np.arange(data.n_sentences)[shown]
        ax.vlines(x, low[shown], high[shown], color="#1f2a3c", linewidth=0.8)
    ax.axhline(0, color="#444444", linewidth=0.6)
    ax.set_xlim(-0.6, data.n_sentences - 0.4)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def importance_figure(data: ReportData) -> Figure:
    """Every metric per sentence, one row each, with the category legend."""
    names = data.metric_names()
    if not names:
        raise ReportDataError("this report has no per-sentence metrics to plot: pass `metrics` or `receiver_scores`")
    width = max(7.0, min(18.0, 0.06 * data.n_sentences + 5))
    fig = Figure(figsize=(width, 1.5 * len(names) + 1.0), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        importance_axes(data, name, ax=ax)
        ax.set_ylabel("")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1].set_xlabel("sentence")
    used = [c for c in CATEGORIES if data.categories and c in data.categories]
    if used:
        fig.legend(
            handles=[Patch(color=CATEGORY_COLORS[c], label=c.replace("_", " ")) for c in used],
            loc="outside upper center",
            ncol=min(4, len(used)),
            fontsize=8,
            frameon=False,
        )
    return fig


def heatmap_figure(
    matrix: np.ndarray,
    title: str,
    xlabel: str,
    ylabel: str,
    kind: str = "sequential",
    value_label: str = "",
    highlight: list[tuple[int, int]] | None = None,
) -> Figure:
    """One heatmap with a colour bar; ``highlight`` outlines cells (e.g. receiver heads, the top in red)."""
    matrix = np.asarray(matrix, dtype=float)
    vmin, vmax = color_range(matrix, kind)
    rows, cols = matrix.shape
    aspect = cols / rows
    size = (min(9.0, max(4.0, 5.0 * aspect + 1.5)), min(9.0, max(3.5, 5.0 / max(aspect, 0.6))))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["RdBu_r" if kind == "diverging" else "viridis"].with_extremes(bad="#f3f4f6")  # NaN: blank
    image = ax.imshow(
        np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto"
    )
    fig.colorbar(image, ax=ax, label=value_label, shrink=0.85)
    for rank, (r, c) in enumerate(highlight or []):
        top = rank == 0
        outline = Rectangle(
            (c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#ff2d55" if top else "white", linewidth=2 if top else 1
        )
        ax.add_patch(outline)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig


def report_figures(data: ReportData) -> dict[str, Figure]:
    """Every figure the data allows, by file stem (``importance``, ``receiver_kurtosis``, ...)."""
    figures: dict[str, Figure] = {}
    if data.metric_names():
        figures["importance"] = importance_figure(data)
    if data.receiver_kurtosis is not None:
        figures["receiver_kurtosis"] = heatmap_figure(
            data.receiver_kurtosis, "Kurtosis of vertical attention scores per head", "head", "layer",
            value_label="kurtosis", highlight=data.receiver_heads,
        )
    if data.head_attention is not None:
        attention = np.array(data.head_attention, dtype=float)
        attention[np.triu_indices_from(attention, k=1)] = np.nan
        head = data.head_attention_head
        name = f"head L{head[0]}H{head[1]}" if head is not None else "a receiver head"
        figures["head_attention"] = heatmap_figure(
            attention, f"Sentence attention of {name}", "key sentence", "query sentence", value_label="mean attention"
        )
    if data.suppression_kl is not None:
        figures["suppression"] = heatmap_figure(
            suppression_for_display(data.suppression_kl), "Attention suppression (log KL, row mean subtracted)",
            "suppressed sentence j", "target sentence i", kind="diverging", value_label="log(KL) - row mean",
        )
    if data.counterfactual_matrix is not None:
        matrix = np.array(data.counterfactual_matrix, dtype=float)
        matrix[np.tril_indices_from(matrix, k=0)] = np.nan
        figures["counterfactual"] = heatmap_figure(
            matrix, "Counterfactual sentence-to-sentence importance", "later sentence j", "resampled sentence i",
            kind="diverging", value_label="M[i, j]",
        )
    if data.flow_matrix is not None:
        flow = np.array(data.flow_matrix, dtype=float)
        flow[np.triu_indices_from(flow, k=1)] = np.nan
        figures["flow"] = heatmap_figure(
            flow, "Information flow between sentences", "source sentence", "target sentence", value_label="mean flow"
        )
    return figures
