"""Views of an attribution graph: circuit-tracer's frontend JSON, the plot, sentences of a chain of thought."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import matplotlib

matplotlib.use("Agg")

import anchorlens as al  # noqa: E402
from attribution_cases import CASES, case_model, case_transcoders  # noqa: E402
from anchorlens.attribution.attribute import attribution_graph, trace_attribution  # noqa: E402
from anchorlens.attribution.graph_json import graph_json  # noqa: E402
from anchorlens.attribution.transcoders import random_transcoders  # noqa: E402

DATA = Path(__file__).parent / "data" / "attribution"



def assert_same_nodes_and_links(ours: dict, ref: dict) -> None:
    """Two graph JSON files have the same node fields (floats within 1e-4 relative) and the same links, in order."""
    for a, b in zip(ours["nodes"], ref["nodes"]):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], float):
                assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), key
            else:
                assert a[key] == b[key], key
    assert [(x["source"], x["target"]) for x in ours["links"]] == [(x["source"], x["target"]) for x in ref["links"]]

def test_json_equals_circuit_tracers_create_graph_files(tmp_path, one_torch_thread):
    """The same nodes (ids, fields, order) and links as circuit-tracer 0.5.0's own export of the same graph."""
    case = CASES["tiny_llama_relu"]
    graph = attribution_graph(case_model(case), case_transcoders(case), case["prompt"], progress=False)
    ours = json.loads(graph.to_json(tmp_path / "g.json", slug="oracle").read_text())
    ref = json.loads((DATA / "tiny_llama_relu.json").read_text())
    assert ours["metadata"] | {"scan": None} == ref["metadata"] | {"scan": None}
    assert ours["qParams"] == ref["qParams"]
    assert [n["node_id"] for n in ours["nodes"]] == [n["node_id"] for n in ref["nodes"]]
    assert_same_nodes_and_links(ours, ref)
    assert all(abs(a["weight"] - b["weight"]) <= 1e-4 * max(1.0, abs(b["weight"]))
               for a, b in zip(ours["links"], ref["links"]))
    assert len(ours["links"]) > 100


@pytest.mark.slow
def test_plot_and_tables(tiny_llama, one_torch_thread):
    graph = attribution_graph(tiny_llama, random_transcoders(2, 64, 16), "The capital of France is", progress=False)
    ax = graph.plot()
    assert ax.get_title().startswith("attribution graph")
    assert len(graph.edges()) > 0 and len(graph.to_dataframe()) == graph.adjacency.shape[0]


def test_sentences_of_a_trace(tiny_llama, one_torch_thread):
    trace = al.Trace.from_text(tiny_llama, "We need 6 times 7. 6 * 7 = 42. So the answer is 42",
                               prompt="What is 6 times 7?")
    graph, table = trace_attribution(tiny_llama, random_transcoders(2, 64, 16), trace, progress=False)
    assert len(table) == trace.n_sentences and list(table["text"]) == trace.sentence_texts()
    total = graph.influence()[: graph.n_features].sum() + graph.influence()[graph.token_slice][1:].sum()
    covered = table["influence"].sum()
    assert 0 < covered <= total + 1e-6  # sentences hold part of the influence (the prompt holds the rest)


def test_sentence_attribution_to_one_logit_equals_the_matrix_inverse(one_torch_thread):
    """Influence on one logit node: w (N + N^2 + ...) = w N (I - N)^-1 computed directly (N: row-normalised |A|)."""
    import torch

    case = CASES["tiny_llama_relu"]
    graph = attribution_graph(case_model(case), case_transcoders(case), case["prompt"], progress=False)
    A = graph.adjacency.double().abs()
    N = A / A.sum(1, keepdim=True).clamp(min=1e-10)
    token = int(graph.logit_token_ids[1])  # not the top one: a weighting by probability would differ
    w = torch.zeros(len(N), dtype=torch.float64)
    w[graph.logit_slice.start + 1] = 1.0
    influence = w @ N @ torch.linalg.inv(torch.eye(len(N), dtype=torch.float64) - N)
    spans = [(0, 2), (2, 4), (4, 6)]
    table = graph.sentence_attribution(spans, logit_token=token)
    feat_pos = graph.active_features[:, 1]
    for (start, stop), (_, row) in zip(spans, table.iterrows()):
        tokens = influence[graph.token_slice][start:stop].sum()
        features = influence[: graph.n_features][(feat_pos >= start) & (feat_pos < stop)].sum()
        assert abs(row["token_influence"] - float(tokens)) < 1e-5 * max(1.0, float(tokens))
        assert abs(row["feature_influence"] - float(features)) < 1e-5 * max(1.0, float(features))
    weighted = graph.sentence_attribution(spans)
    assert not np.allclose(weighted["influence"], table["influence"]), "control: probability weighting differs"
    with pytest.raises(ValueError, match="not a logit node"):
        graph.sentence_attribution(spans, logit_token=-5)


def test_json_of_custom_targets_equals_circuit_tracers(tmp_path, one_torch_thread):
    """Two logit-difference targets (not tokens): circuit-tracer's virtual ids and labels in the frontend JSON."""
    from attribution_cases import case_targets

    case = CASES["tiny_llama_logit_diff"]
    model = case_model(case)
    graph = attribution_graph(model, case_transcoders(case), case["prompt"], progress=False,
                              attribution_targets=case_targets(case, model))
    ours = json.loads(graph.to_json(tmp_path / "g.json", slug="oracle").read_text())
    ref = json.loads((DATA / "tiny_llama_logit_diff.json").read_text())
    assert [n["node_id"] for n in ours["nodes"]] == [n["node_id"] for n in ref["nodes"]]
    logits = [n for n in ours["nodes"] if n["feature_type"] == "logit"]
    assert [n["clerp"] for n in logits] == [n["clerp"] for n in ref["nodes"] if n["feature_type"] == "logit"]
    assert [n["feature"] for n in logits] == [model.cfg.d_vocab, model.cfg.d_vocab + 1]
    assert_same_nodes_and_links(ours, ref)
    # the node table, the plot and a file round trip know they are not tokens
    nodes = graph.nodes
    targets = nodes[nodes["kind"] == "logit"]
    assert targets["token_id"].tolist() == [-1, -1] and targets["value"].tolist() == pytest.approx([0.7, 0.3])
    assert targets["label"].iloc[0] == "target 'logit( Paris)-logit( Rome)' w=0.7"
    assert "London not Berlin" in " ".join(t.get_text() for t in graph.plot().texts)
    back = al.AttributionGraph.load(graph.save(tmp_path / "g.npz"))
    assert back.logit_is_token.tolist() == [False, False] and back.logit_labels == graph.logit_labels
    spans = [(0, 3), (3, 6)]
    one = graph.sentence_attribution(spans, logit_token="London not Berlin")
    assert one.equals(graph.sentence_attribution(spans, logit_token=model.cfg.d_vocab + 1))
    assert not np.allclose(one["influence"], graph.sentence_attribution(spans)["influence"])
