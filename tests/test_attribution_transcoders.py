"""Transcoder files (circuit-tracer's and sparsify's layouts) and the clear errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

import anchorlens as al
from anchorlens.errors import AnchorlensError, EmptyTextError, TraceTooLongError
from anchorlens.attribution.attribute import attribution_graph, prompt_tokens
from anchorlens.attribution.transcoders import TranscoderError, load_transcoders, random_transcoders


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


def write_released_layout(folder, tcs, input_hook="mlp.hook_in", output_hook="mlp.hook_out"):
    """A folder as a download of circuit-tracer's released Qwen3 transcoders looks: config.yaml naming the layer
    files by hf:// address, and layer_{i}.safetensors with its keys (W_enc, W_dec, b_enc, b_dec, ...)."""
    folder.mkdir(parents=True)
    for i, t in enumerate(tcs):
        tensors = {"W_enc": t.W_enc, "W_dec": t.W_dec, "b_enc": t.b_enc, "b_dec": t.b_dec}
        if t.threshold is not None:
            tensors["activation_function.threshold"] = t.threshold
        if t.W_skip is not None:
            tensors["W_skip"] = t.W_skip
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"layer_{i}.safetensors"))
    config = {"model_name": "Qwen/Qwen3-0.6B", "model_kind": "transcoder_set", "feature_input_hook": input_hook,
              "feature_output_hook": output_hook, "scan": "someone/tiny-transcoders",
              "transcoders": [f"hf://someone/tiny-transcoders/layer_{i}.safetensors?revision=main"
                              for i in range(len(tcs))]}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_a_released_folder_loads_as_it_is(tiny_llama, tmp_path, one_torch_thread):
    """mlp.hook_in / mlp.hook_out and hf:// file names, as circuit-tracer's released configs write them: loaded
    as they are, the same graph as the same weights under anchorlens's names (and as circuit-tracer's, in
    test_attribution_oracle)."""
    tcs = random_transcoders(2, 64, 16, activation="jumprelu", skip=True, seed=7)
    back = load_transcoders(write_released_layout(tmp_path / "released", tcs))
    assert (back.feature_input_hook, back.feature_output_hook) == ("mlp.hook_in", "mlp.hook_out")
    assert (back.input_site, back.output_site) == ("mlp.hook_in", "hook_mlp_out")
    assert back.scan == "someone/tiny-transcoders" and back.skip_connection
    ours = attribution_graph(tiny_llama, tcs, "The capital of France is", progress=False)
    theirs = al.attribution_graph(tiny_llama, back, "The capital of France is", progress=False)
    torch.testing.assert_close(theirs.adjacency, ours.adjacency, rtol=0, atol=0)
    assert theirs.active_features.tolist() == ours.active_features.tolist()
    # saved again, it keeps circuit-tracer's names
    again = load_transcoders(back.save(tmp_path / "again"))
    assert (again.feature_input_hook, again.feature_output_hook) == ("mlp.hook_in", "mlp.hook_out")


def test_hook_names_anchorlens_cannot_attribute(tiny_llama, tmp_path, one_torch_thread):
    tcs = random_transcoders(2, 64, 8, seed=0)
    gemma = load_transcoders(write_released_layout(tmp_path / "gemma", tcs, input_hook="ln2.hook_normalized",
                                                   output_hook="hook_mlp_out"))
    with pytest.raises(TranscoderError, match="Gemma 2/3"):
        attribution_graph(tiny_llama, gemma, "Hello world", progress=False)
    odd = load_transcoders(write_released_layout(tmp_path / "odd", tcs, output_hook="hook_resid_post"))
    with pytest.raises(TranscoderError, match=r"write 'hook_resid_post'.*'mlp.hook_out'"):
        attribution_graph(tiny_llama, odd, "Hello world", progress=False)
    missing = write_released_layout(tmp_path / "missing", tcs)
    (missing / "layer_1.safetensors").unlink()
    with pytest.raises(TranscoderError, match="snapshot_download"):
        load_transcoders(missing)


def test_attribution_targets_bad_input(tiny_llama, one_torch_thread):
    tcs = random_transcoders(2, 64, 8, seed=0)
    graph = lambda targets: attribution_graph(tiny_llama, tcs, "Hello world", progress=False,  # noqa: E731
                                              attribution_targets=targets)
    d_vocab = tiny_llama.cfg.d_vocab
    vector = torch.randn(64)
    cases = [([], "empty list"), (torch.tensor([], dtype=torch.long), "empty tensor"),
             ([" Paris is"], "not one"), (torch.tensor([d_vocab]), "outside the vocabulary"),
             (torch.tensor([0.5]), "token ids"), ([" Paris", ("x", 1.0, vector)], "mixes"),
             ([("x", 1.0, torch.randn(32))], r"shape \(64,\)"), ([("x", float("nan"), vector)], "finite"),
             ([("x", 1.0)], "2 elements"), ("Paris", "not str"), ([3.5], "not float")]
    for targets, message in cases:
        with pytest.raises(al.TargetError, match=message):
            graph(targets)
    with pytest.raises(al.TargetError, match="same token"):
        al.logit_difference_target(tiny_llama, " Paris", 7042)
    assert issubclass(al.TargetError, AnchorlensError)
    # circuit-tracer's plain (label, weight, vector) tuples are custom targets too
    named, plain = graph([al.CustomTarget("v", 0.5, vector)]), graph([("v", 0.5, vector)])
    torch.testing.assert_close(named.adjacency, plain.adjacency)
    assert plain.logit_token_ids.tolist() == [d_vocab] and plain.logit_labels == ["v"]
