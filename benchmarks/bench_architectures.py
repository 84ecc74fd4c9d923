"""Benchmark: sentence attention on each family's random model against Qwen2 of the same size, same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_architectures.py [--tokens 4096] [--out results.json]

Models: ``random_model(family, n_layers=4, d_model=512, n_heads=8, n_kv_heads=2)`` for Qwen2 (the baseline),
Qwen3, OLMo-3, Gemma 3 and gpt-oss, with each family's released sliding window (OLMo-3 4096, Gemma 3 1024,
gpt-oss 128; ``random_models.REAL_SIZES``). gpt-oss's mixture of experts routes each token to one of 4 experts
of Qwen2's MLP width, so both do the same MLP work per token and the ratio measures attention. The trace: a real chain of
thought (``benchmarks/data``) cut to the largest whole-sentence prefix of at most ``--tokens`` tokens.

Each measurement runs in a fresh process (peak resident memory only grows), one torch thread:
``sentence_attention(model, trace)`` (fused, blocked) and one plain fused (SDPA) forward of the same model on the
same tokens, with logits (what "one forward" costs a user). Reported: process CPU seconds (one thread; wall
seconds too), the rise of peak RSS over
the memory after loading, and the ratios family / Qwen2 (time, memory) and sentence attention / plain forward
(memory). The machine is shared: read times as ratios within one run, and rerun when the load average is high.
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
from anchorlens.hooks.fused_attention import fused_attention, layer_attention_modes  # noqa: E402
from anchorlens.random_models import REAL_SIZES  # noqa: E402
from bench_fused_attention import load_average, rss_gb  # noqa: E402
from bench_suppression import LONG_SOURCE, trace_with_budget  # noqa: E402

FAMILIES = ("qwen2", "qwen3", "olmo3", "gemma3", "gpt_oss")
SIZE = dict(n_layers=4, d_model=512, n_heads=8, n_kv_heads=2)


def build(family: str, n_tokens: int):
    window = REAL_SIZES[family].get("sliding_window")
    experts = {"n_active_experts": 1} if family == "gpt_oss" else {}  # one expert a token: Qwen2's MLP work
    return al.random_model(family, **SIZE, sliding_window=window, n_ctx=max(8192, 2 * n_tokens), **experts,
                           check_attention_edits=False, check_cached_decoding=False)


def child(family: str, what: str, n_tokens: int) -> dict:
    """One measurement in this process."""
    torch.set_num_threads(1)
    model = build(family, n_tokens)
    trace = trace_with_budget(model, n_tokens, LONG_SOURCE)
    tokens = trace.tokens()
    before = rss_gb()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        if what == "attention":
            al.sentence_attention(model, trace, attention="sdpa")
        else:
            with fused_attention(model, "sdpa"):
                model(tokens, return_type="logits")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {"family": family, "what": what, "tokens": trace.n_tokens, "sentences": trace.n_sentences,
            "seconds": wall, "cpu_seconds": cpu, "rise_gb": peak - before, "modes": layer_attention_modes(model)}


def run(n_tokens: int, repeats: int) -> list[dict]:
    rows = []
    for rep in range(repeats):
        for family in FAMILIES if rep % 2 == 0 else FAMILIES[::-1]:
            for what in ("attention", "forward"):
                out = subprocess.run([sys.executable, __file__, "--child", family, what, "--tokens", str(n_tokens)],
                                     capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                if out.returncode != 0:
                    print(out.stderr[-3000:], flush=True)
                    raise SystemExit(f"{family} {what} failed")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["repeat"] = rep
                rows.append(row)
                print(f"  {family:8s} {what:9s} {row['tokens']} tokens: {row['seconds']:6.1f} s "
                      f"({row['cpu_seconds']:6.1f} s CPU), "
                      f"+{row['rise_gb']:.2f} GB peak  (load {load_average()})", flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per family: the best (least disturbed) process CPU time and the peak rise of each measurement, and ratios.

    CPU seconds of the one-thread process, not wall seconds: on a shared machine the wall clock also counts
    the time other jobs held the cores."""
    best = {}
    for row in rows:
        key = (row["family"], row["what"])
        seconds, rise = best.get(key, (float("inf"), 0.0))
        best[key] = (min(seconds, row["cpu_seconds"]), max(rise, row["rise_gb"]))
    base_s, base_gb = best[("qwen2", "attention")]
    table = []
    for family in FAMILIES:
        seconds, gb = best[(family, "attention")]
        fwd_s, fwd_gb = best[(family, "forward")]
        table.append({"family": family, "attention_s": seconds, "attention_gb": gb, "forward_s": fwd_s,
                      "forward_gb": fwd_gb, "time_vs_qwen2": seconds / base_s, "memory_vs_qwen2": gb / base_gb,
                      "memory_vs_forward": gb / fwd_gb})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("FAMILY", "WHAT"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    options = parser.parse_args()
    torch.set_num_threads(1)
    if options.child:
        print(json.dumps(child(*options.child, options.tokens)))
        return
    print(f"load average at start: {load_average()}; torch threads: 1; {SIZE}", flush=True)
    rows = run(options.tokens, options.repeats)
    table = summary(rows)
    for row in table:
        print(f"{row['family']:8s} sentence_attention {row['attention_s']:6.1f} s CPU +{row['attention_gb']:.2f} GB | "
              f"forward {row['forward_s']:6.1f} s +{row['forward_gb']:.2f} GB | time x{row['time_vs_qwen2']:.2f} "
              f"memory x{row['memory_vs_qwen2']:.2f} of Qwen2, memory x{row['memory_vs_forward']:.2f} of a forward")
    print(f"load average at end: {load_average()}")
    if options.out:
        options.out.write_text(json.dumps({"rows": rows, "summary": table}, indent=1))


if __name__ == "__main__":
    main()
