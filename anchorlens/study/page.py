"""The study's page: one self-contained HTML file with the study's figures and tables, linking each trace's own
report (built by ``analyze`` from its saved results; nothing is recomputed here)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { border: 1px solid #ccc; padding: 2px 6px; }
th { background: #f3f3f3; } img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _table(frame, digits: int = 3) -> str:
    return frame.to_html(index=False, float_format=lambda x: f"{x:.{digits}g}", na_rep="", border=0)


def write_study_page(study, out_dir: str | Path) -> Path:
    """Write ``study.html`` into ``out_dir`` (the study's folder) and return its path."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    esc = html.escape
    parts = [f"<h1>Study: {esc(str(study.model_name))}, {len(study.traces)} traces</h1>"]
    low, high = study.reliability_ci
    parts.append(f"<p>Receiver heads: the {len(study.receiver_heads)} heads of highest mean kurtosis over traces "
                 f"(layer 0 excluded): {esc(', '.join(f'L{l}H{h}' for l, h in study.receiver_heads))}. Split-half "
                 f"reliability (Pearson r of the heads' mean kurtosis, even- against odd-numbered traces): "
                 f"<b>{study.reliability:.2f}</b> [{low:.2f}, {high:.2f}] (95% jackknife interval over traces).</p>")
    if study.missing:
        items = "".join(f"<li>{esc(name)}: {esc(why)}</li>" for name, why in study.missing.items())
        parts.append(f"<p class='note'>Missing from the aggregation:</p><ul class='note'>{items}</ul>")
    if len(study.traces):
        figure = study.plot()
        parts.append(f"<img alt='study figures' src='data:image/png;base64,{_png(figure)}'>")
        plt.close(figure)
    if "category" in study.sentences and len(study.sentences):
        table = study.by_category(n_bootstrap=1000)
        keep = ["category", "n_sentences", "n_traces", "position", "shown"] + [c for c in table.columns if c.startswith(
            ("receiver_score", "counterfactual_importance_kl", "resampling_importance_accuracy"))]
        definition = table.attrs["definition"]
        parts.append("<h2>By category (the Thought Anchors definition: " +
                     ("convergence filter, " if definition["convergence"] else "") +
                     f"mean per trace, then over traces; ± SE and 95% bootstrap interval over traces; "
                     f"{definition['n_sentences_kept']} of {definition['n_sentences']} sentences)</h2>" +
                     _table(table[keep]))
    if len(study.sentences):
        correlations = study.view_correlations(n_bootstrap=500)
        parts.append("<h2>View correlations, pooled over all sentences (Spearman, 95% interval)</h2>" +
                     _table(correlations[correlations.scope == "pooled"].drop(columns="scope")))
    if study.base_kurtosis is not None:
        comparison = study.base_comparison()
        rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in comparison.items())
        parts.append(f"<h2>Reasoning vs base model</h2><table>{rows}</table>")
    links = "".join(f"<li><a href='traces/{esc(name)}/report.html'>{esc(name)}</a></li>" for name in study.traces)
    parts.append(f"<h2>Each trace's own report</h2><ul>{links}</ul>")
    page = out / "study.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>anchorlens study</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>", encoding="utf-8")
    return page
