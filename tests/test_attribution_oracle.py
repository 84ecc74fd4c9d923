"""anchorlens's attribution graphs equal circuit-tracer 0.5.0's (stored in tests/data/attribution/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import pytest

import anchorlens as al

from attribution_cases import CASES, case_model, case_targets, case_transcoders
from anchorlens.attribution.attribute import AttributionInputError, attribution_graph

DATA = Path(__file__).parent / "data" / "attribution"


def compare(graph, ref):
    assert graph.tokens.tolist() == ref["input_tokens"].tolist()
    selected = ref["selected_features"]  # all active features unless max_feature_nodes chose some
    np.testing.assert_array_equal(graph.active_features.numpy(), ref["active_features"][selected])  # same nodes, order
    np.testing.assert_allclose(graph.activations.numpy(), ref["activation_values"][selected], rtol=1e-5, atol=1e-6)
    assert graph.logit_token_ids.tolist() == ref["logit_token_ids"].tolist()  # custom targets: vocab size + i
    np.testing.assert_allclose(graph.logit_probabilities.numpy(), ref["logit_probabilities"], rtol=1e-4)
    if "logit_labels" in ref:
        assert graph.logit_labels == ref["logit_labels"].tolist()
    A, R = graph.adjacency.numpy(), ref["adjacency"]
    assert A.shape == R.shape
    # within 1e-4 relative, elementwise, with a floor of 1e-6 of the largest edge for edges that are ~0
    assert np.all(np.abs(A - R) <= 1e-4 * np.abs(R) + 1e-6 * np.abs(R).max())
    assert (np.abs(R) > 0).sum() > 100  # a graph with many edges, not a trivially empty one
    np.testing.assert_allclose(graph.scores(), ref["scores"], rtol=1e-4)
    pruned = graph.prune(0.8, 0.98)
    np.testing.assert_array_equal(pruned.node_mask.numpy(), ref["node_mask"])
    np.testing.assert_array_equal(pruned.edge_mask.numpy(), ref["edge_mask"])
    # cumulative influence: the same curve; two nodes of nearly equal influence may swap places (float noise)
    cumulative = pruned.cumulative_scores.numpy()
    np.testing.assert_allclose(np.sort(cumulative), np.sort(ref["cumulative_scores"]), atol=1e-5)
    np.testing.assert_allclose(cumulative, ref["cumulative_scores"], atol=1e-3)
    np.testing.assert_allclose(pruned.scores(), ref["pruned_scores"], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny_llama_relu", "tiny_llama_jumprelu_skip"])
def test_equals_circuit_tracer_on_random_llama(name, one_torch_thread):
    case = CASES[name]
    model = case_model(case)
    graph = attribution_graph(model, case_transcoders(case), case["prompt"], progress=False)
    compare(graph, np.load(DATA / f"{name}.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2_relu", "smollm2_jumprelu_skip"])
def test_equals_circuit_tracer_on_smollm2(name, smol, one_torch_thread):
    case = CASES[name]
    transcoders = case_transcoders(case, smol.cfg.n_layers, smol.cfg.d_model)
    graph = attribution_graph(smol, transcoders, case["prompt"], progress=False)
    compare(graph, np.load(DATA / f"{name}.npz"))


@pytest.mark.slow
def test_max_feature_nodes_keeps_the_features_circuit_tracer_keeps(one_torch_thread):
    """circuit-tracer picks 100 of 241 features by influence, re-ranked after each 4 x 16 rows: the same ones,
    the same graph; the others are reported as dropped."""
    case = CASES["tiny_llama_relu_max100"]
    ref = np.load(DATA / "tiny_llama_relu_max100.npz")
    assert len(ref["selected_features"]) == 100 < len(ref["active_features"])
    graph = attribution_graph(case_model(case), case_transcoders(case), case["prompt"], progress=False,
                              max_feature_nodes=case["max_feature_nodes"], batch_size=case["batch_size"])
    compare(graph, ref)
    dropped = np.setdiff1d(np.arange(len(ref["active_features"])), ref["selected_features"])
    np.testing.assert_array_equal(graph.dropped_features.numpy(), ref["active_features"][dropped])
    # control: the first 100 features in node order are not circuit-tracer's choice
    assert not np.array_equal(ref["selected_features"], np.arange(100))
    full = attribution_graph(case_model(case), case_transcoders(case), case["prompt"], progress=False)
    assert full.dropped_features.numel() == 0 and full.n_features == len(ref["active_features"])
    with pytest.raises(AttributionInputError, match="max_feature_nodes"):
        attribution_graph(case_model(case), case_transcoders(case), case["prompt"], max_feature_nodes=-1)


def test_a_changed_definition_breaks_the_comparison(one_torch_thread):
    """Control: without the skip connection's gradient path the graph no longer equals circuit-tracer's."""
    case = CASES["tiny_llama_jumprelu_skip"]
    transcoders = case_transcoders(case)
    for t in transcoders:
        t.W_skip = t.W_skip * 1.01
    graph = attribution_graph(case_model(case), transcoders, case["prompt"], progress=False)
    with pytest.raises(AssertionError):
        compare(graph, np.load(DATA / "tiny_llama_jumprelu_skip.npz"))


TARGET_CASES = ["tiny_llama_token_strings", "tiny_llama_token_ids", "tiny_llama_logit_diff",
                "tiny_llama_logit_diff_max60"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGET_CASES)
def test_attribution_targets_equal_circuit_tracers(name, one_torch_thread):
    """Token strings, token ids and custom directions (two logit differences weighted 0.7 / 0.3), also with 60 of
    the features chosen by influence on those weighted targets: circuit-tracer's nodes, adjacency and pruning."""
    case = CASES[name]
    model = case_model(case)
    ref = np.load(DATA / f"{name}.npz")
    graph = attribution_graph(model, case_transcoders(case), case["prompt"], progress=False,
                              attribution_targets=case_targets(case, model),
                              max_feature_nodes=case.get("max_feature_nodes"), batch_size=case.get("batch_size", 64))
    compare(graph, ref)
    custom = "logit_diffs" in case["targets"]
    assert graph.logit_is_token.tolist() == [not custom] * graph.n_logits
    if custom:  # weights as given, not probabilities
        assert graph.logit_probabilities.tolist() == pytest.approx([w for _, w, *_ in case["targets"]["logit_diffs"]])


def test_a_logit_difference_is_the_difference_of_the_two_token_rows(one_torch_thread):
    """The graph is linear in the target's vector: the row of logit( Paris)-logit( Rome) is the row of ' Paris'
    minus the row of ' Rome' (circuit-tracer's outputs for both cases, and anchorlens's)."""
    diff, tokens = (np.load(DATA / f"{name}.npz") for name in ("tiny_llama_logit_diff", "tiny_llama_token_strings"))
    n = diff["adjacency"].shape[0] - 2  # sources: features, errors, tokens (the same nodes in both graphs)
    paris, rome = tokens["adjacency"][-2, :n], tokens["adjacency"][-3, :n]  # targets " Rome", " Paris", " the"
    np.testing.assert_allclose(diff["adjacency"][-2, :n], paris - rome, atol=1e-5 * np.abs(paris).max())
    case = CASES["tiny_llama_logit_diff"]
    model = case_model(case)
    graph = attribution_graph(model, case_transcoders(case), case["prompt"], progress=False,
                              attribution_targets=[al.logit_difference_target(model, " Rome", " Paris")])
    np.testing.assert_allclose(graph.adjacency[-1, :n].numpy(), rome - paris, atol=1e-5 * np.abs(paris).max())
    assert graph.logit_labels == ["logit( Rome)-logit( Paris)"]


@pytest.mark.slow
def test_circuit_tracers_hook_names_mean_the_same_places(one_torch_thread):
    """mlp.hook_out (its released configs' name) is hook_mlp_out for circuit-tracer and for anchorlens: the same
    graph; hook_resid_mid (the residual before the MLP's norm) is a different place, and equals circuit-tracer's."""
    released, canonical = (np.load(DATA / f"{n}.npz") for n in ("tiny_llama_released_hooks", "tiny_llama_relu"))
    np.testing.assert_array_equal(released["adjacency"], canonical["adjacency"])
    for name in ("tiny_llama_released_hooks", "tiny_llama_resid_mid_skip"):
        case = CASES[name]
        transcoders = case_transcoders(case)
        assert (transcoders.feature_input_hook, transcoders.feature_output_hook) == (case["input_hook"],
                                                                                   case["output_hook"])
        graph = attribution_graph(case_model(case), transcoders, case["prompt"], progress=False)
        compare(graph, np.load(DATA / f"{name}.npz"))
    # control: the same transcoders read at the MLP's input (after its norm) give another graph
    case = CASES["tiny_llama_resid_mid_skip"]
    transcoders = case_transcoders(case)
    transcoders.feature_input_hook = "mlp.hook_in"
    graph = attribution_graph(case_model(case), transcoders, case["prompt"], progress=False)
    with pytest.raises(AssertionError):
        compare(graph, np.load(DATA / "tiny_llama_resid_mid_skip.npz"))


@pytest.mark.parametrize("name", ["tiny_llama_relu_interventions", "tiny_llama_jumprelu_skip_interventions"])
def test_feature_intervention_equals_circuit_tracers(name, one_torch_thread):
    """Logits and feature activations of circuit-tracer's feature_intervention: attention frozen or free, MLPs and
    norms frozen (constrained_layers), skip connections; the same within 1e-4 relative."""
    case = CASES[name]
    interventions_equal_circuit_tracers(case, np.load(DATA / f"{name}.npz"), case_model(case), case_transcoders(case))


def interventions_equal_circuit_tracers(case: dict, ref, model, transcoders) -> list:
    """Every intervention setting of ``case`` against circuit-tracer's stored logits and activations (1e-4
    relative); each changes the clean logits, and the settings differ from each other, so each comparison tests its
    own freezing. Returns the results."""
    results = []
    for i, setting in enumerate(case["interventions"]):
        constrained = range(*setting["constrained_layers"]) if setting["constrained_layers"] else None
        result = al.feature_intervention(model, transcoders, case["prompt"], setting["interventions"],
                                         freeze_attention=setting["freeze_attention"], constrained_layers=constrained)
        # stored: the last position's logits, and the first 512 token ids' logits at every position
        for ours, theirs in ((result.logits[-1], ref[f"intervention_{i}_last_logits"]),
                             (result.logits[:, :512], ref[f"intervention_{i}_logits_head"]),
                             (result.activations, ref[f"intervention_{i}_activations"])):
            assert ours.shape == theirs.shape
            assert np.all(np.abs(ours.numpy() - theirs) <= 1e-4 * np.abs(theirs) + 1e-6 * np.abs(theirs).max())
        assert not np.allclose(ref[f"intervention_{i}_last_logits"], result.clean_logits[-1].numpy(), atol=1e-2)
        results.append(result)
    for a, b in zip(results, results[1:]):
        assert not torch.allclose(a.logits, b.logits, atol=1e-4)
    return results


def test_generation_under_interventions_equals_circuit_tracers(one_torch_thread):
    """feature_intervention_generate, greedy, 6 tokens, with open-ended positions (slice(3, None)) that act on every
    generated token: circuit-tracer's text (computed with its KV cache), last logits and all activations, with
    attention frozen, with MLPs and norms frozen, and free; and feature_intervention on the same interventions."""
    name = "tiny_llama_relu_generate"
    case, ref = CASES[name], np.load(DATA / f"{name}.npz")
    model, transcoders = case_model(case), case_transcoders(case)
    for i, setting in enumerate(case["interventions"]):
        interventions = [(x[0], slice(x[1][0], None) if isinstance(x[1], list) else x[1], x[2], x[3])
                         for x in setting["interventions"]]
        constrained = range(*setting["constrained_layers"]) if setting["constrained_layers"] else None
        kwargs = dict(freeze_attention=setting["freeze_attention"], constrained_layers=constrained)
        result = al.feature_intervention(model, transcoders, case["prompt"], interventions, **kwargs)
        generated = al.feature_intervention_generate(model, transcoders, case["prompt"], interventions,
                                                     max_new_tokens=setting["generate"], **kwargs)
        assert generated.text == str(ref[f"generate_{i}_text"])
        assert generated.text != generated.clean_text  # the interventions change the continuation
        for ours, theirs in ((result.logits[-1], ref[f"intervention_{i}_last_logits"]),
                             (result.activations, ref[f"intervention_{i}_activations"]),
                             (generated.logits[-1], ref[f"generate_{i}_last_logits"]),
                             (generated.activations, ref[f"generate_{i}_activations"])):
            assert ours.shape == theirs.shape
            assert np.all(np.abs(ours.numpy() - theirs) <= 1e-4 * np.abs(theirs) + 1e-6 * np.abs(theirs).max())
        # the prompt's positions are those of feature_intervention (the first step)
        torch.testing.assert_close(generated.logits[: generated.n_prompt], result.logits, rtol=1e-4, atol=1e-5)
