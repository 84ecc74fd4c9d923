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
