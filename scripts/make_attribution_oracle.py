"""Make circuit-tracer's graphs for the comparison cases in tests/data/attribution/ (see its README).

Run with anchorlens's environment; it calls circuit-tracer's (``--ct-python``) on scripts/circuit_tracer_oracle.py:

    .venv/bin/python scripts/make_attribution_oracle.py --ct-python /work/venvs/circuit-tracer/bin/python

Each case is a model (a seeded random Llama, or the embedded SmolLM2) and seeded transcoders
(``anchorlens.attribution.transcoders.random_transcoders``), so the test rebuilds both from the seed and compares
anchorlens's graph to the stored one without circuit-tracer installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "attribution"
sys.path.insert(0, str(REPO / "tests"))

from attribution_cases import CASES, case_model, case_transcoders  # noqa: E402


def save_random_llama(case: dict, target: Path) -> Path:
    """The Hugging Face model that ``random_model`` wraps (same config, same seed), saved as a folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from anchorlens.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=case["d_model"], intermediate_size=4 * case["d_model"],
                         num_hidden_layers=case["n_layers"], num_attention_heads=case["n_heads"],
                         num_key_value_heads=case["n_kv_heads"], max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(case["seed"])
    hf_model = LlamaForCausalLM(config).eval()
    bridge = case_model(case)  # the same weights, or the comparison would be meaningless
    tokens = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        assert torch.allclose(hf_model(tokens).logits, bridge(tokens), atol=1e-5), "random_model changed its init"
    hf_model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ct-python", default="/work/venvs/circuit-tracer/bin/python")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    from anchorlens.models import embedded_model_dir

    for name in args.cases:
        case = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if case["model"] == "smollm2":
                model_dir = embedded_model_dir()
            else:
                model_dir = save_random_llama(case, tmp / "model")
            transcoder_dir = case_transcoders(case).save(tmp / "transcoders")
            done = subprocess.run([args.ct_python, str(REPO / "scripts" / "circuit_tracer_oracle.py"),
                                   "--model", str(model_dir), "--transcoders", str(transcoder_dir),
                                   "--prompt", case["prompt"], "--out", str(OUT / f"{name}.npz"),
                                   "--json-dir", str(tmp / "json"),
                                   "--batch-size", str(case.get("batch_size", 64)),
                                   "--input-hook", case.get("input_hook", "mlp.hook_in"),
                                   "--output-hook", case.get("output_hook", "hook_mlp_out"),
                                   *(["--targets", json.dumps(case["targets"])] if case.get("targets") else []),
                                   *(["--interventions", json.dumps(case["interventions"])]
                                     if case.get("interventions") else []),
                                   *(["--max-feature-nodes", str(case["max_feature_nodes"])]
                                     if case.get("max_feature_nodes") else [])],
                                  capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-4000:])
                return 1
            print(name, done.stdout.strip().splitlines()[-1])
            if name in ("tiny_llama_relu", "tiny_llama_logit_diff"):  # frontend JSON, for the export tests
                (OUT / f"{name}.json").write_text((tmp / "json" / "oracle.json").read_text())
    (OUT / "cases.json").write_text(json.dumps(CASES, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
