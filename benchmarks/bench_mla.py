"""Benchmark: ``sentence_attention`` on DeepSeek-V3's multi-head latent attention, fused against eager.

    .venv/bin/python benchmarks/bench_mla.py                  # 4k tokens, one thread, 3 interleaved rounds
    .venv/bin/python benchmarks/bench_mla.py --tokens 1000    # a quicker look

A random DeepSeek-V3 (4 layers, d_model 512, 8 heads; q_lora_rank 384, kv_lora_rank 256, query/key heads
64 nope + 32 rope wide, value heads 64, 8 routed experts of which 2 per token, layer 0 dense; yarn rope
scaling) on a real chain of thought cut to ``--tokens`` tokens, float32 on a CPU, one torch thread. In the
same run, for scale: a random Qwen2 of the same size (4 layers, d_model 512, 8 heads, 2 KV heads).

Rows: ``sentence_attention`` fused (SDPA forward, each layer's pattern rebuilt a block of queries at a time
from the observed queries and keys) and eager (TransformerLens's ``MLAAttentionBridge`` forward, each layer's
``[head, T, T]`` pattern reduced at ``hook_pattern``), one plain fused forward (the bound the issue sets:
peak memory at most 1.5x of it), and Qwen2's fused ``sentence_attention``.
Time: the methods interleaved, ``--repeats`` rounds after one warm-up; wall and process CPU time (the better
measure on a shared machine), ratios of CPU medians.
Memory: each cell in a fresh subprocess, the peak resident set above the loaded model (as
bench_sentence_attention.py measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import anchorlens as al  # noqa: E402
from anchorlens.hooks.fused_attention import fused_attention  # noqa: E402
from bench_sentence_attention import rss_kb, trace_of_length  # noqa: E402
from test_arch_mla import random_deepseek_v3  # noqa: E402

MLA_SIZES = dict(
    hidden_size=512, intermediate_size=1536, moe_intermediate_size=256, num_attention_heads=8, num_key_value_heads=8,
    n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, q_lora_rank=384, kv_lora_rank=256,
    qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, max_position_embeddings=32768,
)
METHODS = ("mla sentence_attention fused", "mla sentence_attention eager", "mla plain forward fused",
           "qwen2 sentence_attention fused")


def build(kind: str):
    if kind == "mla":
        model, _ = random_deepseek_v3(seed=0, n_layers=4, sharpen=1.0, **MLA_SIZES)
        return model
    return al.random_model("qwen2", n_layers=4, d_model=512, n_heads=8, n_kv_heads=2, d_mlp=1536, n_ctx=32768,
                           check_cached_decoding=False)


def runner(method: str, model, trace):
    tokens = trace.tokens()
    if method.endswith("sentence_attention fused"):
        return lambda: al.sentence_attention(model, trace, attention="sdpa")
    if method.endswith("sentence_attention eager"):
        return lambda: al.sentence_attention(model, trace, attention="eager")

    def plain():
        with fused_attention(model):
            model(tokens, return_type=None)
    return plain


def child(method: str, n_tokens: int) -> None:
    torch.set_num_threads(1)
    model = build(method.split()[0])
    trace = trace_of_length(model, n_tokens)
    run = runner(method, model, trace)
    with torch.inference_mode():
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set size to now
        before = rss_kb("VmRSS") * 1024
        run()
        peak = rss_kb("VmHWM") * 1024 - before
    print(json.dumps({"method": method, "tokens": trace.n_tokens, "peak_bytes": peak}))


def measure_memory(method: str, n_tokens: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", method, "--tokens", str(n_tokens)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_time(n_tokens: int, repeats: int) -> dict:
    torch.set_num_threads(1)
    models = {"mla": build("mla"), "qwen2": build("qwen2")}
    traces = {kind: trace_of_length(model, n_tokens) for kind, model in models.items()}
    runs = {m: runner(m, models[m.split()[0]], traces[m.split()[0]]) for m in METHODS}
    times = {m: [] for m in METHODS}
    cpu = {m: [] for m in METHODS}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            run()
        for _ in range(repeats):
            for method, run in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                times[method].append(time.perf_counter() - start)
                cpu[method].append(time.process_time() - start_cpu)
    fused, eager = al.sentence_attention(models["mla"], traces["mla"], attention="sdpa"), \
        al.sentence_attention(models["mla"], traces["mla"], attention="eager")
    return {
        "tokens": {kind: trace.n_tokens for kind, trace in traces.items()},
        "sentences": traces["mla"].n_sentences,
        "median_s": {m: statistics.median(t) for m, t in times.items()},
        "median_cpu_s": {m: statistics.median(t) for m, t in cpu.items()},
        "fused_vs_eager_max_abs": float((fused.matrix - eager.matrix).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.tokens)
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    result = measure_time(args.tokens, args.repeats)
    memory = {m: measure_memory(m, args.tokens)["peak_bytes"] for m in METHODS}
    med, med_cpu = result["median_s"], result["median_cpu_s"]
    print(f"{result['tokens']} tokens, {result['sentences']} sentences (MLA), median of {args.repeats}; "
          f"fused vs eager sentence matrices: max abs difference {result['fused_vs_eager_max_abs']:.1e}")
    base_t, base_m = med_cpu["mla sentence_attention eager"], memory["mla sentence_attention eager"]
    plain_m = memory["mla plain forward fused"]
    for m in METHODS:
        print(f"  {m:32s} {med[m]:7.2f} s wall {med_cpu[m]:7.2f} s CPU  x{med_cpu[m] / base_t:.2f} of eager (CPU)"
              f"   peak {memory[m] / 2**20:7.0f} MiB"
              f"  x{memory[m] / base_m:.2f} of eager  x{memory[m] / plain_m:.2f} of a plain fused forward")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
