"""Attribution time and peak memory against prompt length: anchorlens next to circuit-tracer 0.5.0.

Same machine, model, transcoders and prompt; each measurement runs in a fresh process (peak RSS is the process's
high-water mark, so model loading is included in both). circuit-tracer runs in its own environment:

    .venv/bin/python benchmarks/bench_attribution.py --ct-python /work/ct-venv/bin/python \
        --lengths 16 64 256 --model tiny
    .venv/bin/python benchmarks/bench_attribution.py --lengths 16 64 --model smollm2
    .venv/bin/python benchmarks/bench_attribution.py --lengths 256 --model smollm2 --max-feature-nodes 1024
    .venv/bin/python benchmarks/bench_attribution.py --model mid --lengths 64 256 512 --max-feature-nodes 256

Transcoders: seeded random ones (``random_transcoders``), sparse (a negative encoder bias) so that 256 tokens fit.
Prints a Markdown table (seconds are attribution only; ratio = circuit-tracer / anchorlens).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's anchorlens, not an installed one
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

TINY = {"model": "random", "n_layers": 4, "d_model": 128, "n_heads": 4, "n_kv_heads": 2, "seed": 0,
        "n_features": 256, "activation": "relu", "skip": False, "tc_seed": 1, "enc_bias": -2.5}
# a random Llama of a small real model's shape per layer (d_model 512, 8 heads of 64, 2 KV heads, MLP 2048; 8 layers
# so that 512 tokens x 64 copies fit this 23 GB machine for both tools), 512 features per layer
MID = {"model": "random", "n_layers": 8, "d_model": 512, "n_heads": 8, "n_kv_heads": 2, "seed": 0,
       "n_features": 512, "activation": "relu", "skip": False, "tc_seed": 1, "enc_bias": -2.5}
SMOL = {"model": "smollm2", "n_features": 64, "activation": "relu", "skip": False, "tc_seed": 1, "enc_bias": -0.5}


def prompt_of_length(n_tokens: int) -> str:
    from transformers import AutoTokenizer

    from anchorlens.models import embedded_model_dir
    from anchorlens.attribution.training import shipped_corpus

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    ids = tokenizer(" ".join(shipped_corpus()[1:3]), add_special_tokens=False).input_ids[: n_tokens - 1]
    return tokenizer.decode(ids)


def one_anchorlens(case: dict, prompt: str, threads: int, max_feature_nodes: int | None = None) -> dict:
    import torch

    import anchorlens as al
    from attribution_cases import case_model, case_transcoders

    torch.set_num_threads(threads)
    model = al.load_model() if case["model"] == "smollm2" else case_model(case)
    transcoders = case_transcoders(case, model.cfg.n_layers, model.cfg.d_model)
    started = time.perf_counter()
    graph = al.attribution_graph(model, transcoders, prompt, batch_size=64, progress=False,
                                 max_feature_nodes=max_feature_nodes)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "nodes": int(graph.adjacency.shape[0]), "features": graph.n_features, "tokens": graph.n_pos}


def one_circuit_tracer(case: dict, prompt: str, ct_python: str, threads: int, max_feature_nodes: int | None = None) -> dict:
    import numpy as np

    from anchorlens.models import embedded_model_dir
    from attribution_cases import case_transcoders
    from make_attribution_oracle import save_random_llama

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = embedded_model_dir() if case["model"] == "smollm2" else save_random_llama(case, tmp / "model")
        n_layers = 30 if case["model"] == "smollm2" else case["n_layers"]
        d_model = 576 if case["model"] == "smollm2" else case["d_model"]
        tc_dir = case_transcoders(case, n_layers, d_model).save(tmp / "tc")
        done = subprocess.run([ct_python, str(REPO / "scripts" / "circuit_tracer_oracle.py"), "--model", str(model_dir),
                               "--transcoders", str(tc_dir), "--prompt", prompt, "--out", str(tmp / "g.npz"),
                               "--threads", str(threads),
                               *(["--max-feature-nodes", str(max_feature_nodes)] if max_feature_nodes else [])],
                              capture_output=True, text=True)
        if done.returncode:
            return {"error": done.stderr[-500:]}
        out = np.load(tmp / "g.npz")
        return {"seconds": float(out["seconds"]), "peak_rss_mb": float(out["peak_rss_mb"]),
                "nodes": int(out["adjacency"].shape[0]), "features": int(len(out["selected_features"])),
                "tokens": int(len(out["input_tokens"]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ct-python", default="/work/ct-venv/bin/python")
    parser.add_argument("--lengths", nargs="*", type=int, default=[16, 64, 256])
    parser.add_argument("--model", choices=["tiny", "mid", "smollm2"], default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-feature-nodes", type=int, default=None,
                        help="both tools keep this many features of largest influence (circuit-tracer's choice)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one anchorlens measurement, JSON on stdout
    args = parser.parse_args(argv)
    case = {"tiny": TINY, "mid": MID, "smollm2": SMOL}[args.model]
    if args.one:
        print(json.dumps(one_anchorlens(case, args.one, args.threads, args.max_feature_nodes)))
        return 0
    rows = []
    for n in args.lengths:
        prompt = prompt_of_length(n)
        limit = ["--max-feature-nodes", str(args.max_feature_nodes)] if args.max_feature_nodes else []
        ours = subprocess.run([sys.executable, __file__, "--model", args.model, "--threads", str(args.threads),
                               *limit, "--one", prompt], capture_output=True, text=True)
        ours = json.loads(ours.stdout.strip().splitlines()[-1]) if ours.returncode == 0 else {"error": ours.stderr[-500:]}
        theirs = one_circuit_tracer(case, prompt, args.ct_python, args.threads, args.max_feature_nodes)
        rows.append((n, ours, theirs))
        print(json.dumps({"length": n, "anchorlens": ours, "circuit_tracer": theirs}), flush=True)
    print(f"\nmax_feature_nodes: {args.max_feature_nodes}")
    print(f"\n| model | tokens | nodes | anchorlens s | circuit-tracer s | ratio | anchorlens peak MB | circuit-tracer peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for n, ours, theirs in rows:
        if "error" in ours or "error" in theirs:
            print(f"| {args.model} | {n} | error | {ours.get('error', '')[:80]} | {theirs.get('error', '')[:80]} | | | |")
            continue
        print(f"| {args.model} | {ours['tokens']} | {ours['nodes']} | {ours['seconds']:.2f} | {theirs['seconds']:.2f} | "
              f"{theirs['seconds'] / ours['seconds']:.2f} | {ours['peak_rss_mb']:.0f} | {theirs['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
