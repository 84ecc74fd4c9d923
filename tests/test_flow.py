"""Information flow contributions against the definition taken literally (every part materialised).

The reference here reads the attention pattern and the values from ``run_with_cache`` and the output
projection from the Hugging Face ``o_proj`` weights (not the bridge's ``W_O`` nor anchorlens' hooks), builds
every part ``A_ij^h v_j W_O^h`` with an explicit loop over heads (GQA: query head h reads key/value head
h // group), checks that they add up to ``resid_mid``, and scores each part with the formula of the issue.
"""

from __future__ import annotations

import pytest
import torch

from anchorlens import EmptyTextError, UnsupportedArchitectureError, random_model
from anchorlens.flow import FlowInputError, InformationFlow, information_flow
from anchorlens.flow import contributions as flow_math

EPS = 1e-5
TEXT = "The quick brown fox jumps over the lazy dog because it can."


@torch.no_grad()
def naive_flow(model, text: str, p: int):
    """``(attention [L,T,T], heads [L,T,T,H], residual_attention, mlp, residual_mlp)`` the slow, literal way,
    in float64 from the model's float32 activations."""
    tokens = model.to_tokens(text)
    _, raw = model.run_with_cache(tokens)
    cache = {name: tensor.double() for name, tensor in raw.items()}
    cfg = model.cfg
    n_heads, d_head = cfg.n_heads, cfg.d_head
    n_pos = tokens.shape[1]
    out = {k: [] for k in ("attention", "heads", "residual_attention", "mlp", "residual_mlp")}
    dist = lambda whole, part: (whole.norm(p=p, dim=-1) - (whole - part).norm(p=p, dim=-1)).clamp(min=EPS)
    for layer in range(cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # [head, target, source]
        v = cache[f"blocks.{layer}.attn.hook_v"][0]  # [pos, kv_head, d_head]
        o_proj = model.original_model.model.layers[layer].self_attn.o_proj.weight.double()  # [d_model, head * d_head]
        group = n_heads // v.shape[1]
        parts = torch.zeros(n_pos, n_pos, n_heads, cfg.d_model, dtype=torch.float64)
        for h in range(n_heads):
            value_out = v[:, h // group] @ o_proj[:, h * d_head : (h + 1) * d_head].T  # [source, d_model]
            parts[:, :, h] = pattern[h][:, :, None] * value_out[None]
        resid_pre = cache[f"blocks.{layer}.hook_resid_pre"][0]
        resid_mid = cache[f"blocks.{layer}.hook_resid_mid"][0]
        torch.testing.assert_close(resid_pre + parts.sum(dim=(1, 2)), resid_mid, atol=1e-4, rtol=1e-4)
        prox = dist(resid_mid[:, None, None], parts)  # [target, source, head]
        resid = dist(resid_mid, resid_pre)
        total = prox.sum(dim=(1, 2)) + resid
        out["heads"].append(prox / total[:, None, None])
        out["attention"].append((prox / total[:, None, None]).sum(-1))
        out["residual_attention"].append(resid / total)
        resid_post = cache[f"blocks.{layer}.hook_resid_post"][0]
        m = dist(resid_post, cache[f"blocks.{layer}.hook_mlp_out"][0])
        r = dist(resid_post, resid_mid)
        out["mlp"].append(m / (m + r))
        out["residual_mlp"].append(r / (m + r))
    return {k: torch.stack(v).float() for k, v in out.items()}


def assert_flow_matches(flow: InformationFlow, naive: dict, atol: float = 1e-5):
    for name in ("attention", "residual_attention", "mlp", "residual_mlp"):
        torch.testing.assert_close(getattr(flow, name), naive[name], atol=atol, rtol=0, msg=name)
    torch.testing.assert_close(flow.heads, naive["heads"], atol=atol, rtol=0)
    torch.testing.assert_close(flow.by_head(1), naive["heads"][1], atol=atol, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("distance, p", [("l1", 1), ("l2", 2)])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_random_gqa_models_equal_naive(arch, distance, p, one_torch_thread, monkeypatch):
    model = random_model(arch, n_layers=3, d_model=96, n_heads=6, n_kv_heads=2, seed=3)
    naive = naive_flow(model, TEXT, p)
    flow = information_flow(model, TEXT, distance=distance)
    assert flow.tokens == model.to_tokens(TEXT)[0].tolist()
    assert_flow_matches(flow, naive)
    # Tiny blocks (a row or two at a time) give the same numbers: the blocking is only about memory.
    monkeypatch.setattr(flow_math, "BLOCK_BYTES", 3 * 6 * 96 * 4)
    assert_flow_matches(information_flow(model, TEXT, distance=distance), naive)


@pytest.mark.slow
@pytest.mark.parametrize("distance, p", [("l1", 1), ("l2", 2)])
def test_smollm2_equals_naive(smol, distance, p, one_torch_thread):
    text = "The capital of France is Paris, and"
    naive = naive_flow(smol, text, p)
    flow = information_flow(smol, text, distance=distance)
    assert flow.attention.shape == (30, len(flow.tokens), len(flow.tokens))
    assert_flow_matches(flow, naive)


def test_contributions_sum_to_one_and_future_gets_eps(tiny_llama, one_torch_thread):
    flow = information_flow(tiny_llama, TEXT)
    torch.testing.assert_close(flow.attention.sum(-1) + flow.residual_attention, torch.ones(2, flow.n_tokens))
    torch.testing.assert_close(flow.mlp + flow.residual_mlp, torch.ones(2, flow.n_tokens))
    future = ~torch.tril(torch.ones(flow.n_tokens, flow.n_tokens, dtype=torch.bool))
    assert (flow.heads[:, future] < 1e-4).all() and (flow.heads[:, future] > 0).all()


@pytest.mark.slow
def test_l1_and_l2_rank_alike_but_differ(tiny_qwen, one_torch_thread):
    l1 = information_flow(tiny_qwen, TEXT, distance="l1")
    l2 = information_flow(tiny_qwen, TEXT, distance="l2")
    assert not torch.allclose(l1.attention, l2.attention, atol=1e-3)
    causal = torch.tril(torch.ones(l1.n_tokens, l1.n_tokens, dtype=torch.bool))
    a, b = l1.attention[:, causal].flatten(), l2.attention[:, causal].flatten()
    rank = lambda x: x.argsort().argsort().double()
    assert torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1] > 0.8


def test_result_round_trip_dataframe_plot(tiny_llama, tmp_path, one_torch_thread):
    import matplotlib

    matplotlib.use("Agg")
    flow = information_flow(tiny_llama, TEXT)
    loaded = InformationFlow.load(flow.save(tmp_path / "flow"))
    torch.testing.assert_close(loaded.attention, flow.attention)
    torch.testing.assert_close(loaded.heads, flow.heads)
    assert loaded.token_strs == flow.token_strs and loaded.distance == "l1"
    frame = flow.to_dataframe()
    n = flow.n_tokens
    assert len(frame) == 2 * n * (n + 1) // 2 and (frame["source"] <= frame["target"]).all()
    assert flow.plot() is not None and flow.plot(layer=1) is not None
    short = information_flow(tiny_llama, TEXT, keep_heads=False)
    assert short.heads is None
    with pytest.raises(FlowInputError, match="keep_heads=True"):
        short.by_head(0)


def test_bad_input(tiny_llama, one_torch_thread):
    with pytest.raises(EmptyTextError):
        information_flow(tiny_llama, "   ")
    with pytest.raises(FlowInputError, match="distance"):
        information_flow(tiny_llama, TEXT, distance="l3")
    flow = information_flow(tiny_llama, TEXT)
    with pytest.raises(FlowInputError, match="out of range"):
        flow.routes(position=flow.n_tokens)
    with pytest.raises(FlowInputError, match="out of range"):
        flow.by_head(5)
    for threshold in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(FlowInputError, match="between 0 and 1"):
            flow.routes(-1, threshold=threshold)


@pytest.mark.slow
@torch.no_grad()
def test_attention_output_that_is_not_the_sum_of_heads_is_refused(one_torch_thread):
    """An output projection that is not linear (a real module change: its output squared) adds terms no (source,
    head) part explains. (An output bias, as gpt-oss has, is decomposed: it counts in the whole, in no part.)"""
    model = random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=5)
    o_proj = model.original_model.model.layers[1].self_attn.o_proj
    o_proj.bias = torch.nn.Parameter(torch.full((64,), 3.0))
    information_flow(model, TEXT)  # a bias alone: decomposed
    o_proj.forward = lambda x: torch.nn.functional.linear(x, o_proj.weight, o_proj.bias) ** 2
    with pytest.raises(UnsupportedArchitectureError, match="layer 1.*cannot be decomposed per head"):
        information_flow(model, TEXT)


@pytest.mark.slow
def test_fused_l1_kernel_equals_naive(one_torch_thread):
    """The torch.compile-d kernel (used from 256 tokens on) against the literal definition."""
    model = random_model("qwen2", n_layers=2, d_model=96, n_heads=6, n_kv_heads=3, seed=7)
    naive = naive_flow(model, TEXT, 1)
    assert_flow_matches(information_flow(model, TEXT, fused=True), naive)
