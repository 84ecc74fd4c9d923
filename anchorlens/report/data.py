"""``ReportData``: the plain data one report shows, checked once so that the page never breaks on it.

The analyses (receiver heads, suppression, resampling, taxonomy) each produce their own result objects;
the report takes only plain pieces of them (a ``Trace``, a pandas DataFrame of per-sentence metrics,
numpy / torch matrices), so that it depends on none of them. Every piece but the trace is optional: a
section without data says "not computed".

>>> data = ReportData(trace, metrics=df, categories=labels, suppression_kl=S)   # doctest: +SKIP
>>> data.to_dataframe().head()                                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Float

from anchorlens.report.categories import CATEGORIES, CATEGORY_COLORS, UNLABELLED_COLOR  # noqa: F401 (re-exported)
from anchorlens.report.errors import ReportDataError
from anchorlens.trace import Trace
from anchorlens.results import Result, expect_kind

#: The sections of the report; ``ReportData.notes`` keys must be among them.
SECTIONS: tuple[str, ...] = (
    "summary",
    "cot",
    "importance",
    "graph",
    "receiver",
    "head_attention",
    "suppression",
    "counterfactual",
    "flow",
    "attribution",
)

#: Metrics the page colours by first, when present (the paper's headline measures first).
PREFERRED_METRICS: tuple[str, ...] = (
    "counterfactual_importance_kl",
    "counterfactual_importance_accuracy",
    "resampling_importance_accuracy",
    "resampling_importance_kl",
    "forced_importance_accuracy",
    "receiver_score",
)

# DataFrame columns that name a sentence rather than measure it: never shown as metrics.
_ID_COLUMNS = {"sentence", "sentence_idx", "sentence_index", "chunk_idx", "index", "text", "chunk"}

FORMAT = "anchorlens-report/1"


@dataclass
class ReportData(Result):
    """Everything one report shows. Only ``trace`` is required.

    Attributes:
        trace: the chain of thought, split into sentences (``n`` of them).
        title, model_name, problem, answer: shown in the header (``model_name`` defaults to the trace's).
        metrics: one row per sentence, in trace order. Numeric columns are metrics (hover shows all;
            the page colours by a chosen one); text columns (e.g. a summary) are shown on hover.
        categories: one taxonomy tag per sentence (see ``CATEGORIES``), or None where unlabelled.
        suppression_kl: ``[n, n]``, row = target sentence i, column = suppressed sentence j, the mean KL
            (nats, >= 0, not its log); only j < i is meaningful (docs/methods.md 1.6).
        counterfactual_matrix: ``[n, n]``, M[i, j] for j > i (docs/methods.md 1.3).
        receiver_kurtosis: ``[n_layers, n_heads]`` kurtosis of each head's vertical scores.
        receiver_heads: the chosen receiver heads as ``(layer, head)`` pairs, best first.
        head_attention: ``[n, n]`` sentence-averaged attention of one receiver head (row = query).
        head_attention_head: which head ``head_attention`` belongs to (default: ``receiver_heads[0]``).
        receiver_scores: ``[n]`` receiver score per sentence (shown as the metric ``receiver_score``).
        flow_matrix: ``[n, n]`` information flow between sentences (``SentenceFlow.matrix``: row = target
            sentence, column = source sentence; only source <= target is meaningful).
        attribution_graph: a pruned attribution graph as circuit-tracer's graph JSON (``graph_json(graph)``;
            an ``AttributionGraph`` is converted), drawn by layer and position.
        notes: per section (see ``SECTIONS``), a line shown under its heading, e.g. where the data came
            from or "synthetic matrix, for layout only".
        primary_metric: the metric to colour by first (default: the first of ``PREFERRED_METRICS`` present).
    """

    trace: Trace
    title: str | None = None
    model_name: str | None = None
    problem: str | None = None
    answer: str | None = None
    metrics: "pd.DataFrame | None" = None  # noqa: F821 (pandas is imported lazily)
    categories: list[str | None] | None = None
    suppression_kl: Float[np.ndarray, "target suppressed"] | None = None
    counterfactual_matrix: Float[np.ndarray, "source target"] | None = None
    receiver_kurtosis: Float[np.ndarray, "layer head"] | None = None
    receiver_heads: list[tuple[int, int]] | None = None
    head_attention: Float[np.ndarray, "query key"] | None = None
    head_attention_head: tuple[int, int] | None = None
    receiver_scores: Float[np.ndarray, "sentence"] | None = None
    flow_matrix: Float[np.ndarray, "target source"] | None = None
    attribution_graph: dict | None = None
    notes: dict[str, str] = field(default_factory=dict)
    primary_metric: str | None = None

    def __post_init__(self) -> None:
        import pandas as pd

        if not isinstance(self.trace, Trace):
            raise ReportDataError(
                f"ReportData needs an anchorlens.Trace as `trace`, got {type(self.trace).__name__}: "
                "build one with Trace.from_text(model, cot_text) or Trace.load(path)"
            )
        n = self.trace.n_sentences
        if n == 0:
            raise ReportDataError("the trace has no sentences: there is nothing to report")
        if self.model_name is None:
            self.model_name = self.trace.model_name
        if self.metrics is not None:
            if not isinstance(self.metrics, pd.DataFrame):
                raise ReportDataError(
                    f"`metrics` must be a pandas DataFrame (one row per sentence), got {type(self.metrics).__name__}"
                )
            if len(self.metrics) != n:
                raise ReportDataError(
                    f"`metrics` has {len(self.metrics)} rows but the trace has {n} sentences: "
                    "pass one row per sentence, in trace order"
                )
            self.metrics = self.metrics.reset_index(drop=True)
        if self.categories is not None:
            self.categories = [_check_category(c, i) for i, c in enumerate(self.categories)]
            if len(self.categories) != n:
                raise ReportDataError(
                    f"`categories` has {len(self.categories)} labels but the trace has {n} sentences: "
                    "pass one label (or None) per sentence"
                )
        self.suppression_kl = _matrix(self.suppression_kl, "suppression_kl", (n, n))
        if self.suppression_kl is not None and np.nanmin(self.suppression_kl) < -1e-6:
            raise ReportDataError(
                "`suppression_kl` holds negative values: pass the KL itself (>= 0), not log(KL); "
                "the report takes the log for display"
            )
        self.counterfactual_matrix = _matrix(self.counterfactual_matrix, "counterfactual_matrix", (n, n))
        self.head_attention = _matrix(self.head_attention, "head_attention", (n, n))
        self.flow_matrix = _matrix(self.flow_matrix, "flow_matrix", (n, n))
        self.attribution_graph = _attribution_graph(self.attribution_graph)
        self.receiver_kurtosis = _matrix(self.receiver_kurtosis, "receiver_kurtosis", None)
        if self.receiver_scores is not None:
            self.receiver_scores = _as_array(self.receiver_scores, "receiver_scores").reshape(-1)
            if self.receiver_scores.shape != (n,):
                raise ReportDataError(
                    f"`receiver_scores` has {self.receiver_scores.size} values but the trace has {n} sentences"
                )
        if self.receiver_heads is not None:
            self.receiver_heads = [_head(h, self.receiver_kurtosis) for h in self.receiver_heads]
        if self.head_attention_head is not None:
            self.head_attention_head = _head(self.head_attention_head, self.receiver_kurtosis)
        elif self.head_attention is not None and self.receiver_heads:
            self.head_attention_head = self.receiver_heads[0]
        unknown = set(self.notes) - set(SECTIONS)
        if unknown:
            raise ReportDataError(f"`notes` names unknown sections {sorted(unknown)}; use some of {SECTIONS}")
        if self.primary_metric is not None and self.primary_metric not in self.metric_names():
            raise ReportDataError(
                f"primary_metric {self.primary_metric!r} is not a metric of this report; "
                f"choose one of {self.metric_names()}"
            )

    # ------------------------------------------------------------------ views

    @property
    def n_sentences(self) -> int:
        return self.trace.n_sentences

    def metric_table(self) -> dict[str, np.ndarray]:
        """Every numeric per-sentence measure by name (``receiver_scores`` as ``receiver_score``)."""
        table: dict[str, np.ndarray] = {}
        if self.metrics is not None:
            for column in self.metrics.columns:
                series = self.metrics[column]
                if str(column) in _ID_COLUMNS or not _is_numeric(series) or _interval_of(column, self.metrics):
                    continue
                table[str(column)] = series.to_numpy(dtype=float, na_value=np.nan)
        if self.receiver_scores is not None and "receiver_score" not in table:
            table["receiver_score"] = self.receiver_scores.astype(float)
        return table

    def interval_table(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each metric's confidence interval, ``(low, high)`` per sentence, from its ``<metric>_ci_low`` and
        ``<metric>_ci_high`` columns (shown as error bars and in the hover, not as metrics of their own)."""
        if self.metrics is None:
            return {}
        return {str(m): (self.metrics[f"{m}_ci_low"].to_numpy(dtype=float, na_value=np.nan),
                         self.metrics[f"{m}_ci_high"].to_numpy(dtype=float, na_value=np.nan))
                for m in self.metrics.columns
                if f"{m}_ci_low" in self.metrics and f"{m}_ci_high" in self.metrics}

    def label_table(self) -> dict[str, list[str]]:
        """Text columns of ``metrics`` (e.g. a short summary per sentence), shown on hover."""
        if self.metrics is None:
            return {}
        labels = {}
        for column in self.metrics.columns:
            series = self.metrics[column]
            if str(column) in _ID_COLUMNS or _is_numeric(series):
                continue
            labels[str(column)] = ["" if _is_missing(v) else str(v) for v in series.tolist()]
        return labels

    def metric_names(self) -> list[str]:
        return list(self.metric_table())

    def default_metric(self) -> str | None:
        """The metric the page colours by first."""
        names = self.metric_names()
        if self.primary_metric is not None:
            return self.primary_metric
        for name in PREFERRED_METRICS:
            if name in names:
                return name
        return names[0] if names else None

    def to_dataframe(self):
        """One row per sentence: index, text, token range, category, then every metric and label."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "sentence": range(self.n_sentences),
                "text": self.trace.sentence_texts(),
                "token_start": [a for a, _ in self.trace.token_spans],
                "token_end": [b for _, b in self.trace.token_spans],
                "category": self.categories if self.categories is not None else [None] * self.n_sentences,
            }
        )
        for name, values in self.metric_table().items():
            frame[name] = values
        for name, values in self.label_table().items():
            frame[name] = values
        return frame

    def plot(self, metric: str | None = None, ax=None):
        """Bars of one metric per sentence, coloured by category. Returns the matplotlib Axes.

        >>> ax = data.plot("counterfactual_importance_kl")                 # doctest: +SKIP
        >>> ax.figure.savefig("importance.png")                            # doctest: +SKIP
        """
        from anchorlens.report.figures import importance_axes

        return importance_axes(self, metric=metric, ax=ax)

    # ------------------------------------------------------------------ I/O

    def to_dict(self) -> dict:
        """All the data as plain JSON-able Python (NaN and infinities become None)."""
        metrics = None
        if self.metrics is not None:
            metrics = {
                "columns": [str(c) for c in self.metrics.columns],
                "dtypes": {str(c): str(self.metrics[c].dtype) for c in self.metrics.columns},
                "data": {str(c): [_plain(v) for v in self.metrics[c].tolist()] for c in self.metrics.columns},
            }
        return {
            "format": FORMAT,
            "title": self.title,
            "model_name": self.model_name,
            "problem": self.problem,
            "answer": self.answer,
            "trace": self.trace.to_dict(),
            "metrics": metrics,
            "categories": self.categories,
            "suppression_kl": _nested(self.suppression_kl),
            "counterfactual_matrix": _nested(self.counterfactual_matrix),
            "receiver_kurtosis": _nested(self.receiver_kurtosis),
            "receiver_heads": [list(h) for h in self.receiver_heads] if self.receiver_heads is not None else None,
            "head_attention": _nested(self.head_attention),
            "head_attention_head": list(self.head_attention_head) if self.head_attention_head is not None else None,
            "receiver_scores": _nested(self.receiver_scores),
            "flow_matrix": _nested(self.flow_matrix),
            "attribution_graph": self.attribution_graph,
            "notes": dict(self.notes),
            "primary_metric": self.primary_metric,
        }

    @classmethod
    def from_dict(cls, payload: dict) -> "ReportData":
        """Rebuild what ``to_dict`` wrote."""
        import pandas as pd

        if payload.get("format") != FORMAT:
            raise ReportDataError(
                f"this is not report data in the format {FORMAT!r} (found {payload.get('format')!r}): "
                "pass a report.json written by anchorlens.build_report"
            )
        metrics = None
        if payload.get("metrics") is not None:
            columns = payload["metrics"]["columns"]
            metrics = pd.DataFrame({c: payload["metrics"]["data"][c] for c in columns}, columns=columns)
            dtypes = payload["metrics"].get("dtypes", {})
            for column in columns:  # None stood for NaN in numeric columns: restore their numbers
                if pd.api.types.is_float_dtype(dtypes.get(column)):
                    metrics[column] = metrics[column].astype(float)
        heads = payload.get("receiver_heads")
        head = payload.get("head_attention_head")
        return cls(
            trace=Trace.from_dict(payload["trace"]),
            title=payload.get("title"),
            model_name=payload.get("model_name"),
            problem=payload.get("problem"),
            answer=payload.get("answer"),
            metrics=metrics,
            categories=payload.get("categories"),
            suppression_kl=_from_nested(payload.get("suppression_kl")),
            counterfactual_matrix=_from_nested(payload.get("counterfactual_matrix")),
            receiver_kurtosis=_from_nested(payload.get("receiver_kurtosis")),
            receiver_heads=[tuple(h) for h in heads] if heads is not None else None,
            head_attention=_from_nested(payload.get("head_attention")),
            head_attention_head=tuple(head) if head is not None else None,
            receiver_scores=_from_nested(payload.get("receiver_scores")),
            flow_matrix=_from_nested(payload.get("flow_matrix")),
            attribution_graph=payload.get("attribution_graph"),
            notes=payload.get("notes") or {},
            primary_metric=payload.get("primary_metric"),
        )

    def save(self, path: str | Path) -> Path:
        """Write all the data as one JSON file (what ``build_report`` writes as ``report.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"kind": "ReportData"} | self.to_dict(), ensure_ascii=False, allow_nan=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ReportData":
        """Read a ``report.json`` (or any file ``save`` wrote)."""
        path = Path(path)
        if not path.exists():
            raise ReportDataError(f"{path} does not exist: pass the report.json that build_report wrote")
        expect_kind(path, cls)
        return cls.from_dict(json.loads(path.read_text()))


# ---------------------------------------------------------------------- checks and conversions


def _check_category(label, i: int) -> str | None:
    if _is_missing(label) or label == "":
        return None
    if isinstance(label, (list, tuple)):  # the published data holds lists of tags: keep the first
        return _check_category(label[0] if label else None, i)
    if label not in CATEGORIES:
        raise ReportDataError(
            f"sentence {i} has the category {label!r}, which is not a taxonomy tag; use one of {CATEGORIES} "
            "or None for an unlabelled sentence"
        )
    return str(label)


def _as_array(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: leave the graph, the device and low precision behind
        value = value.detach().float().cpu().numpy()
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise ReportDataError(f"`{name}` must be numbers (a numpy array or torch tensor): {error}") from None


def _matrix(value, name: str, shape: tuple[int, int] | None) -> np.ndarray | None:
    if value is None:
        return None
    array = _as_array(value, name)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        wanted = f"{shape[0]} x {shape[1]} (one row and column per sentence)" if shape else "2-dimensional"
        raise ReportDataError(f"`{name}` has shape {tuple(array.shape)} but must be {wanted}")
    return array


#: The fields of circuit-tracer's graph JSON that the page draws (``frontend/graph_models.py``).
_GRAPH_NODE_FIELDS = ("node_id", "feature", "layer", "ctx_idx", "feature_type")
_GRAPH_LINK_FIELDS = ("source", "target", "weight")


def _attribution_graph(graph) -> dict | None:
    """circuit-tracer's graph JSON, checked: nodes with ids, layers and positions; links between known nodes."""
    if graph is None:
        return None
    if hasattr(graph, "adjacency") and hasattr(graph, "prune"):  # an AttributionGraph: export it
        from anchorlens.attribution.graph_json import graph_json

        graph = graph_json(graph)
    if not isinstance(graph, dict) or not {"metadata", "nodes", "links"} <= set(graph):
        raise ReportDataError(
            "`attribution_graph` must be an AttributionGraph or circuit-tracer's graph JSON (a dict with "
            f"metadata, nodes and links), got {type(graph).__name__}"
        )
    ids = set()
    for node in graph["nodes"]:
        missing = [f for f in _GRAPH_NODE_FIELDS if f not in node]
        if missing:
            raise ReportDataError(f"attribution graph node {node.get('node_id')!r} lacks {missing}")
        ids.add(node["node_id"])
    for link in graph["links"]:
        if any(f not in link for f in _GRAPH_LINK_FIELDS) or link["source"] not in ids or link["target"] not in ids:
            raise ReportDataError(f"attribution graph link {link} needs source, target (known node ids) and weight")
    if not any(node["feature_type"] == "logit" for node in graph["nodes"]):
        raise ReportDataError("the attribution graph has no logit node: export a graph with graph_json(graph)")
    return json.loads(json.dumps(graph, allow_nan=False))  # plain JSON (a copy; NaN refused)


def _head(head, kurtosis: np.ndarray | None) -> tuple[int, int]:
    try:
        layer, index = (int(x) for x in head)
    except (TypeError, ValueError):
        raise ReportDataError(f"a receiver head must be a (layer, head) pair, got {head!r}") from None
    if kurtosis is not None and not (0 <= layer < kurtosis.shape[0] and 0 <= index < kurtosis.shape[1]):
        raise ReportDataError(
            f"receiver head {(layer, index)} lies outside receiver_kurtosis of shape {kurtosis.shape}"
        )
    return layer, index


def _interval_of(column, metrics) -> bool:
    """True for a ``<metric>_ci_low`` / ``_ci_high`` column whose metric is in the table too."""
    name = str(column)
    for suffix in ("_ci_low", "_ci_high"):
        if name.endswith(suffix) and name[: -len(suffix)] in metrics:
            return True
    return False


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series)  # bools count: shown as 0 / 1


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    """A JSON-able scalar: numpy numbers to Python, NaN / inf to None, anything else to text."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    return str(value)


def _nested(array: np.ndarray | None):
    """A 1-D or 2-D array as nested lists with None for NaN / inf (strict JSON has no NaN)."""
    if array is None:
        return None
    if array.ndim == 1:
        return [_plain(v) for v in array.tolist()]
    return [[_plain(v) for v in row] for row in array.tolist()]


def _from_nested(values) -> np.ndarray | None:
    if values is None:
        return None
    return np.array(values, dtype=float)  # None becomes nan
