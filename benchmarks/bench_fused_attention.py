"""Benchmark: fused (SDPA) attention against today's eager attention bridge, same process, same inputs.

    .venv/bin/python benchmarks/bench_fused_attention.py suppression   # suppression matrix, 1k-token trace
    .venv/bin/python benchmarks/bench_fused_attention.py sampler       # LocalSampler tokens/s, 500-token prompt
    .venv/bin/python benchmarks/bench_fused_attention.py memory        # sentence_attention peak memory, 4k / 8k

1. ``suppression``: ``suppression_matrix(method="fast")`` (prefix reuse) of a ~1k-token real chain of thought
   on SmolLM2, every sentence, ``attention="eager"`` (hook_attn_scores hooks) against ``attention="sdpa"``
   (the SDPA key mask), alternating order; wall and process CPU time; the largest per-token KL difference.
2. ``sampler``: ``LocalSampler`` on SmolLM2, 4 rollouts x 32 new tokens from a ~500-token prompt, eager
   against SDPA, alternating; tokens per second (prefill included) and whether the texts agree.
3. ``memory``: each measurement in a fresh subprocess: the rise of peak resident memory over the memory
   after loading, for a plain forward (eager and SDPA) and ``sentence_attention`` (eager hooks on
   ``hook_pattern`` against blocked-from-queries-and-keys) at 4k and 8k tokens. The model: SmolLM2's
   attention and vocabulary (9 heads, 3 KV heads, d_model 576, 49k tokens) with 6 random layers instead
   of 30: the peak is set by one layer's transient tensors and the logits, not by the depth, and 8k-token
   eager forwards of all 30 layers take minutes each on this machine.

Run single-threaded (``OMP_NUM_THREADS=1``); the script prints the load average, which the README notes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import anchorlens as al  # noqa: E402
from anchorlens.hooks.fused_attention import fused_attention  # noqa: E402
from bench_suppression import LONG_SOURCE, SHORT_SOURCE, trace_with_budget  # noqa: E402


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def load_average() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def bench_suppression(repeats: int) -> dict:
    model = al.load_model()
    trace = trace_with_budget(model, 1024, SHORT_SOURCE)
    print(f"suppression: {trace.n_tokens} tokens, {trace.n_sentences} sentences, load {load_average()}", flush=True)
    times = {"eager": [], "sdpa": []}
    cpu = {"eager": [], "sdpa": []}
    results = {}
    for rep in range(repeats):
        for attention in (("eager", "sdpa") if rep % 2 == 0 else ("sdpa", "eager")):
            wall, proc, results[attention] = timed(
                lambda: al.suppression_matrix(model, trace, method="fast", attention=attention, progress=False)
            )
            times[attention].append(wall)
            cpu[attention].append(proc)
            print(f"  {attention:5s} {wall:7.1f} s wall {proc:7.1f} s CPU  (load {load_average()})", flush=True)
    eager_kl, sdpa_kl = results["eager"].token_kl, results["sdpa"].token_kl
    gap = (eager_kl - sdpa_kl).nan_to_num(0).abs()
    diff = float(gap.max())
    finite = ~eager_kl.isnan()
    return {
        "tokens": trace.n_tokens, "sentences": trace.n_sentences, "eager_s": times["eager"], "sdpa_s": times["sdpa"],
        "eager_cpu_s": cpu["eager"], "sdpa_cpu_s": cpu["sdpa"],
        "wall_ratio": sum(times["eager"]) / sum(times["sdpa"]), "cpu_ratio": sum(cpu["eager"]) / sum(cpu["sdpa"]),
        "max_token_kl_diff": diff, "entries": int(finite.sum()), "entries_over_1e-4": int((gap > 1e-4).sum()),
        "max_relative_diff": float((gap / eager_kl.nan_to_num(0).abs().clamp_min(1e-3)).max()),
        "max_token_kl": float(eager_kl.nan_to_num(0).max()), "load_after": load_average(),
    }


def bench_sampler(repeats: int, rollouts: int = 4, new_tokens: int = 32) -> dict:
    model = al.load_model()
    trace = trace_with_budget(model, 500, SHORT_SOURCE)
    prompt = trace.prompt + trace.cot
    print(f"sampler: {trace.n_tokens}-token prompt, {rollouts} x {new_tokens} tokens, load {load_average()}", flush=True)
    requests = [al.SampleRequest(prompt, seed=s) for s in range(rollouts)]
    params = al.SamplingParams(max_tokens=new_tokens, temperature=0.6)
    rates = {"eager": [], "sdpa": []}
    texts = {}
    for rep in range(repeats):
        for attention in (("eager", "sdpa") if rep % 2 == 0 else ("sdpa", "eager")):
            sampler = al.LocalSampler(model, batch_size=rollouts, progress=False, attention=attention)
            wall, proc, out = timed(lambda: sampler.sample(requests, params))
            n = sum(c.n_tokens for c in out)
            rates[attention].append(n / wall)
            texts[attention] = [c.text for c in out]
            print(f"  {attention:5s} {n} tokens in {wall:6.1f} s = {n / wall:5.2f} tokens/s (CPU {proc:.1f} s)", flush=True)
    return {
        "prompt_tokens": trace.n_tokens, "rollouts": rollouts, "new_tokens": new_tokens,
        "eager_tokens_per_s": rates["eager"], "sdpa_tokens_per_s": rates["sdpa"],
        "ratio": sum(rates["sdpa"]) / sum(rates["eager"]), "same_texts": texts["eager"] == texts["sdpa"],
        "load_after": load_average(),
    }


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def memory_child(n_tokens: int, what: str) -> dict:
    """One measurement, in its own process (peak RSS only grows)."""
    torch.set_num_threads(1)
    model = al.random_model("llama", n_layers=6, d_model=576, n_heads=9, n_kv_heads=3, d_mlp=1536, n_ctx=8192,
                            check_attention_edits=False, check_cached_decoding=False)
    source = json.loads(LONG_SOURCE.read_text())
    thinking = source["solution"].split("</think>")[0].strip()  # the splitter keeps only text before </think>
    cot = "\n\n".join([thinking] * 3)  # long enough for 8k tokens
    sentences = al.split_sentences(cot)
    lo, hi = 1, len(sentences)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        t = al.Trace.from_text(model, cot[: sentences[mid - 1].end], prompt=source["prompt"], check_length=False)
        lo, hi = (mid, hi) if t.n_tokens <= n_tokens else (lo, mid - 1)
    trace = al.Trace.from_text(model, cot[: sentences[lo - 1].end], prompt=source["prompt"])
    tokens = trace.tokens()
    before = rss_gb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    with torch.inference_mode():
        if what == "forward-eager":
            wall, _, _ = timed(lambda: model(tokens, return_type="logits"))
        elif what == "forward-sdpa":
            with fused_attention(model):
                wall, _, _ = timed(lambda: model(tokens, return_type="logits"))
        else:
            attention = what.split("-")[1]
            wall, _, _ = timed(lambda: al.sentence_attention(model, trace, attention=attention))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {"tokens": trace.n_tokens, "sentences": trace.n_sentences, "what": what, "seconds": wall,
            "rss_before_gb": before, "peak_gb": peak, "peak_before_gb": peak_before, "rise_gb": peak - before}


def bench_memory(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        for what in ("forward-eager", "forward-sdpa", "attention-eager", "attention-sdpa"):
            out = subprocess.run([sys.executable, __file__, "memory-child", str(n), what], capture_output=True,
                                 text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode != 0:
                print(out.stderr[-2000:])
                rows.append({"tokens": n, "what": what, "error": out.returncode})
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  {n:5d} {what:16s} {row['tokens']} tokens: +{row['rise_gb']:.2f} GB peak, {row['seconds']:.1f} s "
                  f"(load {load_average()})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["suppression", "sampler", "memory", "memory-child"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    options = parser.parse_args()
    torch.set_num_threads(1)
    if options.part == "memory-child":
        print(json.dumps(memory_child(int(options.args[0]), options.args[1])))
        return
    print(f"load average at start: {load_average()}; torch threads: {torch.get_num_threads()}", flush=True)
    if options.part == "suppression":
        result = bench_suppression(options.repeats)
    elif options.part == "sampler":
        result = bench_sampler(options.repeats)
    else:
        result = bench_memory([int(a) for a in options.args] or [4096, 8000])
    print(json.dumps(result, indent=1))
    if options.out:
        options.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
