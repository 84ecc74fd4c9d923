"""The report without a browser: its data checks, display math, HTML, JSON and PNG files.

Ground truth: the published Thought Anchors data (sentences, labels, metrics) must reach the page
unchanged, and planted matrices must give the edges and normalisation docs/methods.md 1.6 defines.
The real-browser checks are in test_report_browser.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from anchorlens import ReportData, Trace, build_report
from anchorlens.errors import AnchorlensError
from anchorlens.report import CATEGORIES, ReportDataError, report_data_from_reference
from anchorlens.report.data import SECTIONS
from anchorlens.report.html import embed_json, page_payload, render_html
from anchorlens.report.display_math import color_range, rounded, suppression_for_display, top_edges
from conftest import REFERENCE, load_json

ORACLE_GRAPH = REFERENCE.parent.parent / "tests" / "data" / "attribution" / "tiny_llama_relu.json"  # circuit-tracer's
SMALL = REFERENCE / "deepseek-r1-distill-llama-8b" / "incorrect_base_solution" / "problem_2189"  # 24 sentences
COT = "First we add 2 and 3. That gives 5. Wait, is that right? Yes, 5 is correct. So the answer is 5."


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def small_trace(tokenizer) -> Trace:
    return Trace.from_text(tokenizer, COT, prompt="Q: what is 2 + 3?\n")


def embedded_payload(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match, "the page must carry its data in a JSON script tag"
    return json.loads(match.group(1))


# ---------------------------------------------------------------------- pure display math


def test_suppression_display_is_log_kl_minus_row_mean_over_earlier_sentences():
    kl = np.array(
        [
            [9.0, 9.0, 9.0, 9.0],
            [np.e, 9.0, 9.0, 9.0],
            [1.0, np.e**3, 9.0, 9.0],
            [np.e**2, np.e**4, np.e**6, 9.0],
        ]
    ) - 1e-9
    shown = suppression_for_display(kl)
    assert np.isnan(shown[np.triu_indices(4)]).all(), "diagonal and upper triangle carry no meaning"
    np.testing.assert_allclose(shown[1, 0], 0.0, atol=1e-6)  # a single earlier sentence: its own mean
    np.testing.assert_allclose(shown[2, :2], [-1.5, 1.5], atol=1e-6)  # log 1e-9 ~ 0 and 3, mean 1.5
    np.testing.assert_allclose(shown[3, :3], [-2.0, 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(np.nanmean(shown[1:], axis=1), 0.0, atol=1e-6)


def test_top_edges_finds_planted_edges_in_order_and_direction():
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 0.1, (6, 6))
    m[4, 1] = 5.0  # lower triangle: target 4, suppressed 1 -> edge 1 -> 4
    m[5, 2] = 3.0
    m[1, 3] = 9.0  # upper triangle: ignored by part="lower"
    m[5, 0] = np.nan
    lower = top_edges(m, 2, "lower")
    assert [(a, b) for a, b, _ in lower] == [(1, 4), (2, 5)]
    assert lower[0][2] == 5.0
    upper = top_edges(m, 1, "upper")
    assert upper == [(1, 3, 9.0)]
    assert all(a < b for a, b, _ in top_edges(m, 100, "lower") + top_edges(m, 100, "upper"))
    negative = -np.abs(m)
    assert top_edges(negative, 10, "lower") == [], "non-positive entries are never edges"
    with pytest.raises(ValueError):
        top_edges(m, 1, "diagonal")


def test_color_range_is_robust_and_symmetric_for_signed_data():
    values = np.concatenate([np.linspace(-1, 1, 199), [1000.0]])
    low, high = color_range(values, "diverging", percentile=99)
    assert low == -high and 0.9 < high < 20, "one outlier must not wash out the scale"
    assert color_range(np.array([np.nan, np.nan]), "sequential") == (0.0, 1.0)
    assert color_range(np.array([2.0, 2.0]), "sequential") == (2.0, 3.0)
    assert rounded(np.array([[1 / 3, np.nan], [np.inf, 123456.0]])) == [[0.3333, None], [None, 123500.0]]


# ---------------------------------------------------------------------- ReportData checks


def test_report_data_refuses_data_that_does_not_fit_the_trace(small_trace):
    n = small_trace.n_sentences
    with pytest.raises(ReportDataError, match="one row per sentence"):
        ReportData(small_trace, metrics=pd.DataFrame({"x": range(n + 1)}))
    with pytest.raises(ReportDataError, match="not a taxonomy tag"):
        ReportData(small_trace, categories=["planning"] * n)
    with pytest.raises(ReportDataError, match="one label"):
        ReportData(small_trace, categories=["plan_generation"] * (n - 1))
    with pytest.raises(ReportDataError, match=r"shape \(3, 3\)"):
        ReportData(small_trace, suppression_kl=np.zeros((3, 3)))
    with pytest.raises(ReportDataError, match="not log"):
        ReportData(small_trace, suppression_kl=-np.ones((n, n)))
    with pytest.raises(ReportDataError, match="outside receiver_kurtosis"):
        ReportData(small_trace, receiver_kurtosis=np.zeros((2, 3)), receiver_heads=[(2, 0)])
    with pytest.raises(ReportDataError, match=r"flow_matrix.*shape \(2, 2\)"):
        ReportData(small_trace, flow_matrix=np.zeros((2, 2)))
    with pytest.raises(ReportDataError, match="circuit-tracer's graph JSON"):
        ReportData(small_trace, attribution_graph=[1, 2])
    graph = load_json(ORACLE_GRAPH)
    with pytest.raises(ReportDataError, match="known node ids"):
        ReportData(small_trace, attribution_graph=graph | {"links": graph["links"] + [{"source": "x", "target": "y",
                                                                                      "weight": 1.0}]})
    with pytest.raises(ReportDataError, match="no logit node"):
        ReportData(small_trace, attribution_graph=graph | {
            "nodes": [n for n in graph["nodes"] if n["feature_type"] != "logit"], "links": []})
    with pytest.raises(ReportDataError, match="unknown sections"):
        ReportData(small_trace, notes={"bogus": "x"})
    with pytest.raises(ReportDataError, match="Trace"):
        ReportData("some text")
    with pytest.raises(ReportDataError, match="primary_metric"):
        ReportData(small_trace, metrics=pd.DataFrame({"a": np.ones(n)}), primary_metric="b")
    assert issubclass(ReportDataError, AnchorlensError)


def test_report_data_accepts_torch_tensors_and_published_tag_lists(small_trace):
    n = small_trace.n_sentences
    data = ReportData(
        small_trace,
        suppression_kl=torch.rand(n, n, dtype=torch.bfloat16),
        receiver_scores=torch.arange(n),
        receiver_kurtosis=torch.zeros(3, 4),
        receiver_heads=[torch.tensor([1, 2])],
        head_attention=torch.eye(n),
        categories=[["plan_generation"]] + [None] * (n - 1),
    )
    assert isinstance(data.suppression_kl, np.ndarray) and data.suppression_kl.dtype == np.float64
    assert data.receiver_heads == [(1, 2)] and data.head_attention_head == (1, 2)
    assert data.categories[0] == "plan_generation"
    assert data.metric_names() == ["receiver_score"] and data.default_metric() == "receiver_score"


# ---------------------------------------------------------------------- ground truth: published data


def test_published_sentences_labels_and_metrics_reach_the_page_unchanged(tokenizer):
    chunks = load_json(SMALL / "chunks_labeled.json")
    data = report_data_from_reference(SMALL, tokenizer)
    assert data.trace.sentence_texts() == [c["chunk"] for c in chunks]
    assert data.categories == [c["function_tags"][0] for c in chunks]
    payload = embedded_payload(render_html(data))
    assert payload["sentences"]["text"] == [c["chunk"] for c in chunks]
    assert payload["sentences"]["category"] == [c["function_tags"][0] for c in chunks]
    assert payload["default_metric"] == "counterfactual_importance_kl"
    for name in ("resampling_importance_accuracy", "counterfactual_importance_kl", "forced_importance_kl"):
        np.testing.assert_allclose(payload["metrics"][name]["values"], [c[name] for c in chunks], rtol=1e-3, atol=1e-12)
    assert payload["labels"]["summary"] == [c["summary"] for c in chunks]
    assert payload["metrics"]["resampling_importance_accuracy"]["kind"] == "diverging"
    assert payload["meta"]["n_sentences"] == len(chunks)
    assert set(payload["heatmaps"]) == {"receiver", "head_attention", "suppression", "counterfactual", "flow"}
    assert all(heatmap is None for heatmap in payload["heatmaps"].values())
    assert payload["graph"] is None and payload["attribution"] is None


def test_reference_loader_explains_a_wrong_folder(tmp_path, tokenizer):
    with pytest.raises(ReportDataError, match="published trace folder"):
        report_data_from_reference(tmp_path, tokenizer)


# ---------------------------------------------------------------------- the files


def planted(data_trace: Trace) -> dict:
    """Matrices with one planted strongest edge of each kind and a known top receiver head."""
    n = data_trace.n_sentences
    kl = np.full((n, n), 0.01)
    kl[n - 1, 1] = 50.0  # suppressing sentence 1 moves the last sentence most
    cf = np.zeros((n, n))
    cf[0, 2] = 0.7  # resampling sentence 0 changes whether sentence 2 appears
    kurtosis = np.zeros((4, 3))
    kurtosis[2, 1] = 7.0
    return {
        "suppression_kl": kl,
        "counterfactual_matrix": cf,
        "receiver_kurtosis": kurtosis,
        "receiver_heads": [(2, 1), (3, 0)],
        "head_attention": np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None],
        "receiver_scores": np.linspace(0, 1, n),
        "flow_matrix": np.tril(np.full((n, n), 0.1)) + np.diag(np.full(n, 0.5)),
        "attribution_graph": load_json(ORACLE_GRAPH),
    }


@pytest.mark.slow
def test_build_report_writes_a_self_contained_page_json_and_pngs(tmp_path, small_trace):
    from PIL import Image

    n = small_trace.n_sentences
    metrics = pd.DataFrame({"resampling_importance_accuracy": np.linspace(-0.2, 0.3, n), "note": ["a"] * n})
    data = ReportData(
        small_trace,
        title="A <b>small</b> report",
        problem="What is 2 + 3?",
        answer="5",
        metrics=metrics,
        categories=[
            "plan_generation", "active_computation", "uncertainty_management", "self_checking", "final_answer_emission"
        ],
        notes={"suppression": "planted matrix (test)"},
        **planted(small_trace),
    )
    page = build_report(tmp_path / "out", data, progress=False)
    assert page == tmp_path / "out" / "report.html"
    names = sorted(p.name for p in page.parent.iterdir())
    assert names == sorted(
        ["report.html", "report.json", "importance.png", "receiver_kurtosis.png", "head_attention.png",
         "suppression.png", "counterfactual.png", "flow.png", "attribution_graph.json"]
    )
    assert load_json(page.parent / "attribution_graph.json") == load_json(ORACLE_GRAPH), "circuit-tracer's file back"
    for png in page.parent.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
            assert len(np.unique(pixels, axis=0)) > 20, f"{png.name} looks blank"

    html = page.read_text()
    # Offline by construction: nothing in the page points outside it (the SVG namespace is a name, not a URL).
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    code = html.replace('"http://www.w3.org/2000/svg"', "")
    for needle in ("http://", "https://", "src=", "<link", "@import", "url(", "fetch(", "XMLHttpRequest", "@font-face"):
        assert needle not in code, f"the page must not reference external resources ({needle!r} found)"
    assert "<title>A &lt;b&gt;small&lt;/b&gt; report</title>" in html
    markup = html.split('<script type="application/json"')[0]
    assert re.findall(r'data-section="(\w+)"', markup) == list(SECTIONS), "one element per section, in order"

    payload = embedded_payload(html)
    assert payload == json.loads(embed_json(page_payload(data)))
    assert payload["graph"]["suppression"][0][:2] == [1, n - 1], "the planted suppression edge comes first"
    assert payload["graph"]["counterfactual"][0] == [0, 2, 0.7]
    assert payload["heatmaps"]["receiver"]["highlight"] == [[2, 1], [3, 0]]
    assert payload["heatmaps"]["head_attention"]["title"].endswith("L2H1")
    suppression = np.array(payload["heatmaps"]["suppression"]["values"], dtype=float)
    assert np.isnan(suppression[np.triu_indices(n)]).all()
    assert payload["metrics"]["receiver_score"]["values"][-1] == 1.0
    flow = np.array(payload["heatmaps"]["flow"]["values"], dtype=float)
    assert np.isnan(flow[np.triu_indices(n, k=1)]).all() and flow[0, 0] == 0.6 and flow[n - 1, 0] == 0.1
    assert payload["notes"] == {"suppression": "planted matrix (test)"}

    again = ReportData.load(page.parent / "report.json")
    pd.testing.assert_frame_equal(again.metrics, data.metrics)
    for name in ("suppression_kl", "counterfactual_matrix", "receiver_kurtosis", "head_attention", "receiver_scores",
                 "flow_matrix"):
        np.testing.assert_allclose(getattr(again, name), getattr(data, name))
    assert again.attribution_graph == data.attribution_graph
    assert again.trace.to_dict() == data.trace.to_dict() and again.categories == data.categories
    assert again.receiver_heads == data.receiver_heads and again.title == data.title


def test_attribution_graph_from_circuit_tracers_json_is_drawn_by_layer_and_position(small_trace):
    """circuit-tracer 0.5.0's own export (tiny Llama, 2 layers): each node in its layer's row and its position's
    column, the logits on top, the embeddings below, and the strongest links with their weights."""
    graph = load_json(ORACLE_GRAPH)
    layout = page_payload(ReportData(small_trace, attribution_graph=graph))["attribution"]
    n_pos = len(graph["metadata"]["prompt_tokens"])
    assert layout["rows"] == 4 and layout["n_pos"] == n_pos == 6 and layout["tokens"] == graph["metadata"]["prompt_tokens"]
    assert [n["id"] for n in layout["nodes"]] == [n["node_id"] for n in graph["nodes"]]
    for ours, theirs in zip(layout["nodes"], graph["nodes"]):
        kind = theirs["feature_type"]
        expected_row = {"embedding": 0, "logit": 3}[kind] if kind in ("embedding", "logit") else int(theirs["layer"]) + 1
        assert ours["row"] == expected_row, theirs
        pos = theirs["ctx_idx"]
        assert layout["column_edges"][pos] < ours["x"] < layout["column_edges"][pos + 1], "in its position's column"
        assert ours["token"] == graph["metadata"]["prompt_tokens"][pos]
        if kind == "cross layer transcoder":
            layer, feature, position = (int(x) for x in theirs["node_id"].split("_"))
            assert (ours["layer"], ours["feature"], ours["pos"]) == (layer, feature, position)
            assert ours["activation"] == pytest.approx(theirs["activation"], rel=1e-3)
        if kind == "logit":
            assert ours["label"] == theirs["clerp"] and ours["pos"] == n_pos - 1
    strongest = sorted(graph["links"], key=lambda link: -abs(link["weight"]))
    ids = [n["node_id"] for n in graph["nodes"]]
    assert len(layout["edges"]) == min(len(strongest), 800) and layout["n_links"] == len(graph["links"])
    for (s, t, w), link in zip(layout["edges"], strongest):
        assert (ids[s], ids[t]) == (link["source"], link["target"]) and w == pytest.approx(link["weight"], rel=1e-3)
    assert layout["max_weight"] == pytest.approx(abs(strongest[0]["weight"]), rel=1e-3)
    assert layout["column_edges"][0] == 0 and layout["column_edges"][-1] == 1
    assert np.all(np.diff(layout["column_edges"]) > 0)


def test_text_cannot_break_out_of_the_embedded_json(tmp_path, tokenizer):
    hostile = "We write </script><script>document.title='pwned'</script> here. Then <!-- a comment. Done & dusted."
    trace = Trace.from_text(tokenizer, hostile)
    html = render_html(ReportData(trace))
    assert "</script><script>document" not in html and "<!--" not in html.split("<body>")[1]
    assert embedded_payload(html)["sentences"]["text"] == trace.sentence_texts()


def test_a_bare_trace_gives_a_page_and_json_but_no_figures(tmp_path, small_trace):
    page = build_report(tmp_path, ReportData(small_trace), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]
    payload = embedded_payload(page.read_text())
    assert payload["metrics"] == {} and payload["default_metric"] is None and payload["graph"] is None
    assert payload["has_categories"] is False


def test_build_report_refuses_other_objects_and_files(tmp_path, small_trace):
    with pytest.raises(ReportDataError, match="ReportData"):
        build_report(tmp_path, small_trace)
    file = tmp_path / "taken"
    file.write_text("")
    with pytest.raises(AnchorlensError, match="is a file"):
        build_report(file, ReportData(small_trace))


def test_dataframe_and_plot(small_trace):
    import matplotlib

    matplotlib.use("Agg")
    n = small_trace.n_sentences
    data = ReportData(
        small_trace,
        metrics=pd.DataFrame(
            {"sentence": range(n), "resampling_importance_kl": np.arange(n, dtype=float), "flag": [True] * n}
        ),
        categories=[CATEGORIES[i % 8] for i in range(n)],
    )
    frame = data.to_dataframe()
    assert list(frame.columns) == [
        "sentence", "text", "token_start", "token_end", "category", "resampling_importance_kl", "flag"
    ]
    assert frame["text"].tolist() == small_trace.sentence_texts()
    ax = data.plot()
    assert [round(p.get_height()) for p in ax.patches] == list(range(n))
    with pytest.raises(ReportDataError, match="choose one of"):
        data.plot("nope")


def test_json_round_trip_keeps_numeric_columns_that_are_all_missing(tmp_path, small_trace):
    n = small_trace.n_sentences
    metrics = pd.DataFrame({"a": [np.nan] * n, "b": np.arange(n), "c": ["x"] * n})
    path = ReportData(small_trace, metrics=metrics).save(tmp_path / "r.json")
    again = ReportData.load(path)
    pd.testing.assert_frame_equal(again.metrics, metrics)
    assert again.metric_names() == ["a", "b"]
    with pytest.raises(ReportDataError, match="does not exist"):
        ReportData.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ReportDataError, match="report.json"):
        ReportData.load(tmp_path / "other.json")


def test_confidence_intervals_become_error_bars_and_hover_text_not_metrics(small_trace):
    import matplotlib

    from anchorlens.report.html import page_payload

    matplotlib.use("Agg")
    n = small_trace.n_sentences
    values = np.linspace(-0.5, 0.5, n)
    data = ReportData(small_trace, metrics=pd.DataFrame({
        "accuracy": values, "accuracy_ci_low": values - 0.1, "accuracy_ci_high": values + 0.2,
        "orphan_ci_low": values}))
    assert data.metric_names() == ["accuracy", "orphan_ci_low"], "an interval without its metric stays a metric"
    low, high = data.interval_table()["accuracy"]
    np.testing.assert_allclose(high - low, 0.3)
    spec = page_payload(data)["metrics"]["accuracy"]
    np.testing.assert_allclose(np.array(spec["high"]) - np.array(spec["low"]), 0.3, atol=1e-3)
    ax = data.plot("accuracy")
    (whiskers,) = ax.collections
    segments = whiskers.get_segments()
    assert len(segments) == n and all(np.isclose(seg[1, 1] - seg[0, 1], 0.3) for seg in segments)
