"""``build_report``: write a report folder, ``report.html`` + ``report.json`` + PNG figures.

>>> from anchorlens import ReportData, build_report
>>> page = build_report("out/", ReportData(trace, metrics=df, categories=labels))   # doctest: +SKIP
>>> page.name
'report.html'
"""

from __future__ import annotations

from pathlib import Path


from anchorlens.errors import AnchorlensError
from anchorlens.report.data import ReportData, ReportDataError
from anchorlens.report.figures import report_figures
from anchorlens.report.html import render_html
from anchorlens.progress import progress_bar


def build_report(out_dir: str | Path, data: ReportData, figures: bool = True, progress: bool = True) -> Path:
    """Write the report for ``data`` into ``out_dir`` and return the path of ``report.html``.

    Files written (existing ones are replaced):

    - ``report.html``: one self-contained interactive page (opens offline, loads nothing);
    - ``report.json``: all the data (``ReportData.load`` reads it back, so a report can be rebuilt);
    - ``attribution_graph.json``: the attribution graph in circuit-tracer's format (for its frontend), if given;
    - ``importance.png``, ``receiver_kurtosis.png``, ``head_attention.png``, ``suppression.png``,
      ``counterfactual.png``, ``flow.png``: those the data allows (skip them all with ``figures=False``).

    A bare trace gives a page whose analyses all say "not computed":

    >>> build_report("report/", ReportData(trace))   # doctest: +SKIP
    """
    if not isinstance(data, ReportData):
        raise ReportDataError(
            f"build_report needs a ReportData, got {type(data).__name__}: wrap your results, e.g. "
            "ReportData(trace, metrics=dataframe, suppression_kl=matrix)"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AnchorlensError(f"{out} is a file: pass a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    data.save(out / "report.json")
    if data.attribution_graph is not None:
        import json

        (out / "attribution_graph.json").write_text(json.dumps(data.attribution_graph, indent=1))
    page = out / "report.html"
    tmp = page.with_name(page.name + ".tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(page)
    if figures:
        drawn = report_figures(data)
        for stem, figure in progress_bar(drawn.items(), desc="report figures", total=len(drawn), progress=progress, disable=None):
            figure.savefig(out / f"{stem}.png", dpi=110)
    return page
