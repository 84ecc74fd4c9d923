"""Cost of resilience (with Counterfactual++) against plain resampling importance of the same sentences, measured in
the same run on the embedded model (SmolLM2-135M, CPU).

Both start from an empty rollout store: resampling importance samples ``n_rollouts`` resample and forced rollouts
at each sentence; resilience samples its chains (the first iteration a plain resampling rollout of the sentence,
then one continuation per iteration while the content keeps coming back) and the kept rollouts of the next
sentence for Counterfactual++. Reported: rollouts (completions) and seconds per sentence, and the ratios.

Run: .venv/bin/python benchmarks/bench_branches.py [--rollouts 4] [--tokens 64] [--iterations 5] [--threads 1]
(the reference caps chains at 20 iterations; 5 keeps this run to minutes on a CPU)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--sentences", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import anchorlens as al
    from anchorlens.cli import SAMPLE_ANSWER, SAMPLE_PROBLEM, SAMPLE_SEED
    from anchorlens.embeddings import default_embedder

    model = al.load_model()
    trace = al.generate_trace(model, SAMPLE_PROBLEM, max_new_tokens=200, seed=SAMPLE_SEED)
    default_embedder()  # loaded once, outside both timings
    sentences = [i for i in args.sentences if i < trace.n_sentences - 1]
    n = len(sentences)
    print(f"trace: {trace.n_sentences} sentences; measured: {sentences}; {args.rollouts} rollouts of "
          f"{args.tokens} tokens; resilience cap {args.iterations} iterations; {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        plain = al.resampling_importance(model, trace, n_rollouts=args.rollouts, sentences=sentences,
                                         store=Path(folder) / "plain.sqlite", reference_answer=SAMPLE_ANSWER,
                                         max_tokens=args.tokens, extractor="boxed_or_last_number", progress=False)
        plain_seconds = time.perf_counter() - started
        plain_rollouts = plain.run_info["generated"]

        started = time.perf_counter()
        branches = al.resilience(model, trace, sentences, n_rollouts=args.rollouts, max_iterations=args.iterations,
                                 store=Path(folder) / "branches.sqlite", reference_answer=SAMPLE_ANSWER,
                                 max_tokens=args.tokens, outcome="boxed_or_last_number", progress=False)
        branch_seconds = time.perf_counter() - started
        branch_rollouts = branches.run_info["generated"]
    frame = branches.to_dataframe()
    print(frame[["sentence", "resilience", "abandonment_rate", "mean_iterations", "counterfactual_pp_accuracy"]]
          .to_string(index=False))
    print("| method | rollouts per sentence | seconds per sentence |")
    print("|---|---|---|")
    print(f"| resampling importance (resample + forced) | {plain_rollouts / n:.1f} | {plain_seconds / n:.1f} |")
    print(f"| resilience + Counterfactual++ | {branch_rollouts / n:.1f} | {branch_seconds / n:.1f} |")
    print(f"| ratio | {branch_rollouts / plain_rollouts:.2f}x | {branch_seconds / plain_seconds:.2f}x |")


if __name__ == "__main__":
    main()
