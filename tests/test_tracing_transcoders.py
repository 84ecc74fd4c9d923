"""Transcoder files (circuit-tracer's and sparsify's layouts) and the clear errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

import anchorlens as al
from anchorlens.errors import AnchorlensError, EmptyTextError, TraceTooLongError
from anchorlens.tracing.attribution import attribution_graph, prompt_tokens
from anchorlens.tracing.transcoders import TranscoderError, load_transcoders, random_transcoders


def test_circuit_tracer_layout_round_trip(tmp_path):
    tcs = random_transcoders(2, 16, 8, activation="jumprelu", skip=True, seed=0)
    tcs.save(tmp_path / "tc")
    config = yaml.safe_load((tmp_path / "tc" / "config.yaml").read_text())
    assert config["model_kind"] == "transcoder_set" and config["feature_input_hook"] == "mlp.hook_in"
    assert config["feature_output_hook"] == "hook_mlp_out"
    back = load_transcoders(tmp_path / "tc")
    x = torch.randn(3, 16)
    for a, b in zip(tcs, back):
        assert b.activation == "jumprelu" and b.W_skip is not None
        torch.testing.assert_close(a(x), b(x))


def test_relu_and_jumprelu_activations():
    tcs = random_transcoders(1, 8, 6, activation="jumprelu", seed=1)
    t = tcs[0]
    pre = torch.linspace(-1, 1, 6).expand(2, 6)
    expected = pre * (pre > t.threshold)  # JumpReLU: the value where it passes its threshold, else 0
    torch.testing.assert_close(t.activate(pre), expected)
    relu = random_transcoders(1, 8, 6, seed=1)[0]
    torch.testing.assert_close(relu.activate(pre), pre.clamp(min=0))


def test_sparsify_layout(tmp_path):
    """sparsify writes one folder per hookpoint: cfg.json + sae.safetensors (encoder.weight, W_dec, b_dec, ...)."""
    g = torch.Generator().manual_seed(0)
    for layer in range(2):
        folder = tmp_path / "sparsify" / f"layers.{layer}.mlp"
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text(json.dumps({"d_in": 16, "num_latents": 12, "k": 3, "transcode": True}))
        save_file({"encoder.weight": torch.randn(12, 16, generator=g), "encoder.bias": torch.randn(12, generator=g),
                   "W_dec": torch.randn(12, 16, generator=g), "b_dec": torch.randn(16, generator=g)},
                  str(folder / "sae.safetensors"))
    tcs = load_transcoders(tmp_path / "sparsify")
    assert len(tcs) == 2 and tcs.n_features == 12 and tcs[0].activation == "topk"
    acts = tcs[0].encode(torch.randn(5, 16))
    assert ((acts > 0).sum(-1) <= 3).all()


def test_unreadable_folders(tmp_path):
    with pytest.raises(TranscoderError, match="not a folder"):
        load_transcoders(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TranscoderError, match="neither config.yaml"):
        load_transcoders(tmp_path / "empty")
    tcs = random_transcoders(1, 8, 4).save(tmp_path / "tc")
    save_file({"W_enc": torch.zeros(4, 8)}, str(tcs / "layer_0.safetensors"))
    with pytest.raises(TranscoderError, match="lacks"):
        load_transcoders(tcs)


def test_bad_input_gets_clear_errors(tiny_llama, one_torch_thread):
    assert issubclass(TranscoderError, AnchorlensError)
    good = random_transcoders(2, 64, 8)
    with pytest.raises(TranscoderError, match="3 transcoders for a model with 2 layers"):
        attribution_graph(tiny_llama, random_transcoders(3, 64, 8), "Hello world", progress=False)
    with pytest.raises(TranscoderError, match="width 32"):
        attribution_graph(tiny_llama, random_transcoders(2, 32, 8), "Hello world", progress=False)
    with pytest.raises(EmptyTextError, match="empty"):
        attribution_graph(tiny_llama, good, "   ", progress=False)
    with pytest.raises(TraceTooLongError, match="context"):
        prompt_tokens(tiny_llama, list(range(5, 5 + tiny_llama.cfg.n_ctx + 1)))
    with pytest.raises(AnchorlensError, match="max_feature_nodes"):
        attribution_graph(tiny_llama, good, "Hello world", max_feature_nodes=-1, progress=False)


def test_bos_is_put_in_front_once(tiny_llama):
    tokens = prompt_tokens(tiny_llama, "Hello")
    assert tokens[0] == tiny_llama.tokenizer.bos_token_id
    assert prompt_tokens(tiny_llama, tokens).tolist() == tokens.tolist()


def test_graph_save_load(tiny_llama, tmp_path, one_torch_thread):
    graph = attribution_graph(tiny_llama, random_transcoders(2, 64, 8), "Hello world", progress=False).prune()
    back = al.AttributionGraph.load(graph.save(tmp_path / "g.npz"))
    torch.testing.assert_close(back.adjacency, graph.adjacency)
    assert back.nodes.equals(graph.nodes) and back.scores() == graph.scores()
    assert list(graph.nodes.columns[:5]) == ["kind", "layer", "position", "feature", "token_id"]
    kinds = graph.nodes["kind"].tolist()
    assert kinds == sorted(kinds, key=["feature", "error", "token", "logit"].index)


def test_sparsify_files_written_by_sparsify():
    """Folders written by eai-sparsify 1.3.3 itself (tests/data/sparsify): the same outputs as sparsify computed."""
    import numpy as np
    from pathlib import Path

    data = Path(__file__).parent / "data" / "sparsify"
    expected = np.load(data / "expected.npz")
    tcs = load_transcoders(data)
    assert tcs.skip_connection and tcs[0].top_k == 4
    for layer, t in enumerate(tcs):
        np.testing.assert_allclose(t(torch.tensor(expected["x"][layer])).numpy(), expected["y"][layer], atol=1e-5)
