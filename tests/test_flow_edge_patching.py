"""Edge attribution patching through TransformerLens 4's attribution_patching, on GQA models via the adapter."""

from __future__ import annotations

import pytest
import torch

from anchorlens import random_model
from anchorlens.flow.edge_patching import EdgeAttribution, EdgePatchingError, edge_attribution, expand_kv_heads

CLEAN, CORRUPT = "The capital of France is", "The capital of Italy is"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_expanded_model_is_the_same_function(arch, one_torch_thread):
    model = random_model(arch, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=2)
    expanded = expand_kv_heads(model)
    assert expanded.cfg.n_key_value_heads in (None, 4) and expanded.cfg.n_heads == 4
    tokens = model.to_tokens("Some other text than the check text, longer too.")
    torch.testing.assert_close(expanded(tokens), model(tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_edge_scores_agree_with_node_scores_of_the_original_gqa_model(one_torch_thread, tmp_path):
    """TransformerLens scores nodes on the GQA model itself; each writer's outgoing edges (on the expanded copy)
    must add up to the same node score, so the adapter changed neither the function nor its gradients."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    model = random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=4)
    with pytest.raises(ValueError, match="GQA"):  # the limitation the adapter exists for
        attribution_patch(model, model.to_tokens(CLEAN), model.to_tokens(CORRUPT), lambda l: l[0, -1, 0],
                          EdgeAttributionConfig(granularity="edge"))
    paris, rome = (model.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" Paris", " Rome"))
    result = edge_attribution(model, CLEAN, CORRUPT, " Paris", " Rome")
    nodes = attribution_patch(model, model.to_tokens(CLEAN), model.to_tokens(CORRUPT),
                              lambda logits: logits[0, -1, paris] - logits[0, -1, rome]).node_scores
    summed = result.edges.groupby("source")["score"].sum()
    from anchorlens.flow.edge_patching import _node_label

    checked = 0
    for node, score in nodes.items():
        label = _node_label(node.kind, -1 if node.layer is None else node.layer, -1 if node.head is None else node.head, node.position)
        if label in summed.index:
            assert abs(summed[label] - score) < 1e-4 * max(1.0, abs(score)), (label, summed[label], score)
            checked += 1
    assert checked > 20
    assert list(result.top(5).columns)[:3] == ["source_kind", "source_layer", "source_head"]
    loaded = EdgeAttribution.load(result.save(tmp_path / "eap"))
    assert loaded.edges["score"].tolist() == pytest.approx(result.edges["score"].tolist())
    import matplotlib

    matplotlib.use("Agg")
    assert result.plot(k=10) is not None


def test_prompts_of_different_lengths_are_refused(tiny_llama):
    with pytest.raises(EdgePatchingError, match="equal token length"):
        edge_attribution(tiny_llama, CLEAN, "The capital of the United Kingdom is", " Paris", " London")
