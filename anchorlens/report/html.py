"""One self-contained HTML page from a ``ReportData``: inline CSS and JS, the data as embedded JSON.

The page makes no network request (no CDN, no web font, no image URL; a Content-Security-Policy of
``default-src 'none'`` makes the browser enforce it). The template, style sheet and script live next to
this module as ``report.html``, ``report.css`` and ``report.js``; ``page_payload`` prepares everything
the script draws (colour ranges, graph edges, display-normalised matrices) so that the arithmetic stays
in tested Python and the script only draws.

>>> html = render_html(data)            # doctest: +SKIP
>>> Path("report.html").write_text(html)  # doctest: +SKIP
"""

from __future__ import annotations

import html as html_lib
import json
import re
from importlib import resources

import numpy as np

from anchorlens.report.data import CATEGORIES, CATEGORY_COLORS, UNLABELLED_COLOR, ReportData
from anchorlens.report.display_math import color_range, rounded, scale_kind, suppression_for_display, top_edges

#: At most this many edges of each kind go into the page (the page's slider picks how many to draw).
MAX_EDGES = 600
#: At most this many edges of the attribution graph (the strongest by |weight|) go into the page.
MAX_ATTRIBUTION_EDGES = 800


def page_payload(data: ReportData) -> dict:
    """Everything the page's script needs, as JSON-able Python (numbers rounded to 4 significant digits)."""
    from anchorlens.versions import __version__

    trace = data.trace
    n = data.n_sentences
    metrics = {}
    intervals = data.interval_table()
    for name, values in data.metric_table().items():
        kind = scale_kind(values)
        vmin, vmax = color_range(values, kind, percentile=98.0)
        metrics[name] = {
            "values": rounded(values), "kind": kind, "vmin": vmin, "vmax": vmax, **_clipped(values, vmin, vmax)
        }
        if name in intervals:  # a 95% interval per sentence: error bars and "[low, high]" in the hover
            metrics[name]["low"], metrics[name]["high"] = (rounded(v) for v in intervals[name])
    return {
        "meta": {
            "title": data.title or "Thought anchors report",
            "model_name": data.model_name,
            "problem": data.problem,
            "answer": data.answer,
            "n_sentences": n,
            "n_tokens": trace.n_tokens,
            "n_prompt_tokens": trace.prompt_token_end,
            "style": trace.style,
            "version": __version__,
        },
        "sentences": {
            "text": trace.sentence_texts(),
            "category": data.categories if data.categories is not None else [None] * n,
            "tokens": [list(span) for span in trace.token_spans],
            "breaks": _breaks(trace),
        },
        "categories": [{"name": c, "color": CATEGORY_COLORS[c]} for c in CATEGORIES],
        "unlabelled_color": UNLABELLED_COLOR,
        "has_categories": data.categories is not None,
        "metrics": metrics,
        "default_metric": data.default_metric(),
        "labels": data.label_table(),
        "graph": _graph(data),
        "heatmaps": {
            "receiver": _receiver_heatmap(data),
            "head_attention": _sentence_heatmap(
                data.head_attention,
                "sequential",
                title=(
                    f"Sentence attention of head L{data.head_attention_head[0]}H{data.head_attention_head[1]}"
                    if data.head_attention_head is not None
                    else "Sentence attention of a receiver head"
                ),
                x_label="key sentence (attended to)",
                y_label="query sentence",
                value_label="mean attention",
                mask="upper",
                # A sentence attends mostly to itself: scale colours by the off-diagonal cells so that
                # attention to earlier sentences (what receiver heads are about) stays visible.
                range_offset=-1,
            ),
            "suppression": _sentence_heatmap(
                suppression_for_display(data.suppression_kl) if data.suppression_kl is not None else None,
                "diverging",
                title="Attention suppression: log KL, row mean subtracted",
                x_label="suppressed sentence j",
                y_label="target sentence i",
                value_label="log(KL) - row mean",
                mask=None,
            ),
            "counterfactual": _sentence_heatmap(
                data.counterfactual_matrix,
                "diverging",
                title="Counterfactual sentence-to-sentence importance",
                x_label="later sentence j",
                y_label="resampled sentence i",
                value_label="M[i, j]",
                mask="lower",
            ),
            "flow": _sentence_heatmap(
                data.flow_matrix,
                "sequential",
                title="Information flow between sentences",
                x_label="source sentence",
                y_label="target sentence",
                value_label="mean flow",
                mask="upper",
                range_offset=-1,  # a sentence draws mostly on itself: scale by the flow from earlier ones
            ),
        },
        "attribution": attribution_layout(data.attribution_graph),
        "receiver_heads": [list(h) for h in data.receiver_heads or []],
        "notes": dict(data.notes),
    }


def render_html(data: ReportData) -> str:
    """The whole report as one HTML string (inline CSS, JS and data)."""
    payload = page_payload(data)
    parts = {
        "TITLE": html_lib.escape(payload["meta"]["title"]),
        "CSS": _asset("report.css"),
        "JS": _asset("report.js"),
        "DATA": embed_json(payload),
    }
    # One pass over the template: text inserted for one marker is never scanned for another.
    return re.sub(r"\{\{(TITLE|CSS|JS|DATA)\}\}", lambda m: parts[m.group(1)], _asset("report.html"))


def embed_json(payload) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``</script>`` or ``<!--`` can appear.

    ``<``, ``>`` and ``&`` only occur inside JSON strings, where ``\\u003c`` etc. mean the same thing.
    """
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        text = text.replace(raw, f"\\u{ord(raw):04x}")
    return text


# ---------------------------------------------------------------------- pieces of the payload


def _asset(name: str) -> str:
    return resources.files("anchorlens.report").joinpath(name).read_text(encoding="utf-8")


def _breaks(trace) -> list[int]:
    """Per sentence, what separates it from the previous one in the text: 0 a space, 1 a line, 2 a paragraph."""
    breaks = []
    previous_end = None
    for sentence in trace.sentences:
        gap = trace.cot[previous_end : sentence.start] if previous_end is not None else ""
        breaks.append(2 if "\n\n" in gap or "\r\n\r\n" in gap else 1 if "\n" in gap else 0)
        previous_end = sentence.end
    return breaks


def _graph(data: ReportData) -> dict | None:
    n = data.n_sentences
    limit = min(MAX_EDGES, 4 * n)
    suppression = counterfactual = None
    if data.suppression_kl is not None:
        shown = suppression_for_display(data.suppression_kl)
        suppression = [[a, b, _r(v)] for a, b, v in top_edges(shown, limit, "lower")]
    if data.counterfactual_matrix is not None:
        counterfactual = [[a, b, _r(v)] for a, b, v in top_edges(data.counterfactual_matrix, limit, "upper")]
    if suppression is None and counterfactual is None:
        return None
    return {
        "suppression": suppression,
        "counterfactual": counterfactual,
        "default_edges": int(min(40, max(8, n))),
    }


def attribution_layout(graph: dict | None, max_edges: int = MAX_ATTRIBUTION_EDGES) -> dict | None:
    """Where the page draws each node of circuit-tracer's graph JSON, and its strongest edges.

    Rows: token embeddings at the bottom (row 0), layer l's features and errors at row l + 1, the logits on top;
    columns: token positions. Nodes sharing a cell are spread across it (``x`` is a fraction of the width).
    Edges are ``[source, target, weight]`` with node indices, strongest |weight| first.
    """
    if graph is None:
        return None
    tokens = list(graph["metadata"].get("prompt_tokens") or [])
    nodes = graph["nodes"]
    n_pos = max([len(tokens)] + [int(n["ctx_idx"]) + 1 for n in nodes])
    logit_layers = [int(n["layer"]) for n in nodes if n["feature_type"] == "logit"]
    top_row = logit_layers[0] if logit_layers else 1 + max(int(n["layer"]) for n in nodes if n["layer"] != "E")
    kinds = {"cross layer transcoder": "feature", "mlp reconstruction error": "error", "embedding": "token",
             "logit": "logit"}

    def row(node) -> int:
        return 0 if node["layer"] == "E" else top_row if node["feature_type"] == "logit" else int(node["layer"]) + 1

    cells: dict[tuple[int, int], list[int]] = {}
    for i, node in enumerate(nodes):
        cells.setdefault((row(node), int(node["ctx_idx"])), []).append(i)
    # A column is as wide as its crowdest cell needs (at least 3 node slots): one crowded position does not
    # stretch the others.
    slots = [3] * n_pos
    for (_, pos), members in cells.items():
        slots[pos] = max(slots[pos], len(members))
    edges = [0]
    for width in slots:
        edges.append(edges[-1] + width)
    total = edges[-1]
    placed = [None] * len(nodes)
    for (r, pos), members in cells.items():
        # logits keep their order (by probability); others left to right by influence rank (lower = stronger)
        if nodes[members[0]]["feature_type"] != "logit":
            members = sorted(members, key=lambda i: nodes[i].get("influence") or 0.0)
        for k, i in enumerate(members):
            placed[i] = (r, (edges[pos] + (k + 0.5) * slots[pos] / len(members)) / total)
    index = {node["node_id"]: i for i, node in enumerate(nodes)}
    links = sorted(graph["links"], key=lambda link: -abs(link["weight"]))[:max_edges]
    out_nodes = []
    for i, node in enumerate(nodes):
        kind = kinds.get(node["feature_type"], node["feature_type"])
        pos = int(node["ctx_idx"])
        entry = {"kind": kind, "row": placed[i][0], "x": _r(placed[i][1]), "pos": pos,
                 "token": tokens[pos] if pos < len(tokens) else "", "id": node["node_id"]}
        if kind in ("feature", "error"):
            entry["layer"] = int(node["layer"])
        if kind == "feature":  # node_id is "{layer}_{feature}_{position}"
            entry["feature"] = int(node["node_id"].split("_")[1])
        if node.get("activation") is not None:
            entry["activation"] = _r(node["activation"])
        if node.get("influence") is not None:
            entry["influence"] = _r(node["influence"])
        if kind == "logit":
            entry["label"] = node.get("clerp") or str(node["feature"])
            entry["probability"] = _r(node.get("token_prob") or 0.0)
        out_nodes.append(entry)
    top = max((abs(link["weight"]) for link in links), default=1.0) or 1.0
    return {
        "nodes": out_nodes,
        "edges": [[index[link["source"]], index[link["target"]], _r(link["weight"])] for link in links],
        "max_weight": _r(top),
        "n_links": len(graph["links"]),
        "rows": top_row + 1,
        "n_pos": n_pos,
        "column_edges": [_r(e / total) for e in edges],  # fractions of the width
        "slots": total,
        "tokens": tokens,
        "prompt": graph["metadata"].get("prompt", ""),
    }


def _receiver_heatmap(data: ReportData) -> dict | None:
    if data.receiver_kurtosis is None:
        return None
    kurtosis = data.receiver_kurtosis
    vmin, vmax = color_range(kurtosis, "sequential", percentile=100.0)
    return {
        "values": rounded(kurtosis),
        "kind": "sequential",
        "vmin": vmin,
        "vmax": vmax,
        **_clipped(kurtosis, vmin, vmax),
        "title": "Kurtosis of each head's vertical attention scores",
        "x_label": "head",
        "y_label": "layer",
        "value_label": "kurtosis",
        "row_prefix": "layer ",
        "col_prefix": "head ",
        "sentence_axes": False,
        "highlight": [list(h) for h in data.receiver_heads or []],
    }


def _sentence_heatmap(matrix, kind, title, x_label, y_label, value_label, mask, range_offset=None) -> dict | None:
    """A sentence x sentence heatmap; ``mask`` blanks the triangle that carries no meaning.

    With ``range_offset`` the colour range comes from the cells below that diagonal only
    (``-1``: strictly below the main diagonal); the others may saturate.
    """
    if matrix is None:
        return None
    matrix = np.array(matrix, dtype=float)
    if mask == "upper":
        matrix[np.triu_indices_from(matrix, k=1)] = np.nan
    elif mask == "lower":
        matrix[np.tril_indices_from(matrix, k=0)] = np.nan
    ranged = matrix if range_offset is None or len(matrix) < 2 else matrix[np.tril_indices_from(matrix, k=range_offset)]
    vmin, vmax = color_range(ranged, kind, percentile=99.0)
    return {
        "values": rounded(matrix),
        "kind": kind,
        "vmin": vmin,
        "vmax": vmax,
        **_clipped(matrix, vmin, vmax),
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "value_label": value_label,
        "row_prefix": "sentence ",
        "col_prefix": "sentence ",
        "sentence_axes": True,
        "highlight": [],
    }


def _clipped(values, vmin: float, vmax: float) -> dict:
    """Whether some values lie beyond the colour range (the page then writes the ends as "≤" / "≥")."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return {"clipped_low": False, "clipped_high": False}
    return {"clipped_low": bool(finite.min() < vmin), "clipped_high": bool(finite.max() > vmax)}


def _r(value: float) -> float:
    return float(f"{value:.4g}")
