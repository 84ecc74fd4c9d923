"""The interactive report: one self-contained HTML page (plus report.json and PNGs) per analysed trace.

The report takes plain data (a Trace, a DataFrame of per-sentence metrics, numpy / torch matrices)
bundled in a ``ReportData``, so it depends on no analysis's result objects:

>>> from anchorlens.report import ReportData, build_report
>>> build_report("out/", ReportData(trace, metrics=df, categories=labels))   # doctest: +SKIP
PosixPath('out/report.html')

Modules: ``data`` (ReportData, checks, JSON), ``transforms`` (pure math for display), ``html`` (the page;
its template, style and script are ``report.html``, ``report.css``, ``report.js``), ``figures`` (PNGs),
``build`` (writes the folder), ``reference`` (report data from the published Thought Anchors traces).
"""

from anchorlens.report.build import build_report
from anchorlens.report.data import CATEGORIES, CATEGORY_COLORS, ReportData, ReportDataError
from anchorlens.report.published import report_data_from_reference

__all__ = [
    "CATEGORIES",
    "CATEGORY_COLORS",
    "ReportData",
    "ReportDataError",
    "build_report",
    "report_data_from_reference",
]
