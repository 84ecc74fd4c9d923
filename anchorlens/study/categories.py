"""Importance (or any view) by sentence category, as the Thought Anchors figure computes it (pure pandas/numpy).

The paper's "sentence category effect" figure (reference code: ``plots.py`` of interp-reasoning/thought-anchors,
``collect_tag_data`` / ``aggregate_tag_data`` / ``plot_tag_effects``) is computed in steps; each is an option of
``category_table`` (docs/methods.md, "Studies: importance by category"):

1. convergence filter: in each trace, find the first run of ``run_length`` consecutive sentences whose accuracy
   (of the rollouts resampled at the sentence) is all above ``high`` or all below ``low``; drop that sentence and
   every later one (the answer has settled; importance after it is mostly 0). As in the reference, a run is
   searched only among starts ``0 .. n - run_length - 2`` (it ends at least two sentences before the last);
2. clipping: importance metrics below zero count as zero (views are never clipped);
3. weighting ``"trace"``: each trace's mean per category, then the mean over traces, its standard error over
   traces (``ddof=1``); ``"sentence"``: the pooled mean over sentences, its standard error over sentences;
4. minimum counts: a category needs ``min_sentences`` sentences, a metric ``min_traces`` traces with a value;
5. position debiasing (``debias="polynomial"``): a least-squares polynomial of degree ``degree`` in normalised
   position, fitted over every kept sentence with a value (all categories together), is subtracted first;
6. the figure shows the categories not in ``figure_excludes`` (the reference leaves out problem setup, self
   checking and final answer emission); the table keeps every category and says which are shown.

Positions: sentence ``i`` of a trace of ``n`` sentences sits at ``i / (n - 1)`` (0.5 for a one-sentence trace),
counted over the whole trace, before any filter.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from anchorlens.stats import LEVEL, paired_difference, percentile_interval, renamed_arguments, resample_indices
from anchorlens.study.discovery import StudyInputError

# The six published importance metrics: the ones clipped at zero.
IMPORTANCE_METRICS = ("resampling_importance_accuracy", "resampling_importance_kl",
                      "counterfactual_importance_accuracy", "counterfactual_importance_kl",
                      "forced_importance_accuracy", "forced_importance_kl")
# The categories the reference's figure leaves out.
FIGURE_EXCLUDES = ("problem_setup", "self_checking", "final_answer_emission")
WEIGHTINGS = ("trace", "sentence")


def normalised_position(frame: pd.DataFrame, trace: str = "trace", sentence: str = "sentence") -> pd.Series:
    """Each sentence's index over (its trace's sentence count - 1); 0.5 in a one-sentence trace."""
    count = frame.groupby(trace, sort=False)[sentence].transform("size")
    return (frame[sentence] / (count - 1)).where(count > 1, 0.5).astype(float)


def converged_from(accuracy: np.ndarray, run_length: int = 4, high: float = 0.99, low: float = 0.01) -> int | None:
    """Index of the first sentence of the first run of ``run_length`` sentences whose accuracy is all above
    ``high`` or all below ``low`` (starts ``0 .. n - run_length - 2``, as the reference searches), or None.

    >>> converged_from(np.array([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    1
    >>> converged_from(np.array([0.5, 0.4, 1.0, 1.0, 1.0, 1.0])) is None   # the run ends on the last two sentences
    True
    """
    values = np.asarray(accuracy, dtype=float)
    with np.errstate(invalid="ignore"):  # NaN accuracy: neither above nor below
        above, below = values > high, values < low
    for start in range(len(values) - run_length - 1):
        window = slice(start, start + run_length)
        if above[window].all() or below[window].all():
            return start
    return None


def convergence_mask(frame: pd.DataFrame, accuracy: str = "accuracy", run_length: int = 4, high: float = 0.99,
                     low: float = 0.01, trace: str = "trace", sentence: str = "sentence") -> pd.Series:
    """True for the sentences kept by the convergence filter (those before each trace's first settled run)."""
    keep = pd.Series(True, index=frame.index)
    for _, group in frame.groupby(trace, sort=False):
        group = group.sort_values(sentence)
        start = converged_from(group[accuracy].to_numpy(), run_length, high, low)
        if start is not None:
            keep[group.index[start:]] = False
    return keep


def position_residuals(values: np.ndarray, positions: np.ndarray, degree: int = 10) -> np.ndarray:
    """``values`` minus their least-squares polynomial of degree ``degree`` in ``positions`` (NaN stays NaN).

    ``numpy.polynomial.Polynomial.fit`` maps positions onto [-1, 1] first, which keeps degree 10 well conditioned;
    the fitted values are those of the reference's ``PolynomialFeatures(10)`` + ``LinearRegression``.
    """
    values, positions = np.asarray(values, dtype=float), np.asarray(positions, dtype=float)
    out = np.full_like(values, np.nan)
    present = np.isfinite(values)
    if present.sum() <= degree:
        raise StudyInputError(f"a degree-{degree} position polynomial needs more than {degree} sentences with a value, "
                              f"got {int(present.sum())}: lower degree=... or study more traces")
    fit = np.polynomial.Polynomial.fit(positions[present], values[present], degree)
    out[present] = values[present] - fit(positions[present])
    return out


def _standard_error(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def prepare(frame: pd.DataFrame, metrics: list[str], *, convergence: bool = True, run_length: int = 4,
            high: float = 0.99, low: float = 0.01, clip: bool = True, debias: str | None = None, degree: int = 10,
            category: str = "category") -> pd.DataFrame:
    """The sentences a category table averages: ``position`` added, the convergence filter, clipping, debiasing
    (steps 1, 2 and 5 of the module's definition); sentences without a category are left out."""
    frame = frame.copy()
    if "position" not in frame:
        frame["position"] = normalised_position(frame)
    if convergence:
        frame = frame[convergence_mask(frame, run_length=run_length, high=high, low=low)]
    frame = frame[frame[category].notna()].copy()
    for metric in metrics:
        frame[metric] = frame[metric].astype(float)
        if clip and metric in IMPORTANCE_METRICS:
            frame[metric] = frame[metric].clip(lower=0.0)
    if debias == "polynomial":
        for metric in metrics:
            frame[metric] = position_residuals(frame[metric].to_numpy(), frame["position"].to_numpy(), degree)
    elif debias is not None:
        raise StudyInputError(f"debias must be None or 'polynomial', not {debias!r}")
    return frame


def _per_trace(frame, columns, names, categories, category, trace):
    """Per trace and category: each column's sum, count of values and mean (``[trace, category, column]``)."""
    values = frame[columns].astype(float)
    keys = [frame[trace], frame[category]]
    index = pd.MultiIndex.from_product([names, categories])
    shape = (len(names), len(categories), len(columns))
    sums = values.fillna(0.0).groupby(keys).sum().reindex(index, fill_value=0.0).to_numpy().reshape(shape)
    counts = values.notna().astype(float).groupby(keys).sum().reindex(index, fill_value=0.0).to_numpy().reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums, counts, sums / counts  # NaN where the trace has no value there


def _bootstrap_means(sums, counts, trace_means, weighting: str, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[draw, category, column]`` means over ``n_bootstrap`` draws of whole traces with replacement. Each draw is a
    count per trace, so every mean is a weighted sum of the per-trace sums or means (all categories and columns at
    once: hand-written for that reason, not ``scipy.stats.bootstrap``)."""
    n_traces = sums.shape[0]
    draws = resample_indices(n_traces, n_bootstrap, np.random.default_rng(seed))
    weights = np.stack([np.bincount(d, minlength=n_traces) for d in draws]).astype(float)  # [draw, trace]
    with np.errstate(invalid="ignore", divide="ignore"):
        if weighting == "trace":
            has = np.isfinite(trace_means).astype(float)
            return (np.einsum("bt,tcm->bcm", weights, np.nan_to_num(trace_means))
                    / np.einsum("bt,tcm->bcm", weights, has))
        return np.einsum("bt,tcm->bcm", weights, sums) / np.einsum("bt,tcm->bcm", weights, counts)


@renamed_arguments()
def category_differences(frame: pd.DataFrame, metric: str, categories=None, *, weighting: str = "trace",
                         n_bootstrap: int = 2000, level: float = LEVEL, seed: int = 0, category: str = "category",
                         trace: str = "trace") -> pd.DataFrame:
    """Every pair of ``categories`` (default: all in the prepared ``frame``): the difference of their means of
    ``metric`` (as ``category_table`` computes them) with a percentile bootstrap interval over traces (both means
    on the same draws of traces) and whether the interval excludes zero."""
    if weighting not in WEIGHTINGS:
        raise StudyInputError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    categories = sorted(categories if categories is not None else frame[category].dropna().unique())
    frame = frame[frame[category].isin(categories)]
    names = list(dict.fromkeys(frame[trace]))
    sums, counts, trace_means = _per_trace(frame, [metric], names, categories, category, trace)
    boot = _bootstrap_means(sums, counts, trace_means, weighting, n_bootstrap, seed)[:, :, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a category without values: NaN
        point = (np.nanmean(trace_means[:, :, 0], axis=0) if weighting == "trace"
                 else sums[:, :, 0].sum(0) / counts[:, :, 0].sum(0))
    rows = []
    for i, a in enumerate(categories):
        for j in range(i + 1, len(categories)):
            low, high, excludes = paired_difference(boot[:, i], boot[:, j], level)
            rows.append({"category_a": a, "category_b": categories[j], "difference": point[i] - point[j],
                         "ci_low": low, "ci_high": high, "excludes_zero": excludes})
    return pd.DataFrame(rows)


@renamed_arguments()
def category_table(frame: pd.DataFrame, metrics: list[str], *, weighting: str = "trace", min_sentences: int = 3,
                   min_traces: int = 3, figure_excludes=FIGURE_EXCLUDES, n_bootstrap: int = 2000,
                   level: float = LEVEL, seed: int = 0, category: str = "category",
                   trace: str = "trace") -> pd.DataFrame:
    """One row per category of the prepared sentences (``prepare``): ``n_sentences``, ``n_traces``, mean
    ``position`` and ``position_se``, each metric's mean, ``<metric>_se`` (over traces or sentences, as
    ``weighting`` says), ``<metric>_ci_low`` / ``_ci_high`` (percentile bootstrap over whole traces) and
    ``<metric>_n_traces``; ``shown``: whether the figure shows the category. Categories under ``min_sentences``
    are left out; a metric with under ``min_traces`` traces is NaN in that row."""
    if weighting not in WEIGHTINGS:
        raise StudyInputError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    sizes = frame.groupby(category).size()
    categories = sorted(sizes[sizes >= min_sentences].index)
    frame = frame[frame[category].isin(categories)]
    names = list(dict.fromkeys(frame[trace]))
    columns = ["position"] + list(metrics)
    sums, counts, trace_means = _per_trace(frame, columns, names, categories, category, trace)
    boot = _bootstrap_means(sums, counts, trace_means, weighting, n_bootstrap, seed)
    low, high = percentile_interval(boot, level)  # a category absent from every draw: NaN
    rows = []
    for c, name in enumerate(categories):
        group = frame[frame[category] == name]
        row = {category: name, "n_sentences": len(group), "n_traces": group[trace].nunique()}
        for m, column in enumerate(columns):
            per_trace = trace_means[:, c, m][np.isfinite(trace_means[:, c, m])]
            pooled = group[column].dropna().to_numpy(dtype=float)
            units = per_trace if weighting == "trace" else pooled
            enough = len(per_trace) >= min_traces or column == "position"
            row[column] = float(np.mean(units)) if enough and len(units) else float("nan")
            row[f"{column}_se"] = _standard_error(units) if enough and len(units) else float("nan")
            if column != "position":
                row[f"{column}_ci_low"] = float(low[c, m]) if enough else float("nan")
                row[f"{column}_ci_high"] = float(high[c, m]) if enough else float("nan")
                row[f"{column}_n_traces"] = len(per_trace)
        row["shown"] = name not in tuple(figure_excludes or ())
        rows.append(row)
    out = pd.DataFrame(rows)
    if not len(out):
        out = pd.DataFrame(columns=[category, "n_sentences", "n_traces", "position", "position_se", "shown"])
    return out
