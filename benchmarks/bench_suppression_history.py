"""Benchmark: the suppression matrix as it is now against the code of an earlier commit, same machine, same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_suppression_history.py              # against d74f41b
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_suppression_history.py --baseline SHA --repeats 2

Issue 15 asks for the suppression matrix of a 1k-token trace "against today's eager fast path": the code as it
was when the issue was filed (d74f41b, eager attention with ``hook_attn_scores`` hooks, the KL recomputed per
row). ``bench_fused_attention.py suppression`` compares the two attention modes of *today's* code, whose eager
path has since gained the shared KL improvements; this script compares the whole change. The earlier commit is
checked out into a temporary ``git worktree``; each measurement runs in a fresh process that imports anchorlens
from its tree (the same installed packages and model), alternating baseline / current, then current /
baseline. Both build the same trace (checked: equal token ids) and the per-token KL must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISSUE_15_FILED_AT = "d74f41b"  # the last landed commit when issue 15 was filed


def child(tree: str, n_tokens: int, out: str) -> dict:
    """Import anchorlens from ``tree``, time one default ``suppression_matrix`` over the benchmark trace."""
    import torch

    sys.path.insert(0, tree)
    import anchorlens as al  # from ``tree``; bench_suppression below reuses this module

    assert Path(al.__file__).resolve().is_relative_to(Path(tree).resolve()), al.__file__
    sys.path.insert(1, str(REPO / "benchmarks"))
    from bench_suppression import SHORT_SOURCE, trace_with_budget

    torch.set_num_threads(1)
    model = al.load_model()
    trace = trace_with_budget(model, n_tokens, SHORT_SOURCE)
    start, cpu = time.perf_counter(), time.process_time()
    result = al.suppression_matrix(model, trace, method="fast", progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    torch.save({"token_kl": result.token_kl, "token_ids": list(trace.token_ids)}, out)
    return {"tree": tree, "tokens": trace.n_tokens, "sentences": trace.n_sentences, "wall_s": wall, "cpu_s": cpu}


def run_child(tree: Path, n_tokens: int, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(tree), "--tokens", str(n_tokens), "--out", str(out)],
        capture_output=True, text=True, cwd=tempfile.gettempdir(),  # not the repository: no accidental import
    )
    if done.returncode:
        raise SystemExit(f"child for {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=ISSUE_15_FILED_AT, help="commit to compare against")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.out)))
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(old_tree), args.baseline],
                       check=True, capture_output=True)
        try:
            rows, outputs = [], {}
            for rep in range(args.repeats):
                order = [("baseline", old_tree), ("current", REPO)]
                for name, tree in order if rep % 2 == 0 else order[::-1]:
                    out = Path(tmp) / f"{name}.pt"
                    row = run_child(tree, args.tokens, out) | {"which": name, "load": os.getloadavg()[0]}
                    rows.append(row)
                    outputs[name] = torch.load(out)
                    print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=False)
    assert outputs["baseline"]["token_ids"] == outputs["current"]["token_ids"], "the two trees built different traces"
    old_kl, new_kl = outputs["baseline"]["token_kl"], outputs["current"]["token_kl"]
    gap = (old_kl - new_kl).nan_to_num(0).abs()
    total = {w: {k: sum(r[k] for r in rows if r["which"] == w) for k in ("wall_s", "cpu_s")}
             for w in ("baseline", "current")}
    print(json.dumps({
        "baseline": args.baseline, "tokens": rows[0]["tokens"], "sentences": rows[0]["sentences"],
        "cpu_ratio": total["baseline"]["cpu_s"] / total["current"]["cpu_s"],
        "wall_ratio": total["baseline"]["wall_s"] / total["current"]["wall_s"],
        "max_token_kl_diff": float(gap.max()), "entries_over_1e-4": int((gap > 1e-4).sum()),
        "entries": int((~old_kl.isnan()).sum()),
    }, indent=1))


if __name__ == "__main__":
    main()
