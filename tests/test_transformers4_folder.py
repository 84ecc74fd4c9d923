"""The de-quantised model folder reads the same under transformers 4.x as under 5 (issue 10).

Users hand the folder to ``vllm serve``, circuit-tracer and other tools that may run transformers 4.57. A real
transformers 4.57.3 (in its own virtual environment, built once from requirements/transformers4-lock.txt; no
torch needed to read configs and tokenizers) reads the folder, and its config and tokenizer must agree with
transformers 5's: the RoPE base above all, which 4.57 silently took as 10000 when it was stored only in
``rope_parameters``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from anchorlens.models import cache_dir, embedded_model_dir
from conftest import REPO

LOCK = REPO / "requirements" / "transformers4-lock.txt"
TEXTS = ["Hello world 6*7=42", "What is 6 times 7?\n<think>\nSix sevens are 42.", " \\boxed{42} "]
READ = r"""
import json, sys
from transformers import AutoConfig, AutoTokenizer
import transformers
folder, texts = sys.argv[1], json.loads(sys.argv[2])
config = AutoConfig.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
rope = getattr(config, "rope_parameters", None)  # transformers 5; 4.x has rope_theta and rope_scaling
rope_theta = rope["rope_theta"] if rope else config.rope_theta
rope_type = (rope or config.rope_scaling or {}).get("rope_type", "default")
chat = tokenizer.apply_chat_template([{"role": "user", "content": texts[1]}], add_generation_prompt=True, tokenize=False)
print(json.dumps({
    "version": transformers.__version__,
    "model_type": config.model_type,
    "rope_theta": rope_theta,
    "rope_type": rope_type,
    "shape": [config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
              config.intermediate_size, config.vocab_size],
    "rms_norm_eps": config.rms_norm_eps,
    "tie_word_embeddings": config.tie_word_embeddings,
    "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
    "ids": [tokenizer(t)["input_ids"] for t in texts],
    "chat": chat,
}))
"""


@pytest.fixture(scope="module")
def transformers4_python():
    """A Python with transformers 4.57.3 only (kept in the anchorlens cache: built once per machine)."""
    venv = cache_dir() / "venvs" / "transformers-4.57.3"
    python = venv / "bin" / "python"
    if not (venv / "ready").exists() or (venv / "ready").read_text() != LOCK.read_text():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(LOCK)], check=True, timeout=900)
        (venv / "ready").write_text(LOCK.read_text())
    return python


def read_with(python, folder) -> dict:
    done = subprocess.run([str(python), "-c", READ, str(folder), json.dumps(TEXTS)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_transformers4_reads_the_embedded_folder_as_transformers5_does(transformers4_python):
    folder = embedded_model_dir()
    old, new = read_with(transformers4_python, folder), read_with(sys.executable, folder)
    assert old["version"] == "4.57.3" and new["version"].startswith("5.")
    assert old["rope_theta"] == 100000.0  # SmolLM2's RoPE base, not 4.x's default 10000
    assert new["rope_theta"] == 100000.0
    for key in ("model_type", "rope_type", "shape", "rms_norm_eps", "tie_word_embeddings", "special", "ids", "chat"):
        assert old[key] == new[key], key
