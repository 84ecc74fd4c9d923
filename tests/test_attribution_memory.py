"""The attribution forward's memory savers change nothing: the known-MLP shortcut gives the model's own output
(and is really used), frozen parameters come back as they were."""

import pytest
import torch

from attribution_cases import CASES, case_model
from anchorlens.hooks.known_mlp import known_mlp_outputs
from anchorlens.hooks.replacement import frozen_parameters


def _mlp_outputs(model, tokens):
    names = [f"blocks.{i}.mlp.hook_out" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return [cache[name][0] for name in names]


def test_known_mlp_outputs_give_the_models_logits_on_every_copy(one_torch_thread):
    model = case_model(CASES["tiny_llama_relu"])
    tokens = torch.tensor([1, 504, 3575, 282, 4649, 314])
    with torch.no_grad():
        plain = model(tokens[None])
        outputs = _mlp_outputs(model, tokens[None])
        with known_mlp_outputs(model, outputs):
            known = model(tokens[None].expand(3, -1))
        with known_mlp_outputs(model, [torch.zeros_like(o) for o in outputs]):
            zeroed = model(tokens[None])
        again = model(tokens[None])  # the MLPs are back after the block
    torch.testing.assert_close(known, plain.expand(3, -1, -1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(zeroed, plain, atol=1e-3)  # the shortcut is what ran, not the MLPs
    torch.testing.assert_close(again, plain, rtol=0, atol=0)


def test_frozen_parameters_restores_requires_grad(one_torch_thread):
    model = case_model(CASES["tiny_llama_relu"])
    first = next(model.parameters())
    first.requires_grad_(False)  # one already frozen stays frozen
    with frozen_parameters(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert not first.requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not first)


def test_a_memory_bound_batch_gives_the_same_graph(one_torch_thread, caplog):
    """A budget that fits one copy runs one target per backward pass; the graph (features chosen in
    circuit-tracer's rounds of update_interval x batch_size included) is the one of the 16-copy batch."""
    import logging

    from anchorlens.attribution.attribute import attribution_graph
    from attribution_cases import case_transcoders

    case = CASES["tiny_llama_relu_max100"]
    model, transcoders = case_model(case), case_transcoders(case)
    # 40 of 241 features: rounds of 4 x 1 would choose other features than rounds of 4 x 16 (checked)
    kwargs = dict(progress=False, max_feature_nodes=40, batch_size=case["batch_size"])
    default = attribution_graph(model, transcoders, case["prompt"], **kwargs)
    with caplog.at_level(logging.INFO, logger="anchorlens.attribution.attribute"):
        small = attribution_graph(model, transcoders, case["prompt"], memory_budget=1, **kwargs)
    assert "1 copies per backward pass instead of 16" in caplog.text
    assert torch.equal(small.active_features, default.active_features)
    assert torch.equal(small.dropped_features, default.dropped_features)
    torch.testing.assert_close(small.adjacency, default.adjacency, rtol=1e-5, atol=1e-7)


def test_bytes_per_copy_counts_every_layers_attention_pattern(one_torch_thread):
    """The per-copy measure holds the n_heads x T^2 patterns of every layer, not the weights shared by all copies."""
    from anchorlens.hooks.replacement import bytes_per_copy, replacement_forward
    from attribution_cases import case_transcoders

    case = CASES["tiny_llama_relu"]
    model, transcoders = case_model(case), case_transcoders(case)
    sizes = {}
    for n_pos in (8, 64):
        tokens = torch.arange(1, n_pos + 1)
        outputs = replacement_forward(model, transcoders, tokens, batch=1).mlp_out_value
        sizes[n_pos] = bytes_per_copy(model, transcoders, tokens, outputs)
        assert sizes[n_pos] >= 4 * case["n_layers"] * case["n_heads"] * n_pos**2
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert sizes[8] < weights  # the embedding and unembedding (49k x 64 floats each) are not counted per copy
    # patterns grow with T^2, the rest with T: 8x the tokens is more than 8x the bytes
    assert sizes[64] > 8 * sizes[8]


def test_influence_pruning_and_scores_on_the_nonzero_rows_equal_the_dense_series(one_torch_thread):
    """graph.py works on the rows that can be non-zero (features, targets) instead of n x n matrices; the dense
    Neumann series over the whole normalised adjacency is the reference."""
    from anchorlens.attribution.attribute import attribution_graph
    from anchorlens.attribution.graph import neumann_influence, normalize_matrix
    from attribution_cases import case_transcoders

    case = CASES["tiny_llama_jumprelu_skip"]
    graph = attribution_graph(case_model(case), case_transcoders(case), case["prompt"], progress=False)
    assert (graph.adjacency[graph.n_features : graph.logit_slice.start] == 0).all()  # error and token rows
    dense = neumann_influence(normalize_matrix(graph.adjacency), graph.logit_weights())
    torch.testing.assert_close(graph.influence(), dense, rtol=1e-5, atol=1e-8)
    normalized = normalize_matrix(graph.adjacency)
    influence_plus = dense + graph.logit_weights()
    completeness = float(((1 - normalized[:, graph.error_slice].sum(-1)) * influence_plus).sum() / influence_plus.sum())
    assert graph.scores()[1] == pytest.approx(completeness, rel=1e-5)
    pruned = graph.prune()
    assert pruned.edge_mask.shape == graph.adjacency.shape
    assert not pruned.edge_mask[graph.n_features : graph.logit_slice.start].any()
    assert 0 < int(pruned.edge_mask.sum()) < int((graph.adjacency != 0).sum())
