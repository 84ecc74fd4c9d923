"""Head ablation on every family issue 27 names, against the Hugging Face model itself.

Ablating head ``h`` of layer ``l`` must equal the untouched Hugging Face copy's eager forward with the columns
``h * d_value .. (h + 1) * d_value`` of that layer's ``o_proj`` input set to zero (zero ablation) or to their
mean over the positions of a clean Hugging Face run (mean ablation): a forward pre-hook on ``o_proj`` written
here, on the plain ``transformers`` modules.
"""

from __future__ import annotations

import pytest
import torch

from anchorlens import AnchorlensError
from anchorlens.hooks.head_ablation import ablate_heads, head_means
from arch_builders import FAMILIES, build

TEXT = "The quick brown fox jumps over the lazy dog because it can."
LAYER, HEAD = 1, 2


@pytest.fixture(scope="module", autouse=True)
def _warm(one_torch_thread):
    """Import TransformerLens and load the tokenizer once, outside the timed tests."""
    build("llama")


@torch.no_grad()
def hf_logits_with_columns(hf, tokens, layer: int, head: int, replace=None) -> torch.Tensor:
    """The Hugging Face forward with head ``head``'s ``o_proj`` input columns replaced (``None``: zeros)."""
    o_proj = hf.model.layers[layer].self_attn.o_proj
    width = o_proj.in_features // hf.config.num_attention_heads

    def edit(module, args):
        z = args[0].clone()
        z[..., head * width:(head + 1) * width] = 0.0 if replace is None else replace
        return (z,)

    handle = o_proj.register_forward_pre_hook(edit)
    try:
        return hf(tokens).logits
    finally:
        handle.remove()


@torch.no_grad()
def hf_head_mean(hf, tokens, layer: int, head: int) -> torch.Tensor:
    """Head ``head``'s mean ``o_proj`` input over all positions of a clean Hugging Face run."""
    o_proj = hf.model.layers[layer].self_attn.o_proj
    width = o_proj.in_features // hf.config.num_attention_heads
    seen = []
    handle = o_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0][..., head * width:(head + 1) * width]))
    try:
        hf(tokens)
    finally:
        handle.remove()
    return seen[0].reshape(-1, width).mean(0)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_head_ablation_equals_zeroed_o_proj_columns(family, one_torch_thread):
    bridge, hf = build(family, seed=4)
    tokens = bridge.to_tokens(TEXT)
    clean = hf(tokens).logits
    expected = hf_logits_with_columns(hf, tokens, LAYER, HEAD)
    assert relative_error(expected, clean) > 1e-3  # the head matters: the comparison can fail
    with torch.no_grad(), ablate_heads(bridge, [(LAYER, HEAD)]):
        got = bridge(tokens)
    assert relative_error(got, expected) < 1e-4, family
    # mean ablation: the head's mean output over the positions of the same text
    means = head_means(bridge, tokens, progress=False)
    torch.testing.assert_close(means[LAYER, HEAD], hf_head_mean(hf, tokens, LAYER, HEAD), rtol=1e-4, atol=1e-6)
    expected = hf_logits_with_columns(hf, tokens, LAYER, HEAD, replace=hf_head_mean(hf, tokens, LAYER, HEAD))
    with torch.no_grad(), ablate_heads(bridge, [(LAYER, HEAD)], method="mean", means=means):
        got = bridge(tokens)
    assert relative_error(got, expected) < 1e-4, family


def test_mean_ablation_names_the_shape_it_needs(one_torch_thread):
    """DeepSeek-V3's heads are wider at hook_z (v_head_dim 16) than cfg.d_head (8): the error says so."""
    bridge, _ = build("deepseek_v3", seed=4)
    with pytest.raises(AnchorlensError, match=r"\(2, 4, 16\)"):
        with ablate_heads(bridge, [(1, 0)], method="mean", means=torch.zeros(2, 4, bridge.cfg.d_head)):
            pass


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_runs_or_refuses_with_the_reason(family, one_torch_thread):
    """Families whose replacement model is linear with patterns and pre-norm scales frozen build a graph (the
    mixture-of-experts MLPs are replaced by transcoders); the others are refused before any work, saying why."""
    from anchorlens.attribution.attribute import attribution_graph
    from anchorlens.attribution.transcoders import random_transcoders

    bridge, _ = build(family, seed=5)
    transcoders = random_transcoders(bridge.cfg.n_layers, bridge.cfg.d_model, 8, seed=1)
    if family in ("olmo2", "olmo3", "gemma2", "gemma3"):
        with pytest.raises(AnchorlensError, match="norms after attention"):
            attribution_graph(bridge, transcoders, "The quick brown fox", progress=False)
    elif family == "deepseek_v3":
        with pytest.raises(AnchorlensError, match="latent attention"):
            attribution_graph(bridge, transcoders, "The quick brown fox", progress=False)
    else:
        graph = attribution_graph(bridge, transcoders, "The quick brown fox", progress=False)
        assert graph.n_layers == bridge.cfg.n_layers and len(graph.logit_token_ids) > 0


@pytest.mark.parametrize("family, component, reason", [
    ("qwen3_moe", "mlp_post", "mixture-of-experts"),
    ("gpt_oss", "mlp_post", "mixture-of-experts"),
    ("deepseek_v3", "head_out", "latent attention"),
])
def test_mediation_refuses_cells_the_architecture_does_not_have(family, component, reason, one_torch_thread):
    from anchorlens.mediation import mediation_sweep

    bridge, _ = build(family, seed=5)
    with pytest.raises(AnchorlensError, match=reason):
        mediation_sweep(bridge, ["What is 3 plus 4? A:"], ["What is 3 plus 5? A:"], [" 7"], [" 8"], component=component)


@torch.no_grad()
def hf_patched_logit_diffs(hf, base, counterfactual, answers) -> torch.Tensor:
    """``[layer, head]``: logit(r) - logit(r') at the last position of the Hugging Face forward on ``base`` whose
    ``o_proj`` input columns of one head at the last position hold the counterfactual forward's."""
    layers = hf.model.layers
    n_heads = hf.config.num_attention_heads
    seen = {}
    handles = [layer.self_attn.o_proj.register_forward_pre_hook(
        lambda module, args, i=i: seen.__setitem__(i, args[0][0, -1].clone())) for i, layer in enumerate(layers)]
    try:
        hf(counterfactual)
    finally:
        for handle in handles:
            handle.remove()
    out = torch.zeros(len(layers), n_heads)
    for i, layer in enumerate(layers):
        width = layer.self_attn.o_proj.in_features // n_heads
        for h in range(n_heads):
            def patch(module, args, h=h, i=i):
                z = args[0].clone()
                z[0, -1, h * width:(h + 1) * width] = seen[i][h * width:(h + 1) * width]
                return (z,)
            handle = layer.self_attn.o_proj.register_forward_pre_hook(patch)
            try:
                logits = hf(base).logits[0, -1]
            finally:
                handle.remove()
            out[i, h] = logits[answers[0]] - logits[answers[1]]
    return out


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "deepseek_v3"])
def test_mediation_of_head_outputs_equals_patched_o_proj_columns(family, one_torch_thread):
    """``mediation_sweep(component="head_out")`` patches each head's output at the last position: the Hugging Face
    model with that head's ``o_proj`` input columns taken from the counterfactual run gives the same logits."""
    from anchorlens.mediation import mediation_sweep

    bridge, hf = build(family, seed=6)
    base, counterfactual = "What is 3 plus 4? A: ", "What is 3 plus 5? A: "
    result = mediation_sweep(bridge, [base], [counterfactual], ["7"], ["8"], component="head_out", progress=False)
    answers = [bridge.to_tokens(a, prepend_bos=False)[0, 0].item() for a in ("7", "8")]
    expected = hf_patched_logit_diffs(hf, bridge.to_tokens(base), bridge.to_tokens(counterfactual), answers)
    got = result.patched_logit_diff[0, :, 0]  # [layer, head] at the last position
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4, family
