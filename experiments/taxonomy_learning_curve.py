"""Issue 14: does the taxonomy classifier's agreement grow with the number of labelled training problems?

For each of the 10 labelled problems in turn (tested on both of its traces), the shipped classifier's recipe
(scripts/train_taxonomy.py: MiniLM and cue features + SmolLM2 layers 15 and 20, L2 1.0, balanced class
weights) is fitted on ``k`` of the other 9 problems, for each ``k`` in ``--sizes``, over ``--draws`` random
draws of which problems (random.Random(seed), all 9 when ``k`` is 9). Prints, per ``k``, the mean over test
problems (and draws) of accuracy and macro-F1 (categories present in the test problem) and the pooled scores;
writes them as JSON to ``--out``. A curve still rising at ``k = 9`` says that more labelled problems (the
published dataset has more than the 10 shipped here) would help more than another model over the same data.

Uses the cached features of scripts/train_taxonomy.py (its ``load_traces``; the first run computes them).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/taxonomy_learning_curve.py [--sizes 2 4 6 8 9] [--draws 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import train_taxonomy as tt  # noqa: E402
from anchorlens.resampling.similarity import MiniLMEmbedder  # noqa: E402
from anchorlens.taxonomy.training import score_by_problem  # noqa: E402

HYPER = (tt.LM_L2, 1.0, (15, 20))  # the shipped classifier's choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "thought-anchors")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 9])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    traces = tt.load_traces(args.data, MiniLMEmbedder())
    problems = sorted({t["problem"] for t in traces})
    results = {}
    for k in args.sizes:
        folds = []  # (y_true, y_pred) per test problem and draw
        for test_problem in problems:
            others = [p for p in problems if p != test_problem]
            rng = random.Random(f"{args.seed}-{test_problem}-{k}")
            draws = [others] if k >= len(others) else [rng.sample(others, k) for _ in range(args.draws)]
            test = [t for t in traces if t["problem"] == test_problem]
            for chosen in draws:
                train = [t for t in traces if t["problem"] in chosen]
                model, vocabulary = tt.fit(train, "lm", HYPER)
                folds.append(tt.predict(model, vocabulary, test, "lm", HYPER))
        pooled = score_by_problem(folds)
        results[k] = {
            "mean_accuracy": pooled["fold_mean"]["accuracy"],
            "mean_macro_f1": pooled["fold_mean"]["macro_f1"],
            "pooled_accuracy": pooled["accuracy"],
            "pooled_macro_f1": pooled["macro_f1"],
            "fits": len(folds),
        }
        r = results[k]
        print(f"k={k}: mean {r['mean_accuracy']:.3f} / {r['mean_macro_f1']:.3f}, pooled {r['pooled_accuracy']:.3f} / "
              f"{r['pooled_macro_f1']:.3f} ({r['fits']} fits, {time.time() - started:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
