"""What explains a sentence's importance: variance explained by position, indecision, category, length and the
white-box views, alone and together, within traces, with intervals over traces (docs/methods.md, "Studies: what
explains importance").

Predictors (each a group of columns of one least-squares model; a predictor is used where the study has it):

- ``position``: normalised position ``i / (n - 1)``, as a polynomial of degree ``position_degree`` (default 3);
- ``accuracy``: the accuracy of the rollouts resampled at the sentence, i.e. from the prefix before it (how sure
  the model was of the right answer before this sentence);
- ``indecision``: the entropy, in bits, of correct vs incorrect among those rollouts, ``H(accuracy)``: 0 when the
  model is settled either way, 1 at accuracy 0.5. (The entropy of the full answer distribution is not in the
  published files; this is its correct/incorrect part.)
- ``category``: one indicator per category (the first is the reference level);
- ``length``: the sentence's length, ``log(1 + characters)``;
- the views the study computed: ``receiver_score``, ``suppression_out_kl``, ``suppression_in_kl``,
  ``flow_to_answer``, ``attribution_to_answer`` (linearly).


Sentences of one trace are not independent and traces differ in their mean importance, so by default
(``grouping="within"``) the metric and every predictor column are centred within each trace and the R^2 is the
share of the within-trace variance explained (a fixed effect per trace). ``grouping="pooled"`` fits one intercept
over all sentences instead. Every model uses the same sentences: those with the metric and every predictor
defined. ``alone``: the R^2 of the predictor by itself; ``unique``: what the full model loses without it;
``together``: the full model. Intervals: percentile bootstrap over whole traces (each drawn trace keeps its own
centring), ``n_bootstrap`` draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from anchorlens.results import Result
from anchorlens.study.categories import IMPORTANCE_METRICS, convergence_mask, normalised_position
from anchorlens.stats import DEPRECATED_NAMES, LEVEL, interval, renamed_arguments, resample_counts
from anchorlens.study.discovery import StudyInputError

VIEW_PREDICTORS = ("receiver_score", "suppression_out_kl", "suppression_in_kl", "flow_to_answer",
                   "attribution_to_answer")
PREDICTORS = ("position", "accuracy", "indecision", "category", "length") + VIEW_PREDICTORS
GROUPINGS = ("within", "pooled")


def binary_entropy(p) -> np.ndarray:
    """``-p log2 p - (1 - p) log2 (1 - p)``, 0 at p = 0 or 1, NaN where p is.

    >>> binary_entropy(np.array([0.0, 0.5, 1.0])).tolist()
    [0.0, 1.0, 0.0]
    """
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    return np.where(np.isfinite(p), terms, np.nan)


def available_predictors(frame: pd.DataFrame) -> list[str]:
    """The predictors ``frame`` has values for, in ``PREDICTORS`` order."""
    needs = {"position": "sentence", "accuracy": "accuracy", "indecision": "accuracy", "category": "category",
             "length": "text"}
    out = []
    for name in PREDICTORS:
        column = needs.get(name, name)
        if column in frame and frame[column].notna().any() and (name != "category" or frame[column].nunique() > 1):
            out.append(name)
    return out


def design(frame: pd.DataFrame, predictors: list[str], position_degree: int = 3) -> dict[str, np.ndarray]:
    """Each predictor's columns (``[sentence, k]``), standardised over the sentences (NaN where undefined)."""
    position = frame["position"] if "position" in frame else normalised_position(frame)
    columns: dict[str, np.ndarray] = {}
    for name in predictors:
        if name == "position":
            x = position.to_numpy(dtype=float)
            block = np.stack([x ** k for k in range(1, position_degree + 1)], axis=1)
        elif name == "accuracy":
            block = frame[["accuracy"]].to_numpy(dtype=float)
        elif name == "indecision":
            block = binary_entropy(frame["accuracy"].to_numpy(dtype=float))[:, None]
        elif name == "category":
            labels = frame["category"].astype("object")
            levels = sorted(labels.dropna().unique())
            block = np.stack([(labels == level).to_numpy(dtype=float) for level in levels[1:]], axis=1)
            block[labels.isna().to_numpy()] = np.nan
        elif name == "length":
            block = np.log1p(frame["text"].astype(str).str.len().to_numpy(dtype=float))[:, None]
        else:
            block = frame[[name]].to_numpy(dtype=float)
        scale = np.nanstd(block, axis=0)
        columns[name] = (block - np.nanmean(block, axis=0)) / np.where(scale > 0, scale, 1.0)
    return columns


def _moments(y: np.ndarray, x: np.ndarray, groups: np.ndarray, n_groups: int, within: bool):
    """Per trace: ``X'X``, ``X'y``, ``y'y``, ``sum y`` and the sentence count (after centring within the trace when
    ``within``; with an intercept column first otherwise), so any draw of traces is a weighted sum of them."""
    if within:
        for g in range(n_groups):
            rows = groups == g
            y[rows] -= y[rows].mean()
            x[rows] -= x[rows].mean(0)
    else:
        x = np.concatenate([np.ones((len(y), 1)), x], axis=1)
    p = x.shape[1]
    xtx, xty = np.zeros((n_groups, p, p)), np.zeros((n_groups, p))
    yty, ysum, count = np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups)
    for g in range(n_groups):
        rows = groups == g
        xtx[g], xty[g] = x[rows].T @ x[rows], x[rows].T @ y[rows]
        yty[g], ysum[g], count[g] = y[rows] @ y[rows], y[rows].sum(), rows.sum()
    return xtx, xty, yty, ysum, count


def _r2(weights: np.ndarray, moments, index: np.ndarray, within: bool) -> np.ndarray:
    """R^2 of the model on columns ``index`` for each row of trace ``weights`` (``[draw, trace]``)."""
    xtx, xty, yty, ysum, count = moments
    if not within:
        index = np.concatenate([[0], index + 1])  # the intercept
    a = np.einsum("bt,tij->bij", weights, xtx[:, index][:, :, index])
    b = np.einsum("bt,ti->bi", weights, xty[:, index])
    total_yy, total_y, total_n = weights @ yty, weights @ ysum, weights @ count
    explained = np.einsum("bi,bi->b", b, np.einsum("bij,bj->bi", np.linalg.pinv(a, hermitian=True), b))
    with np.errstate(invalid="ignore", divide="ignore"):
        if within:
            return explained / total_yy
        total = total_yy - total_y ** 2 / total_n
        return (explained - total_y ** 2 / total_n) / total


@renamed_arguments()
def explain_importance(sentences: pd.DataFrame, metric: str, predictors=None, *, grouping: str = "within",
                       convergence: bool = False, clip: bool = False, position_degree: int = 3,
                       n_bootstrap: int = 1000, level: float = LEVEL, seed: int = 0) -> "Explained":
    """The share of ``metric``'s variance each predictor explains, alone, uniquely and all together.

    Args:
        sentences: a study's sentences (``Study.sentences``): ``trace``, ``sentence`` and the columns used.
        metric: the importance metric (or any per-sentence column) to explain.
        predictors: names from ``PREDICTORS`` (default: every one the study has).
        grouping: ``"within"`` (centred within each trace: the share of within-trace variance) or ``"pooled"``.
        convergence: drop each trace's sentences from its first settled run on (``categories.convergence_mask``).
        clip: count an importance metric below zero as zero.
        position_degree: the degree of the position polynomial.
        n_bootstrap, level, seed: the bootstrap over traces.
    """
    if grouping not in GROUPINGS:
        raise StudyInputError(f"grouping must be one of {GROUPINGS}, not {grouping!r} (a mixed model needs "
                              "statsmodels, which anchorlens does not install; 'within' fits a fixed effect per trace)")
    if metric is None or metric not in sentences:
        raise StudyInputError(f"no column {metric!r} to explain: pass one of the study's metrics")
    frame = sentences.copy()
    if "position" not in frame:
        frame["position"] = normalised_position(frame)
    if convergence:
        if "accuracy" not in frame:
            raise StudyInputError("the convergence filter needs each sentence's accuracy: use convergence=False")
        frame = frame[convergence_mask(frame)]
    available = available_predictors(frame)
    predictors = list(available if predictors is None else predictors)
    unknown = [p for p in predictors if p not in PREDICTORS]
    absent = [p for p in predictors if p in PREDICTORS and p not in available]
    if unknown or absent or not predictors:
        raise StudyInputError(f"predictors {unknown + absent or '[]'} are not available: this study has "
                              f"{', '.join(available) or 'none'} (of {', '.join(PREDICTORS)})")
    blocks = design(frame, predictors, position_degree)
    y = frame[metric].to_numpy(dtype=float)
    if clip and metric in IMPORTANCE_METRICS:
        y = np.maximum(y, 0.0)
    x = np.concatenate([blocks[p] for p in predictors], axis=1)
    keep = np.isfinite(y) & np.isfinite(x).all(1)
    names = list(dict.fromkeys(frame["trace"][keep]))
    if len(names) < 2 or keep.sum() <= x.shape[1] + len(names):
        raise StudyInputError(f"{int(keep.sum())} sentences in {len(names)} traces with {metric} and every predictor: "
                              "too few to fit; study more traces or use fewer predictors")
    groups = pd.Categorical(frame["trace"][keep], categories=names).codes
    within = grouping == "within"
    moments = _moments(y[keep].copy(), x[keep].copy(), groups, len(names), within)
    spans, start = {}, 0
    for p in predictors:
        spans[p] = np.arange(start, start + blocks[p].shape[1])
        start += blocks[p].shape[1]
    everything = np.arange(start)
    weights = np.concatenate([np.ones((1, len(names))),
                              resample_counts(len(names), n_bootstrap, np.random.default_rng(seed))])
    together = _r2(weights, moments, everything, within)
    def summary(values: np.ndarray) -> tuple[float, float, float]:
        return (float(values[0]), *interval(values[1:], level))

    rows = []
    for p in predictors:
        alone = _r2(weights, moments, spans[p], within)
        rest = np.setdiff1d(everything, spans[p])
        unique = together - (_r2(weights, moments, rest, within) if len(rest) else 0.0)
        (a, a_low, a_high), (u, u_low, u_high) = summary(alone), summary(unique)
        rows.append({"predictor": p, "columns": len(spans[p]), "r2_alone": a, "r2_alone_ci_low": a_low,
                     "r2_alone_ci_high": a_high, "r2_unique": u, "r2_unique_ci_low": u_low,
                     "r2_unique_ci_high": u_high})
    t, t_low, t_high = summary(together)
    rows.append({"predictor": "together", "columns": len(everything), "r2_alone": t, "r2_alone_ci_low": t_low,
                 "r2_alone_ci_high": t_high, "r2_unique": float("nan"), "r2_unique_ci_low": float("nan"),
                 "r2_unique_ci_high": float("nan")})
    return Explained(metric=metric, grouping=grouping, table=pd.DataFrame(rows), n_sentences=int(keep.sum()),
                     n_traces=len(names), settings=dict(convergence=convergence, clip=clip,
                                                        position_degree=position_degree, n_bootstrap=n_bootstrap,
                                                        level=level, seed=seed))


@dataclass
class Explained(Result):
    """Variance of ``metric`` explained by each predictor, alone and uniquely, and by all together.

    Attributes:
        metric: the explained column; grouping: ``"within"`` (shares of within-trace variance) or ``"pooled"``.
        table: one row per predictor and a ``together`` row: ``r2_alone``, ``r2_unique`` (what the full model
            loses without it), each with ``_ci_low`` / ``_ci_high`` (percentile bootstrap over traces), and the
            number of model ``columns`` the predictor takes.
        n_sentences, n_traces: what the models were fitted on (sentences with the metric and every predictor).
        settings: the options (convergence filter, clipping, position degree, bootstrap).
    """

    metric: str
    grouping: str
    table: pd.DataFrame
    n_sentences: int
    n_traces: int
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        # files saved before the one statistics module name the bootstrap settings n_boot / confidence
        self.settings = {DEPRECATED_NAMES.get(key, key): value for key, value in self.settings.items()}

    def __repr__(self) -> str:
        rows = ", ".join(f"{r.predictor} {r.r2_alone:.2f} [{r.r2_alone_ci_low:.2f}, {r.r2_alone_ci_high:.2f}]"
                         for r in self.table.itertuples())
        return f"Explained({self.metric}, {self.grouping}, {self.n_sentences} sentences in {self.n_traces} traces: {rows})"

    def to_dataframe(self) -> pd.DataFrame:
        return self.table.copy()

    def plot(self, ax=None):
        """R^2 of each predictor alone (and uniquely), and of all together, with their intervals over traces."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 0.45 * len(self.table) + 1.5))
        table = self.table
        y = np.arange(len(table))
        for offset, kind, colour in ((-0.18, "alone", "tab:blue"), (0.18, "unique", "tab:orange")):
            values = table[f"r2_{kind}"].to_numpy()
            errors = np.vstack([values - table[f"r2_{kind}_ci_low"], table[f"r2_{kind}_ci_high"] - values])
            ax.barh(y + offset, np.nan_to_num(values), height=0.36, xerr=np.nan_to_num(np.abs(errors)),
                    color=colour, capsize=2, label=kind)
        ax.set_yticks(y, table.predictor)
        ax.invert_yaxis()
        share = "within-trace " if self.grouping == "within" else ""
        ax.set_xlabel(f"share of {share}variance explained (R², 95% interval over traces)")
        ax.set_title(f"what explains {self.metric} ({self.n_sentences} sentences, {self.n_traces} traces)")
        ax.legend(fontsize=8)
        return ax
