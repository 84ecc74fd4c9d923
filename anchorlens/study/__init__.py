"""Studies: from one chain of thought to a dataset, as the paper works.

``study(model, traces, out_dir=...)`` runs ``analyze`` on every trace (a folder of published trace folders, or
``Trace`` objects), each into its own keyed folder, and aggregates over traces into a ``Study``: receiver heads
by mean kurtosis over traces, their split-half reliability, every sentence with its category, importance and
views, category means with intervals over traces, view correlations, and reasoning vs base model.
"""

from typing import TYPE_CHECKING

from anchorlens.lazy import lazy_exports

if TYPE_CHECKING:
    from anchorlens.study.collect import aggregate_folder
    from anchorlens.study.explain import Explained, explain_importance
    from anchorlens.study.discovery import StudyInputError, find_trace_folders, published_trace
    from anchorlens.study.result import Study
    from anchorlens.study.runner import study


_EXPORTS = {
    "aggregate_folder": "anchorlens.study.collect",
    "Explained": "anchorlens.study.explain",
    "explain_importance": "anchorlens.study.explain",
    "StudyInputError": "anchorlens.study.discovery",
    "find_trace_folders": "anchorlens.study.discovery",
    "published_trace": "anchorlens.study.discovery",
    "Study": "anchorlens.study.result",
    "study": "anchorlens.study.runner",
}

__all__ = ["study", "Study", "Explained", "explain_importance", "aggregate_folder", "StudyInputError",
           "find_trace_folders", "published_trace"]

lazy_exports(__name__, _EXPORTS)
