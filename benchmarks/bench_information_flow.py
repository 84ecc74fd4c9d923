"""Benchmark: information flow contributions (L1 and L2) against one forward pass, at 500, 1k and 2k tokens.

Every measurement runs in its own fresh process (so each peak resident memory is that configuration's own),
on the start of a real chain of thought (data/thought-anchors, problem 4682) cut to N tokens, on SmolLM2
with one torch thread. Each process first runs the configuration once on 64 tokens (warm-up: the fused
kernel's compile, which is reported separately), then times it on N tokens, with one plain forward on the
same tokens just before and just after (their mean is the baseline of the ratio: the machine is shared, so
the baseline is measured under the same load).

    .venv/bin/python benchmarks/bench_information_flow.py              # all sizes, writes the table
    .venv/bin/python benchmarks/bench_information_flow.py --sizes 500  # one size

Configurations: ``forward`` (the baseline: one plain forward), ``l1`` (fused kernel), ``l1-unfused`` (plain
torch blocks, 500 tokens only: minutes beyond), ``l2``.
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

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data/thought-anchors/deepseek-r1-distill-llama-8b/correct_base_solution/problem_4682/base_solution.json"


def one(config: str, n_tokens: int) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    import torch

    from anchorlens import load_model
    from anchorlens.flow import information_flow

    torch.set_num_threads(1)
    model = load_model()
    text = json.loads(SOURCE.read_text())["full_cot"]
    tokens = model.to_tokens(text)[:, :n_tokens]
    assert tokens.shape[1] == n_tokens, tokens.shape

    def run(t):
        if config == "forward":
            with torch.inference_mode():
                model(t)
        else:
            distance = "l2" if config == "l2" else "l1"
            information_flow(model, t, distance=distance, keep_heads=False, fused=config == "l1")

    def forward_seconds():
        started = time.perf_counter()
        with torch.inference_mode():
            model(tokens)
        return time.perf_counter() - started

    started = time.perf_counter()
    run(tokens[:, :64])
    warmup = time.perf_counter() - started
    before = forward_seconds()  # the baseline, just before and just after: the same machine load
    started = time.perf_counter()
    run(tokens)
    seconds = time.perf_counter() - started
    after = forward_seconds()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    return {"config": config, "tokens": n_tokens, "seconds": seconds, "forward_seconds": (before + after) / 2,
            "warmup_seconds": warmup, "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "TOKENS"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    plan = [(config, n) for n in args.sizes for config in ("forward", "l1", "l2")]
    plan += [("l1-unfused", n) for n in args.sizes if n <= 500]  # last: minutes, and only a reference point
    for config, n in plan:
        done = subprocess.run([sys.executable, __file__, "--one", config, str(n)], capture_output=True, text=True, env=env)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| tokens | configuration | seconds | forward in the same process (s) | x forward | peak RSS (MB) | warm-up on 64 tokens (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["seconds"] / r["forward_seconds"]
        print(f"| {r['tokens']} | {r['config']} | {r['seconds']:.1f} | {r['forward_seconds']:.1f} | {ratio:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['warmup_seconds']:.1f} |")


if __name__ == "__main__":
    main()
