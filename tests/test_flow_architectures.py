"""Information flow on every family issue 27 names, against per-head outputs computed by hand from the Hugging Face
model itself (never from anchorlens' hooks).

For each family's small random model (``tests/arch_builders.py``; sliding windows shorter than the text), the
reference runs the untouched Hugging Face copy's eager forward with ``output_attentions=True`` and reads, with
plain PyTorch forward hooks on its own modules, each layer's input, its value projection (``v_proj``; Phi-3's
joint ``qkv_proj``; DeepSeek-V3's ``kv_b_proj``), its ``o_proj`` and, on OLMo-2/3 and Gemma 2/3, its norm after
attention. Every part ``A^h_ij v^h_j W_O^h`` (``W_O^h``: head ``h``'s slice of ``o_proj.weight``'s columns) is
built head by head; where a norm follows attention each part is multiplied by the norm's gain over the clean
root mean square of the attention output (the norm's definition, written here by hand). The parts, the output
bias and ``resid_pre`` must add up to the layer's own ``resid_mid``; then each part is scored with the
definition (docs/methods.md 3) in float64 and compared with ``information_flow``'s per-head contributions.
"""

from __future__ import annotations

import pytest
import torch

from anchorlens import UnsupportedArchitectureError
from anchorlens.flow import information_flow
from arch_builders import FAMILIES, build

EPS = 1e-5
TEXT = "The quick brown fox jumps over the lazy dog because it can."
POST_NORM = {"olmo2": "weight", "olmo3": "weight", "gemma2": "1+weight", "gemma3": "1+weight"}


@pytest.fixture(scope="module", autouse=True)
def _warm(one_torch_thread):
    """Import TransformerLens and load the tokenizer once, outside the timed tests."""
    build("llama")


def value_heads(family: str, attn, captured: dict, n_pos: int, n_heads: int) -> torch.Tensor:
    """``[pos, head, d_value]``: the value each query head reads, from the family's own projection output."""
    config = attn.config
    if family == "deepseek_v3":  # MLA: kv_b_proj gives every head its non-rotary key part, then its value
        kv = captured["kv_b_proj"].view(n_pos, n_heads, config.qk_nope_head_dim + config.v_head_dim)
        return kv[..., config.qk_nope_head_dim:]
    d_head = attn.head_dim
    n_kv = config.num_key_value_heads
    if family == "phi3":  # joint projection: queries, keys, values side by side
        v = captured["qkv_proj"][:, (n_heads + n_kv) * d_head:]
    else:
        v = captured["v_proj"]
    v = v.reshape(n_pos, n_kv, d_head)
    return v[:, [h // (n_heads // n_kv) for h in range(n_heads)]]


@torch.no_grad()
def hand_parts(hf, family: str, tokens: torch.Tensor) -> list[dict]:
    """Per layer: ``resid_pre``, ``resid_mid``, ``resid_post`` ``[pos, d_model]`` and ``parts``
    ``[target, source, head, d_model]``, all float64, from the Hugging Face model's own forward."""
    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []

    def keep(layer, name, use_input=False):
        def hook(module, args, output):
            value = args[0] if use_input else (output[0] if isinstance(output, tuple) else output)
            captured[layer, name] = value[0].detach().double()
        return hook

    def keep_layer_input(layer):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured[layer, "resid_pre"] = hidden[0].detach().double()
        return hook

    for layer, block in enumerate(hf.model.layers):
        attn = block.self_attn
        handles.append(block.register_forward_pre_hook(keep_layer_input(layer), with_kwargs=True))
        handles.append(block.register_forward_hook(keep(layer, "resid_post")))
        for name in ("v_proj", "qkv_proj", "kv_b_proj"):
            if hasattr(attn, name):
                handles.append(getattr(attn, name).register_forward_hook(keep(layer, name)))
        handles.append(attn.o_proj.register_forward_hook(keep(layer, "attn_out")))
        if family in POST_NORM:
            handles.append(block.post_attention_layernorm.register_forward_hook(keep(layer, "normed")))
    try:
        out = hf(tokens, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    n_pos = tokens.shape[1]
    for layer, block in enumerate(hf.model.layers):
        attn = block.self_attn
        n_heads = hf.config.num_attention_heads
        pattern = out.attentions[layer][0].double()  # [head, target, source], sinks and windows included
        got = {name: captured[layer, name] for (lay, name) in captured if lay == layer}
        v = value_heads(family, attn, got, n_pos, n_heads)
        weight = attn.o_proj.weight.double()  # [d_model, head * d_value]
        d_value = weight.shape[1] // n_heads
        parts = torch.zeros(n_pos, n_pos, n_heads, weight.shape[0], dtype=torch.float64)
        for h in range(n_heads):
            value_out = v[:, h] @ weight[:, h * d_value:(h + 1) * d_value].T  # [source, d_model]
            parts[:, :, h] = pattern[h][:, :, None] * value_out[None]
        bias = attn.o_proj.bias.double() if attn.o_proj.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
        update = got["attn_out"]
        if family in POST_NORM:  # RMSNorm held at its clean scale: gain / sqrt(mean(x^2) + eps), per target
            norm = block.post_attention_layernorm
            gain = norm.weight.double() + (1.0 if POST_NORM[family] == "1+weight" else 0.0)
            eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
            scale = gain / torch.sqrt(update.pow(2).mean(-1, keepdim=True) + eps)
            torch.testing.assert_close(update * scale, got["normed"], rtol=1e-5, atol=1e-6)
            parts = parts * scale[:, None, None, :]
            bias = bias * scale
            update = got["normed"]
        resid_pre = got["resid_pre"]
        rebuilt = resid_pre + parts.sum(dim=(1, 2)) + bias
        exact = (rebuilt - (resid_pre + update)).abs().max() / update.abs().max()
        assert exact < 1e-5, f"{family} layer {layer}: the hand-built parts do not add up ({exact:.1e})"
        layers.append({"resid_pre": resid_pre, "resid_mid": resid_pre + update, "resid_post": got["resid_post"], "parts": parts})
    return layers


def reference_contributions(layer: dict, p: int) -> dict:
    """The definition (docs/methods.md 3) on the hand-built parts, in float64."""
    dist = lambda whole, part: (whole.norm(p=p, dim=-1) - (whole - part).norm(p=p, dim=-1)).clamp(min=EPS)
    resid_mid, resid_post = layer["resid_mid"], layer["resid_post"]
    prox = dist(resid_mid[:, None, None], layer["parts"])  # [target, source, head]
    resid = dist(resid_mid, layer["resid_pre"])
    total = prox.sum(dim=(1, 2)) + resid
    mlp = dist(resid_post, resid_post - resid_mid)
    resid_mlp = dist(resid_post, resid_mid)
    return {"heads": prox / total[:, None, None], "residual_attention": resid / total,
            "mlp": mlp / (mlp + resid_mlp), "residual_mlp": resid_mlp / (mlp + resid_mlp)}


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_per_head_contributions_equal_hand_built_parts(family, one_torch_thread):
    bridge, hf = build(family, seed=1)
    tokens = bridge.to_tokens(TEXT)
    assert tokens.shape[1] > 6  # longer than the sliding windows of arch_builders
    layers = hand_parts(hf, family, tokens)
    for distance, p in (("l1", 1), ("l2", 2)):
        flow = information_flow(bridge, tokens, distance=distance, keep_heads=True, progress=False)
        for index, layer in enumerate(layers):
            expected = reference_contributions(layer, p)
            for name, want in expected.items():
                got = flow.heads[index] if name == "heads" else getattr(flow, name)[index]
                error = relative_error(got, want)
                assert error < 1e-4, f"{family} {distance} layer {index} {name}: relative error {error:.1e}"


def test_a_norm_after_attention_that_is_not_an_rmsnorm_is_refused(one_torch_thread):
    """A post-attention norm whose output is not gain * x / rms(x) (here: a bias added to OLMo-2's) gets an
    anchorlens error naming the norm, not a silent decomposition."""
    bridge, _ = build("olmo2", seed=2)
    norm = bridge.blocks[1].ln1_post.original_component
    original = norm.forward
    norm.forward = lambda x: original(x) + 0.5
    with pytest.raises(UnsupportedArchitectureError, match="norm after attention"):
        information_flow(bridge, TEXT, progress=False)




def flow_trace(bridge):
    from anchorlens import Trace

    return Trace.from_text(bridge, "First we add the numbers. Then we check the sum. The answer is seven.",
                           prompt="What is 3 plus 4?")


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_sentence_flow_equals_the_token_level_flow(family, one_torch_thread):
    """Bounded-memory sentence flow (sliding windows shorter than the text, sinks, softcap, a norm after attention
    held at its clean scale, an output bias) against the token-level flow reduced to sentences, which the test
    above checks against parts built by hand from the Hugging Face model. Blocks of 5 queries and one layer per
    rerun group, so every block and checkpoint path runs; no FlowFallbackWarning."""
    import warnings

    from anchorlens.flow import FlowFallbackWarning, sentence_flow

    bridge, _ = build(family, seed=3)
    trace = flow_trace(bridge)
    assert trace.tokens().shape[-1] > 2 * 6  # several windows of arch_builders.WINDOW
    for distance in ("l1", "l2"):
        token_level = sentence_flow(bridge, trace, distance=distance, progress=False,
                                    flow=information_flow(bridge, trace, distance=distance, progress=False))
        with warnings.catch_warnings():
            warnings.simplefilter("error", FlowFallbackWarning)
            streamed = sentence_flow(bridge, trace, distance=distance, block_tokens=5, checkpoint_every=1, progress=False)
        for name in ("matrix", "to_answer"):
            error = relative_error(getattr(streamed, name), getattr(token_level, name).double())
            assert error < 1e-4, f"{family} {distance} {name}: relative error {error:.1e}"


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_streamed_flow_refuses_a_mask_it_does_not_recompute(family, one_torch_thread):
    """Keys hidden from the queries (here by ``hide_keys``, as suppression does) make the layer's mask differ from
    the causal / sliding-window one the streamed flow recomputes its patterns with: a clear refusal, not a flow
    of the wrong patterns."""
    from anchorlens.flow.sentences import span_matrix
    from anchorlens.flow.stream import streamed_sentence_flow
    from anchorlens.hooks.fused_attention import fused_attention, hide_keys

    bridge, _ = build(family, seed=3)
    trace = flow_trace(bridge)
    tokens = trace.tokens()
    members = span_matrix(trace.token_spans, tokens.shape[-1])
    with fused_attention(bridge), hide_keys(bridge, [(tokens.shape[-1] - 4, tokens.shape[-1] - 2)], layers=[0]):
        with pytest.raises(UnsupportedArchitectureError, match="unpadded sequence"):
            streamed_sentence_flow(bridge, tokens, members, tokens.shape[-1] - 1, progress=False)
