"""``--dtype float16``: accepted where the model's activations fit float16's range, refused with a clear error where not.

Model folders are small random Llama models saved with ``save_pretrained`` (as a user's checkpoint would be); one
has its embedding scaled up so that the residual stream comes near float16's largest value (65504), as Gemma's do.
"""

from __future__ import annotations

import pytest
import torch

from anchorlens import UnsupportedDtypeError, load_model
from anchorlens.cli import main
from arch_builders import build, hf_model, tokenizer

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module", autouse=True)
def _warm(one_torch_thread):
    """Import TransformerLens and load the tokenizer once, outside the timed tests."""
    build("llama")


def save_folder(folder, scale: float = 1.0):
    model = hf_model("llama", seed=7)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(scale)
    model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return model


def test_float16_loads_where_the_activations_fit(tmp_path, one_torch_thread):
    reference = save_folder(tmp_path)
    model = load_model(str(tmp_path), device="cpu", dtype="float16")
    assert next(model.parameters()).dtype == torch.float16
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        expected = reference(tokens).logits
        got = model(tokens).float()
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-2  # float16 rounding, not a wrong model


def test_float16_is_refused_where_activations_near_its_range(tmp_path, one_torch_thread, capsys):
    save_folder(tmp_path, scale=3e5)
    with pytest.raises(UnsupportedDtypeError, match="bfloat16"):
        load_model(str(tmp_path), device="cpu", dtype=torch.float16)
    code = main(["analyze", "--model", str(tmp_path), "--dtype", "float16", "--device", "cpu",
                 "--out", str(tmp_path / "report")])
    assert code != 0
    assert "bfloat16" in capsys.readouterr().err


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        load_model("anything", dtype="int8")
