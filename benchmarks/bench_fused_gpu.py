"""GPU benchmark: fused (SDPA) attention on a randomly initialised Qwen2-1.5B-size model in bfloat16, 16k / 32k tokens.

    .venv/bin/python benchmarks/bench_fused_gpu.py                       # 16384 and 32768 tokens
    .venv/bin/python benchmarks/bench_fused_gpu.py --tokens 16384 --out gpu.json

Without CUDA it says so and exits with status 2 (nothing is measured on a CPU: a 32k-token eager forward
of a 1.5B model does not fit in this machine's memory).

For each length, in one process, same model (28 layers, d_model 1536, 12 heads, 2 KV heads, d_mlp 8960,
the shape of DeepSeek-R1-Distill-Qwen-1.5B; random weights, SmolLM2's tokenizer; a synthetic text
in 20 sentences of equal length after a short prompt):

- a plain forward, eager (today's bridge) and SDPA: seconds and peak CUDA memory
  (``torch.cuda.max_memory_allocated``, reset before each); eager may run out of memory, which is reported;
- ``sentence_attention``: eager hooks on ``hook_pattern`` against blocked from queries and keys;
- ``suppression_matrix`` for the 20 sentences (fast method, batched rows), eager against SDPA;
- ``LocalSampler`` tokens per second: 8 rollouts x 64 new tokens after a 2k-token prompt, eager against SDPA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QWEN2_1_5B = dict(n_layers=28, d_model=1536, n_heads=12, n_kv_heads=2, d_mlp=8960)
N_SENTENCES = 20


def measure(fn) -> dict:
    """Seconds and peak CUDA memory of ``fn()``; an out-of-memory error is a result, not a crash."""
    if not torch.cuda.is_available():  # --smoke on a CPU: checks the script runs, measures nothing of note
        start = time.perf_counter()
        fn()
        return {"seconds": round(time.perf_counter() - start, 3)}
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        out = fn()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"error": "out of memory", "peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    seconds = time.perf_counter() - start
    del out
    return {"seconds": round(seconds, 3), "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def synthetic_trace(model, n_tokens: int):
    """A trace of about ``n_tokens`` tokens: a short prompt and ``N_SENTENCES`` sentences of equal length."""
    import anchorlens as al

    words = ["seven", "times", "six", "is", "forty", "two", "and", "then", "we", "check"]
    per_sentence = (n_tokens - 64) // N_SENTENCES
    sentences = []
    for i in range(N_SENTENCES):
        body = " ".join(words[(i + k) % len(words)] for k in range(per_sentence - 2))
        sentences.append(f"Step {i}: {body}.")
    return al.Trace.from_text(model, " ".join(sentences), prompt="Solve this math problem step by step. ",
                              check_length=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-eager", action="store_true", help="only the SDPA runs (when eager cannot fit)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny bfloat16 model on the CPU: check that the script runs (use with --tokens 300)")
    options = parser.parse_args()
    if options.smoke:
        # bfloat16 as on the GPU: the same dtype paths (bf16 SDPA, logits upcast for the KL)
        return run(options, "cpu", dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_mlp=128), torch.bfloat16)
    if not torch.cuda.is_available():
        print("bench_fused_gpu.py: no CUDA device here, nothing measured. Run it on a machine with a GPU "
              "(a randomly initialised Qwen2-1.5B-size model in bfloat16 needs about 4 GB plus activations).")
        return 2
    return run(options, "cuda", QWEN2_1_5B, torch.bfloat16)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(options, device: str, shape: dict, dtype: torch.dtype) -> int:
    import anchorlens as al
    from anchorlens.hooks.fused_attention import fused_attention
    from anchorlens.suppression.runner import default_batch_positions

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke test)"
    model = al.random_model("qwen2", **shape, n_ctx=max(options.tokens) + 128, device=device,
                            dtype=dtype, check_cached_decoding=False)
    results = {"gpu": name, "torch": torch.__version__, "model": shape, "dtype": str(dtype), "runs": []}
    modes = ["sdpa"] if options.skip_eager else ["eager", "sdpa"]
    for n_tokens in options.tokens:
        trace = synthetic_trace(model, n_tokens)
        tokens = trace.tokens(device)
        row = {"tokens": trace.n_tokens, "sentences": trace.n_sentences,
               "default_batch_positions": default_batch_positions(model, trace.n_tokens, device)}
        with torch.inference_mode():
            for mode in modes:
                with fused_attention(model, mode):
                    row[f"forward_{mode}"] = measure(lambda: model(tokens, return_type="logits"))
                row[f"sentence_attention_{mode}"] = measure(lambda: al.sentence_attention(model, trace, attention=mode))
                row[f"suppression_{mode}"] = measure(lambda: al.suppression_matrix(
                    model, trace, attention=mode, progress=False))  # batch sizes: the CUDA defaults
                print(json.dumps(row), flush=True)
        results["runs"].append(row)
    prompt = " ".join(["the"] * (64 if options.smoke else 2048))
    requests = [al.SampleRequest(prompt, seed=s) for s in range(8)]
    params = al.SamplingParams(max_tokens=64)
    for mode in modes:
        sampler = al.LocalSampler(model, batch_size=8, progress=False, attention=mode)
        sampler.sample(requests[:1], al.SamplingParams(max_tokens=4))  # warm-up
        sync()
        start = time.perf_counter()
        out = sampler.sample(requests, params)
        sync()
        results[f"sampler_{mode}_tokens_per_s"] = sum(c.n_tokens for c in out) / (time.perf_counter() - start)
    print(json.dumps(results, indent=1))
    if options.out:
        options.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
