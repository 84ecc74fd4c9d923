"""Benchmark: attention suppression, fast (prefix reuse + batching) against naive (one full forward per sentence).

Both methods run in the same process on the same trace, alternating order, and the script reports their
ratio and the largest difference between their results. Traces are real chains of thought from
data/thought-anchors (DeepSeek-R1-Distill-Llama-8B, problems 330 and 4682), with the problem prompt in front.

    .venv/bin/python benchmarks/bench_suppression.py                 # SmolLM2, ~600 tokens, then 4k tokens
    .venv/bin/python benchmarks/bench_suppression.py --skip-long     # only the ~600-token trace
    .venv/bin/python benchmarks/bench_suppression.py --gpu-1.5b      # randomly initialised 1.5B model on CUDA
    .venv/bin/python benchmarks/bench_suppression.py --families      # 2k tokens: random gpt-oss, OLMo-3 vs Qwen2

Part 1, ~600 tokens / ~30 sentences: every sentence suppressed, ``--repeats`` alternating pairs.
Part 2, ~4k tokens: the full matrix would take hours on 2 CPU cores (every 4k forward takes minutes), so a
spread of ``--long-sentences`` sentences is suppressed with both methods (``sentences=``), and the process's
peak resident memory is reported.

``--families``: the fast suppression matrix of a spread of ``--family-sentences`` sentences of a ~2k-token trace
on random models of the same size (4 layers, d_model 512, 8 heads, 2 KV heads) of Qwen2 (the baseline), gpt-oss
(sliding window 128 on every other layer, attention sinks, 4 experts of which 2 active, each half Qwen2's MLP
width) and OLMo-3 (window 4096 on three layers of four, QK norms). Each family runs in its own process, in turn,
twice (ABCABC), and reports its wall time and its peak resident memory above what it held before the matrix
(``/proc/self/clear_refs`` resets the peak). On the sliding-window families the naive method (what they ran
before the KV cache kept full-length layers) is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from anchorlens import Trace, load_model, random_model, split_sentences, suppression_matrix  # noqa: E402
from anchorlens.suppression.runner import fast_position_kl, naive_position_kl, run_baseline  # noqa: E402

PROBLEMS = REPO / "data/thought-anchors/deepseek-r1-distill-llama-8b/correct_base_solution"
SHORT_SOURCE = PROBLEMS / "problem_330/base_solution.json"  # 3.5k tokens of thinking: its start for ~600
LONG_SOURCE = PROBLEMS / "problem_4682/base_solution.json"  # 5k tokens of thinking: its start for ~4k


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def trace_with_budget(model, max_tokens: int, source: Path = SHORT_SOURCE) -> Trace:
    """The problem prompt plus as many whole sentences of the chain of thought as fit in ``max_tokens``."""
    data = json.loads(source.read_text())
    cot = data["solution"]
    sentences = split_sentences(cot)
    lo, hi = 1, len(sentences)
    while lo < hi:  # largest prefix of sentences that fits
        mid = (lo + hi + 1) // 2
        trace = Trace.from_text(model, cot[: sentences[mid - 1].end], prompt=data["prompt"], check_length=False)
        lo, hi = (mid, hi) if trace.n_tokens <= max_tokens else (lo, mid - 1)
    return Trace.from_text(model, cot[: sentences[lo - 1].end], prompt=data["prompt"])


CPU_SECONDS: list[float] = []  # process CPU time of each timed call, in order (less sensitive to other users)


def timed(fn):
    """Wall-clock seconds of ``fn()`` (and its process CPU seconds, appended to ``CPU_SECONDS``)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    CPU_SECONDS.append(time.process_time() - cpu_start)
    return time.perf_counter() - start, out


def max_diff(a, b) -> float:
    return float((a.token_kl - b.token_kl).nan_to_num(0).abs().max())


def compare(model, trace, repeats: int, label: str, **kwargs) -> dict:
    """Alternate naive and fast runs; return times, ratio and the largest result difference."""
    naive_times, fast_times, diffs = [], [], []
    naive_cpu, fast_cpu = [], []
    for rep in range(repeats):
        order = ("naive", "fast") if rep % 2 == 0 else ("fast", "naive")
        results = {}
        for method in order:
            seconds, results[method] = timed(
                lambda: suppression_matrix(model, trace, method=method, progress=False, **kwargs)
            )
            (naive_times if method == "naive" else fast_times).append(seconds)
            (naive_cpu if method == "naive" else fast_cpu).append(CPU_SECONDS[-1])
            print(f"  [{label}] repeat {rep}: {method:5s} {seconds:7.1f} s wall, {CPU_SECONDS[-1]:7.1f} s CPU", flush=True)
        diffs.append(max_diff(results["naive"], results["fast"]))
    naive, fast = statistics.median(naive_times), statistics.median(fast_times)
    return {
        "label": label,
        "tokens": trace.n_tokens,
        "sentences": trace.n_sentences,
        "suppressed": len(kwargs.get("sentences") or range(trace.n_sentences)),
        "naive_s": naive_times,
        "fast_s": fast_times,
        "ratio_median": naive / fast,
        "ratios": [n / f for n, f in zip(naive_times, fast_times)],
        "naive_cpu_s": naive_cpu,
        "fast_cpu_s": fast_cpu,
        "cpu_ratios": [n / f for n, f in zip(naive_cpu, fast_cpu)],
        "max_token_kl_diff": max(diffs),
    }


def interleaved(model, trace, group: int = 3, sentences: list[int] | None = None) -> dict:
    """Naive against fast, alternating every ``group`` sentences, so that a change in the machine's load
    (other users come and go) hits both methods alike. Totals include each method's one baseline forward."""
    tokens = trace.tokens(model.cfg.device)
    layers = list(range(model.cfg.n_layers))
    t_base_naive, base_naive = timed(lambda: run_baseline(model, tokens, 0.6, keep_cache=False))
    t_base_fast, base_fast = timed(lambda: run_baseline(model, tokens, 0.6, keep_cache=True))
    totals = {"naive": t_base_naive, "fast": t_base_fast}
    cpu = {"naive": CPU_SECONDS[-2], "fast": CPU_SECONDS[-1]}
    runners = {
        "naive": lambda g: naive_position_kl(model, tokens, base_naive, trace.token_spans, g, layers, None, False),
        "fast": lambda g: fast_position_kl(
            model, tokens, base_fast, trace.token_spans, g, layers, None, progress=False
        ),
    }
    diff = 0.0
    chosen = list(range(trace.n_sentences)) if sentences is None else sentences
    groups = [chosen[k : k + group] for k in range(0, len(chosen), group)]
    for index, sentences in enumerate(groups):
        out = {}
        for method in ("naive", "fast") if index % 2 == 0 else ("fast", "naive"):
            seconds, out[method] = timed(lambda: runners[method](sentences))
            totals[method] += seconds
            cpu[method] += CPU_SECONDS[-1]
        diff = max(diff, float((out["naive"] - out["fast"]).abs().max()))
    print(f"  [interleaved] naive {totals['naive']:.1f} s, fast {totals['fast']:.1f} s", flush=True)
    return {
        "group": group,
        "naive_s": totals["naive"],
        "fast_s": totals["fast"],
        "ratio": totals["naive"] / totals["fast"],
        "naive_cpu_s": cpu["naive"],
        "fast_cpu_s": cpu["fast"],
        "cpu_ratio": cpu["naive"] / cpu["fast"],
        "max_position_kl_diff": diff,
    }


def batching_effect(model, trace) -> dict:
    """Fast method with and without batching (max_batch=1: one sentence per forward, exact prefixes)."""
    t_batched, batched = timed(lambda: suppression_matrix(model, trace, max_batch=64, progress=False))
    cpu_batched = CPU_SECONDS[-1]
    t_single, single = timed(lambda: suppression_matrix(model, trace, max_batch=1, progress=False))
    return {
        "batched_s": t_batched,
        "one_per_forward_s": t_single,
        "batched_cpu_s": cpu_batched,
        "one_per_forward_cpu_s": CPU_SECONDS[-1],
        "max_token_kl_diff": max_diff(batched, single),
    }


FAMILY_WINDOWS = {"olmo3": 4096, "gemma3": 1024, "gpt_oss": 128}  # the released models' sliding windows
FAMILY_NAMES = ["qwen2", "qwen3", "olmo3", "gemma3", "gpt_oss", "deepseek_v3"]


def family_model(family: str):
    """A random model of ``family`` at the benchmark's size: 4 layers, d_model 512, 8 heads over 2 key/value heads
    of 64 (DeepSeek-V3: latent attention, every head its own keys), MLP width 2048; sliding-window families with
    their released windows and layer mix; gpt-oss routes each token to one of 4 experts of that width (the same MLP
    work per token as Qwen2)."""
    experts = dict(n_experts=4, n_active_experts=1) if family in ("gpt_oss", "deepseek_v3") else {}
    return random_model(family, n_layers=4, d_model=512, n_heads=8, n_kv_heads=2, head_dim=64, d_mlp=2048,
                        n_ctx=4096, sliding_window=FAMILY_WINDOWS.get(family), **experts)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def family_worker(family: str, tokens: int, n_sentences: int, naive: bool) -> dict:
    """One family in this process: time and peak memory (above the resident set before) of the matrix."""
    import warnings

    warnings.simplefilter("ignore")  # eager-attention notices on the families not fused yet
    model = family_model(family)
    trace = trace_with_budget(model, tokens, LONG_SOURCE)
    n = trace.n_sentences
    chosen = sorted({round(k * (n - 1) / (n_sentences + 1)) for k in range(1, n_sentences + 1)})
    with torch.inference_mode():
        model(trace.tokens()[:, :64])  # warm-up
    out = {"family": family, "model": model.anchorlens_name, "tokens": trace.n_tokens, "suppressed": chosen}
    for method in ("fast", "naive") if naive else ("fast",):
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
        seconds, result = timed(lambda: suppression_matrix(model, trace, sentences=chosen, method=method,
                                                           progress=False))
        out[f"{method}_s"] = seconds
        out[f"{method}_cpu_s"] = CPU_SECONDS[-1]
        out[f"{method}_peak_above_gb"] = (_status_kb("VmHWM") - before) / 1e6
        out[f"{method}_kl_sum"] = float(result.token_kl.nan_to_num(0).sum())
    return out


def families(args) -> dict:
    """Each family in its own process, in turn, ``args.family_rounds`` times; medians and ratios to Qwen2."""
    import subprocess

    names = args.family_names
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.family_rounds):
        for name in names:
            command = [sys.executable, __file__, "--family-worker", name, "--family-tokens", str(args.family_tokens),
                       "--family-sentences", str(args.family_sentences), "--threads", str(args.threads)]
            if name != "qwen2" and args.family_naive_too:
                command.append("--family-naive")
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name}: {runs[name][-1]}", flush=True)
    median = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0] if key.endswith(("_s", "_gb"))}
              for name, rows in runs.items()}
    base = median["qwen2"]
    ratios = {name: {"time_vs_qwen2": m["fast_s"] / base["fast_s"],
                     "cpu_vs_qwen2": m["fast_cpu_s"] / base["fast_cpu_s"],
                     "peak_vs_qwen2": m["fast_peak_above_gb"] / base["fast_peak_above_gb"],
                     **({"naive_over_fast": m["naive_s"] / m["fast_s"],
                         "naive_over_fast_cpu": m["naive_cpu_s"] / m["fast_cpu_s"]} if "naive_s" in m else {})}
              for name, m in median.items() if name != "qwen2"}
    return {"runs": runs, "median": median, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=620, help="token budget of the short trace")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-short", action="store_true")
    parser.add_argument("--long-tokens", type=int, default=4096)
    parser.add_argument("--long-sentences", type=int, default=3, help="sentences suppressed in the 4k trace")
    parser.add_argument("--gpu-1.5b", dest="gpu", action="store_true", help="random 1.5B Qwen2 on CUDA")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: on a shared machine, threads waiting at barriers for descheduled "
        "siblings make timings swing tenfold; one thread measures the work itself)",
    )
    parser.add_argument("--families", action="store_true", help="2k tokens on random gpt-oss / OLMo-3 vs Qwen2")
    parser.add_argument("--family-tokens", type=int, default=2048)
    parser.add_argument("--family-sentences", type=int, default=9)
    parser.add_argument("--family-names", nargs="+", default=FAMILY_NAMES, help="families; qwen2 first (the baseline)")
    parser.add_argument("--family-naive-too", action="store_true", help="also time the naive method (slow)")
    parser.add_argument("--family-rounds", type=int, default=2)
    parser.add_argument("--family-worker", help=argparse.SUPPRESS)
    parser.add_argument("--family-naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.gpu:
        torch.set_num_threads(args.threads)
    if args.family_worker:
        print(json.dumps(family_worker(args.family_worker, args.family_tokens, args.family_sentences,
                                       args.family_naive)))
        return
    if args.families:
        report = {"torch_threads": torch.get_num_threads(), "families": families(args)}
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        return

    report: dict = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu-1.5b needs a CUDA GPU")
        model = random_model(
            "qwen2", n_layers=28, d_model=1536, n_heads=12, n_kv_heads=2, d_mlp=8960, n_ctx=8192,
            device="cuda", dtype=torch.bfloat16,
        )
        report["device"] = torch.cuda.get_device_name()
    else:
        model = load_model(device="cpu")
        report["device"] = "cpu"
    report["model"] = model.anchorlens_name

    short = trace_with_budget(model, args.tokens)
    print(f"short trace: {short}", flush=True)
    with torch.inference_mode():
        model(short.tokens(model.cfg.device))  # warm-up
    if not args.skip_short:
        report["short_interleaved"] = interleaved(model, short)
        report["short"] = compare(model, short, args.repeats, "short")
        report["short_batching"] = batching_effect(model, short)
        report["peak_rss_gb_after_short"] = peak_rss_gb()
        print(json.dumps(report["short"], indent=1), json.dumps(report["short_batching"], indent=1), flush=True)

    if not args.skip_long:
        long = trace_with_budget(model, args.long_tokens, LONG_SOURCE)
        n = long.n_sentences
        chosen = sorted({round(k * (n - 1) / (args.long_sentences + 1)) for k in range(1, args.long_sentences + 1)})
        print(f"long trace: {long}; suppressing sentences {chosen}", flush=True)
        report["long_interleaved"] = interleaved(model, long, group=1, sentences=chosen)
        report["long"] = compare(model, long, 1, "long", sentences=chosen)
        report["long"]["chosen"] = chosen
        report["long"]["chosen_starts"] = [long.token_spans[j][0] for j in chosen]
        report["peak_rss_gb_after_long"] = peak_rss_gb()
        print(json.dumps(report["long"], indent=1), flush=True)

    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
