"""Benchmark: a full layer x position sweep of ``mlp_out`` on SmolLM2, batched ``mediation_sweep`` against
TransformerLens 4's per-cell patching loop (``transformer_lens.patching.get_act_patch_mlp_out``: one forward
of all pairs per cell), in the same process on the same pairs; also the equality of their results and the
peak memory of each (``tracemalloc`` of torch's CPU allocations is not available, so resident-set growth in
a fresh child process per method).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mediation.py [--pairs 8] [--chunk-size 256]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mediation.py --attention   # fused (SDPA) vs eager sweep

``--attention``: the batched sweep with ``attention="eager"`` against the default (fused SDPA), alternating,
two child processes each (issue 15).
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pairs_for(model, n_pairs: int):
    """``n_pairs`` template prompt pairs of one token length (the filter is not applied: timing only needs
    real prompts, and SmolLM2 gets few sums right)."""
    from anchorlens.mediation import arithmetic_pairs, filter_pairs, group_by_length

    fitted = filter_pairs(model, arithmetic_pairs(n_per_template=4, seed=0), require_correct=False).kept
    groups = [g for g in group_by_length(model, fitted).values() if len(g) >= n_pairs]
    return groups[0][:n_pairs]


def run(method: str, n_pairs: int, chunk_size: int, out: Path | None = None) -> dict:
    from transformer_lens import patching

    import anchorlens as al
    from anchorlens.mediation import encode_pairs, mediation_sweep

    torch.set_num_threads(1)
    model = al.load_model()
    pairs = pairs_for(model, n_pairs)
    args = ([p.base for p in pairs], [p.counterfactual for p in pairs], [p.base_answer for p in pairs],
            [p.counterfactual_answer for p in pairs])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    if method in ("batched", "batched_eager"):
        result = mediation_sweep(model, *args, component="mlp_out", positions="all", metric="logit_diff",
                                 chunk_size=chunk_size, attention="eager" if method == "batched_eager" else "auto")
        values = result.patched_logit_diff  # [pair, layer, position]
    else:
        encoded = encode_pairs(model, *args)[0]
        answers = torch.stack([encoded.base_answer, encoded.counterfactual_answer], -1)

        def logit_diff(logits):
            last = logits[:, -1].float()
            return last.gather(-1, answers[:, :1])[:, 0] - last.gather(-1, answers[:, 1:])[:, 0]

        with torch.no_grad():
            _, cf_cache = model.run_with_cache(encoded.counterfactual_tokens)
            tl = patching.get_act_patch_mlp_out(model, encoded.base_tokens, cf_cache, logit_diff, reduce="none")
        values = tl.values.movedim(-1, 0)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    if out is not None:
        torch.save(values, out)
    return {"method": method, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_growth_mib": peak_mib,
            "n_pairs": len(pairs), "n_tokens": values.shape[-1], "n_layers": values.shape[1],
            "prompt": pairs[0].base}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--child", choices=["batched", "batched_eager", "transformer_lens"])
    parser.add_argument("--attention", action="store_true", help="fused (SDPA) against eager attention")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.pairs, args.chunk_size, Path(args.out))))
        return
    if args.attention:
        compare_attention(args)
        return
    rows, values = [], {}
    for method in ("transformer_lens", "batched"):  # each in a fresh process: its own peak memory
        row, values[method] = run_child(method, args)
        rows.append(row)
    tl, ours = rows
    diff = (values["batched"] - values["transformer_lens"]).abs().max().item()
    print(json.dumps(rows, indent=1))
    print(f"speed-up {tl['seconds'] / ours['seconds']:.2f}x wall, {tl['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU; "
          f"max |difference| of the per-pair logit differences {diff:.2e}")


def run_child(method: str, args) -> tuple[dict, torch.Tensor]:
    """One method in a fresh process (its own peak memory): its timing row and its per-pair values."""
    out = Path(f"/tmp/bench_mediation_{method}.pt")
    done = subprocess.run([sys.executable, __file__, "--child", method, "--pairs", str(args.pairs),
                           "--chunk-size", str(args.chunk_size), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), torch.load(out)


def compare_attention(args) -> None:
    rows, values = [], {}
    for method in ("batched_eager", "batched", "batched", "batched_eager"):
        row, values[method] = run_child(method, args)
        rows.append(row)
        print(json.dumps(rows[-1]), f"load {os.getloadavg()[0]:.2f}", flush=True)
    total = {m: [sum(r[k] for r in rows if r["method"] == m) for k in ("seconds", "cpu_seconds")]
             for m in ("batched_eager", "batched")}
    diff = (values["batched"] - values["batched_eager"]).abs().max().item()
    print(f"fused / eager: {total['batched_eager'][0] / total['batched'][0]:.2f}x wall, "
          f"{total['batched_eager'][1] / total['batched'][1]:.2f}x CPU; max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
