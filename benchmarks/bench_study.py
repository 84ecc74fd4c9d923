"""Benchmark: ``anchorlens study`` over published traces, against ``analyze`` on its largest trace alone.

The study holds one trace's tensors at a time, so its peak memory must stay close to that of analysing its
largest trace alone. Each measurement runs in a fresh process (peak resident memory is per process):

1. baseline: ``analyze`` (categories + receivers) on the largest of the chosen traces, alone;
2. ``anchorlens study FOLDER --importance published --views categories receivers`` on the chosen traces
   (the time per trace is read from its one-line summaries);
3. the same command again into the same folder (every step reused).

    .venv/bin/python benchmarks/bench_study.py                  # the 4 shortest shipped traces
    .venv/bin/python benchmarks/bench_study.py --traces 6

Torch runs on one thread (``OMP_NUM_THREADS=1``) on this shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "data" / "thought-anchors"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
           OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def shortest(n: int) -> list[Path]:
    folders = sorted(PUBLISHED.glob("*/*/problem_*"))
    return sorted(folders, key=lambda f: len(json.loads((f / "base_solution.json").read_text())["solution"]))[:n]


def child_baseline(folder: str, out: str) -> None:
    """In a fresh process: load the model, analyze one published trace (categories, receivers)."""
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(1)
    from anchorlens import analyze, load_model
    from anchorlens.study.discovery import published_trace

    model = load_model(device="cpu")
    trace = published_trace(model, Path(folder))
    started = time.perf_counter()
    analyze(model, out, trace=trace, steps=("categories", "receivers"), top_k_heads=20, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - started, "tokens": trace.n_tokens,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_measured(args: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its wall time and its peak resident memory (MiB, from the child's rusage)."""
    script = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:]); "
              "print(json.dumps(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024), file=sys.stderr); "
              "sys.exit(r.returncode)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=ENV, cwd=REPO)
    seconds = time.perf_counter() - started
    peak = float(done.stderr.strip().splitlines()[-1])
    return done, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=4)
    parser.add_argument("--child-baseline", nargs=2, default=None)
    args = parser.parse_args()
    if args.child_baseline:
        return child_baseline(*args.child_baseline)
    folders = shortest(args.traces)
    work = Path(tempfile.mkdtemp(prefix="bench-study-"))
    data = work / "data"
    for folder in folders:
        shutil.copytree(folder, data / folder.relative_to(PUBLISHED))
    largest = folders[-1]
    done, _, base_peak = run_measured([sys.executable, __file__, "--child-baseline", str(largest), str(work / "one")])
    assert done.returncode == 0, done.stderr[-3000:]
    baseline = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"baseline: analyze (categories, receivers) on {largest.relative_to(PUBLISHED)} alone "
          f"({baseline['tokens']} tokens): {baseline['seconds']:.1f} s after loading, peak {base_peak:.0f} MiB")
    command = [sys.executable, "-m", "anchorlens.cli", "study", str(data), "--importance", "published",
               "--views", "categories", "receivers", "--out", str(work / "study")]
    for label in ("study", "study again (all reused)"):
        done, seconds, peak = run_measured(command)
        assert done.returncode == 0, done.stderr[-3000:]
        print(f"{label}: {seconds:.1f} s in all (model loading included), peak {peak:.0f} MiB "
              f"({peak / base_peak:.2f}x the baseline)")
        for line in done.stderr.splitlines():
            if re.match(r"\[\d+/\d+\]", line):
                print("   ", line)
    print(done.stdout.strip().splitlines()[0])
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
