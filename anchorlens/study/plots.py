"""The paper's figures for a ``Study``, on one matplotlib figure (each panel also drawable alone)."""

from __future__ import annotations

import numpy as np


def plot_reliability_scatter(study, ax):
    """Each head's mean kurtosis over the even- against the odd-numbered traces (layers 1 and up)."""
    heads = study.heads_dataframe().dropna(subset=["even_traces", "odd_traces"])
    receiver = heads.receiver_rank.notna()
    ax.scatter(heads.even_traces[~receiver], heads.odd_traces[~receiver], s=8, color="tab:gray", label="other heads")
    ax.scatter(heads.even_traces[receiver], heads.odd_traces[receiver], s=14, color="tab:red", label="receiver heads")
    low, high = study.reliability_ci
    ax.set_title(f"split-half reliability r = {study.reliability:.2f} [{low:.2f}, {high:.2f}]")
    ax.set_xlabel("mean kurtosis, even-numbered traces")
    ax.set_ylabel("mean kurtosis, odd-numbered traces")
    ax.legend(fontsize=7)
    return ax


def plot_category_effects(study, metric: str, ax=None, shown_only: bool = True, **options):
    """The paper's "sentence category effect" figure: per category, the mean ``metric`` against the mean normalised
    position (``Study.by_category`` with ``options``), error bars one standard error each way, marker area by the
    number of traces; only the categories the figure shows unless ``shown_only=False``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 5))
    table = study.by_category([metric], **options)
    if shown_only and len(table):
        table = table[table.shown]
    table = table.dropna(subset=[metric])
    most = max(table.n_traces.max(), 1) if len(table) else 1
    for _, row in table.iterrows():
        ax.errorbar(row.position, row[metric], xerr=row.position_se, yerr=row[f"{metric}_se"], fmt="o",
                    markersize=4 + 10 * row.n_traces / most, capsize=3, alpha=0.8,
                    label=f"{row.category.replace('_', ' ')} ({row.n_traces} traces)")
    definition = table.attrs.get("definition", {})
    debiased = "position-debiased " if definition.get("debias") else ""
    ax.set_xlabel("mean normalised position in the trace (0-1)")
    ax.set_ylabel(f"{debiased}{metric} (mean over traces, ±1 SE)")
    ax.set_title(f"sentence category effect, {len(study.traces)} traces")
    if len(table):
        ax.legend(fontsize=7)
    return ax


def plot_correlations(study, ax):
    """Pooled Spearman correlations of each pair of views and importance metrics, with intervals."""
    table = study.view_correlations(n_bootstrap=500)
    table = table[table.scope == "pooled"]
    y = np.arange(len(table))
    errors = np.vstack([table.spearman - table.ci_low, table.ci_high - table.spearman])
    ax.barh(y, table.spearman, xerr=np.nan_to_num(errors), color="tab:green", capsize=2)
    ax.set_yticks(y, [f"{a} ~ {b}" for a, b in zip(table.view_a, table.view_b)], fontsize=6)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("Spearman over all sentences (95% interval)")
    ax.set_title("view correlations (pooled)")
    return ax


def plot_base_comparison(study, ax):
    """Distributions of the heads' mean kurtosis (layers 1 and up), white-box model vs base model."""
    from anchorlens.study.aggregate import mean_kurtosis

    index = [study.traces.index(name) for name in study.base_traces]
    values = [mean_kurtosis(k).numpy().ravel() for k in (study.kurtosis[index], study.base_kurtosis)]
    values = [v[np.isfinite(v)] for v in values]
    ax.boxplot(values, labels=[study.model_name or "model", study.base_model_name or "base"])
    summary = study.base_comparison()
    ax.set_title(f"head kurtosis (Mann-Whitney p = {summary['mann_whitney_p']:.2g})")
    ax.set_ylabel("mean kurtosis over traces")
    return ax


def plot_study(study, metric: str | None = None):
    import matplotlib.pyplot as plt

    from anchorlens.receivers.plots import plot_kurtosis_map

    panels = ["kurtosis", "reliability"] if study.kurtosis.numel() else []
    if "category" in study.sentences and len(study.sentences):
        metric = metric or next((c for c in ("counterfactual_importance_kl", "resampling_importance_accuracy",
                                             "receiver_score") if c in study.sentences), None)
        if metric is not None:
            panels.append("category")
    if len(study.sentences) and len(study.view_correlations(n_bootstrap=10)):
        panels.append("correlations")
    if study.base_kurtosis is not None:
        panels.append("base")
    panels = panels or ["empty"]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for panel, ax in zip(panels, axes[0]):
        if panel == "kurtosis" and study.kurtosis.numel():
            plot_kurtosis_map(study.mean_kurtosis, heads=study.receiver_heads, ax=ax,
                              title=f"mean kurtosis over {len(study.traces)} traces (receiver heads outlined)")
        elif panel == "reliability" and study.kurtosis.numel():
            plot_reliability_scatter(study, ax)
        elif panel == "category":
            plot_category_effects(study, metric, ax=ax, shown_only=False)
        elif panel == "correlations":
            plot_correlations(study, ax)
        elif panel == "base":
            plot_base_comparison(study, ax)
        else:
            ax.set_axis_off()
    figure.tight_layout()
    return figure
