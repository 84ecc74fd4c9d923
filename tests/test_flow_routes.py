"""Routes on a model organism with a known route (and its control), and attention knockout on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from anchorlens import Trace
from anchorlens.flow import KnockoutResult, Routes, information_flow, knockout_experiment
from anchorlens.flow.organism import planted_route_model
from anchorlens.hooks.edge_knockout import knockout_masks

TEXT = "We start here. This is the anchor of it. Then more words follow and we end"


def recovered_route(model) -> dict:
    """What the route into the last prediction says about the planted head's layer."""
    flow = information_flow(model, TEXT)
    marker = flow.tokens.index(model.marker_token)
    layer, head = model.planted_head
    route = flow.routes(-1)
    edges = route.attention_edges()
    into_last = edges[(edges["layer"] == layer) & (edges["target"] == flow.n_tokens - 1)]
    return {
        "top_source": int(into_last.iloc[0]["source"]) if len(into_last) else None,
        "top_weight": float(into_last.iloc[0]["weight"]) if len(into_last) else 0.0,
        "top_head": int(route.head_importance[layer].argmax()),
        "most_influential_token": int(flow.token_influence(-1).argmax()),
        "marker": marker,
        "head": head,
        "route": route,
    }


def route_found(found: dict) -> bool:
    return (
        found["top_source"] == found["marker"]
        and found["top_weight"] > 0.5
        and found["top_head"] == found["head"]
        and found["most_influential_token"] == found["marker"]
    )


def test_planted_route_is_recovered_and_control_is_not(one_torch_thread, tmp_path):
    planted = recovered_route(planted_route_model(planted=True))
    assert route_found(planted), planted
    control = recovered_route(planted_route_model(planted=False))
    assert not route_found(control), control
    assert control["top_weight"] < 0.2 and control["most_influential_token"] != control["marker"]
    # the route object itself: nodes, a drawing, save and load
    route = planted["route"]
    assert {"x", "a", "m"} >= set(route.nodes["kind"]) and len(route.nodes) > 0
    import matplotlib

    matplotlib.use("Agg")
    assert route.plot() is not None
    loaded = Routes.load(route.save(tmp_path / "route"))
    assert loaded.to_dataframe().equals(route.to_dataframe())


def test_route_weights_are_renormalised(tiny_llama, one_torch_thread):
    flow = information_flow(tiny_llama, TEXT)
    frame = flow.routes(-1, threshold=0.04).to_dataframe()
    assert (frame["weight"] > 0.04).all()
    incoming = frame[frame["target_kind"] == "a"].groupby(["target_layer", "target_position"])["weight"].sum()
    torch.testing.assert_close(torch.tensor(incoming.to_numpy(), dtype=torch.float64), torch.ones(len(incoming), dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(flow.token_influence(-1).sum(), torch.tensor(1.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(flow.token_influence(-1, threshold=0.04).sum(), torch.tensor(1.0), atol=1e-4, rtol=0)


def test_knockout_masks_never_blind_a_row():
    masks = knockout_masks([(0, 2, 0), (0, 2, 1), (0, 2, 2), (0, 1, 3)], n_pos=4)
    assert masks[0][2].tolist() == [True, True, False, False]  # row 2 keeps its own key
    assert not masks[0][1].any()  # a future source is no edge


@pytest.mark.slow
@pytest.mark.parametrize("make_input", ["prompt", "trace"])
def test_knocking_out_the_route_lowers_p_answer_more_than_random_edges(smol, make_input, one_torch_thread, tmp_path):
    if make_input == "prompt":
        text = "The capital of France is"
    else:
        text = Trace.from_text(smol, "The Eiffel Tower stands in the city of", prompt="Question: where is it? ")
    result = knockout_experiment(smol, text, " Paris", n_edges=10, n_random=10, seed=0)
    print(result.to_dataframe())
    assert result.p_clean > 0.2
    assert result.route_drop > 0.2
    assert result.route_drop > result.random_drops.mean()
    assert result.fraction_random_below() >= 0.8
    loaded = KnockoutResult.load(result.save(tmp_path / "ko"))
    assert loaded.p_random == result.p_random and loaded.route_edges == result.route_edges
