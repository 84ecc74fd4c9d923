"""train_transcoders: learns (FVU falls), reports FVU and L0, resumes exactly after a crash, caches."""

from __future__ import annotations

import pytest
import torch

import anchorlens.attribution.training as training
from anchorlens.attribution.training import TrainingInputError, shipped_corpus, train_transcoders
from anchorlens.attribution.transcoders import load_transcoders

SETTINGS = dict(n_features=64, steps=6, windows_per_step=2, context=24, lr=3e-3, progress=False, checkpoint_every=2)


def test_training_learns_and_reports(tiny_llama, tmp_path, one_torch_thread):
    texts = shipped_corpus()[:4]
    short = train_transcoders(tiny_llama, texts, **(SETTINGS | {"steps": 1}), out=tmp_path / "a", cache=False)
    longer = train_transcoders(tiny_llama, texts, **(SETTINGS | {"steps": 30}), out=tmp_path / "b", cache=False)
    for before, after in zip(short.meta["layers"], longer.meta["layers"]):
        assert after["fvu"] < before["fvu"] and after["l0"] > 0
    assert longer.meta["layers"][0]["fvu"] < 1.0  # better than predicting the mean output
    saved = load_transcoders(tmp_path / "b")  # circuit-tracer's layout, with the report beside it
    assert saved.meta["layers"] == longer.meta["layers"] and len(saved) == tiny_llama.cfg.n_layers


def test_resumes_after_a_crash_to_the_same_weights(tiny_llama, tmp_path, monkeypatch, one_torch_thread):
    texts = shipped_corpus()[:3]
    clean = train_transcoders(tiny_llama, texts, **SETTINGS, out=tmp_path / "clean")
    real, calls = training._activations, {"n": 0}

    def crash_on_fifth(model, windows):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(model, windows)

    monkeypatch.setattr(training, "_activations", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train_transcoders(tiny_llama, texts, **SETTINGS, out=tmp_path / "resumed")
    assert (tmp_path / "resumed.checkpoint.pt").exists()
    monkeypatch.setattr(training, "_activations", real)
    calls["n"] = 0
    resumed = train_transcoders(tiny_llama, texts, **SETTINGS, out=tmp_path / "resumed")
    for a, b in zip(clean, resumed):
        torch.testing.assert_close(a.W_enc, b.W_enc)
        torch.testing.assert_close(a.W_dec, b.W_dec)

    def no_model(model, windows):
        raise AssertionError("a finished run must be loaded from its folder, not trained again")

    monkeypatch.setattr(training, "_activations", no_model)
    again = train_transcoders(tiny_llama, texts, **SETTINGS, out=tmp_path / "resumed")
    torch.testing.assert_close(again[0].W_enc, resumed[0].W_enc)


def test_bad_training_input(tiny_llama):
    with pytest.raises(TrainingInputError, match="no training text"):
        train_transcoders(tiny_llama, ["  "], progress=False)
    with pytest.raises(TrainingInputError, match="no window"):
        train_transcoders(tiny_llama, ["two words"], context=64, progress=False, cache=False)


def test_cross_layer_training_reconstructs_mlp_outputs(tiny_llama, tmp_path, one_torch_thread):
    """A small CLT (each layer's features write to every later MLP output): on text it did not train on, its
    reconstruction of the real MLP outputs beats zero and the mean, and its decoders to later layers carry part of
    it (without them the error grows); saved in circuit-tracer's CLT layout and attributed with."""
    import anchorlens as al
    from anchorlens.attribution.training import _activations, fvu, token_windows
    from anchorlens.attribution.transcoders import Transcoder, TranscoderSet

    texts = shipped_corpus()
    clt = train_transcoders(tiny_llama, texts[:6], **(SETTINGS | {"steps": 100}), out=tmp_path / "clt", cache=False,
                            cross_layer=True)
    n_layers = tiny_llama.cfg.n_layers
    assert clt.cross_layer and [t.reach for t in clt] == list(range(n_layers, 0, -1))
    assert (tmp_path / "clt" / "W_dec_0.safetensors").exists()
    assert al.load_transcoders(tmp_path / "clt").meta["layers"] == clt.meta["layers"]
    bos = tiny_llama.tokenizer.bos_token_id or tiny_llama.tokenizer.eos_token_id
    inputs, real = _activations(tiny_llama, token_windows(tiny_llama.tokenizer, texts[-3:], 24, bos))
    own_only = TranscoderSet([Transcoder(t.W_enc, t.b_enc, t.W_dec[:, 0], t.b_dec) for t in clt])
    with torch.no_grad():
        acts = [clt.encode_layer(i, x) for i, x in enumerate(inputs)]
        for layer, (x, y) in enumerate(zip(inputs, real)):
            y_hat = clt.decode_layer(layer, acts, x)
            assert (y - y_hat).pow(2).sum() < y.pow(2).sum()  # better than predicting zero
            assert fvu(y, y_hat) < 1.0  # and than predicting the mean
            if layer > 0:  # the later decoders matter: without them the error is larger
                assert fvu(y, own_only.decode_layer(layer, acts, x)) > fvu(y, y_hat)
    graph = al.attribution_graph(tiny_llama, clt, "The capital of France is", progress=False)
    assert graph.n_features > 0 and graph.adjacency.abs().sum() > 0
    with pytest.raises(TrainingInputError, match="skip"):
        train_transcoders(tiny_llama, texts[:2], **SETTINGS, cross_layer=True, skip=True, cache=False)
