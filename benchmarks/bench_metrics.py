"""Cost of the resampling metrics and the taxonomy classifier, next to baselines in the same run.

1. Trajectory metrics (different_trajectories_fraction, overdeterminedness) of every sentence of one
   published trace from its chunks_resampled.json: anchorlens (``recompute_trajectory_metrics``: each distinct
   string embedded once, cached) against a plain loop that encodes ``[original] + resampled`` for each
   sentence with sentence-transformers (same model, same batch size).
2. ``classify_sentences`` on a published trace against the bare MiniLM encoding of its sentences (what the
   classifier adds on top of the embedding).

Both sides use a fresh embedder (no cache carried over), 1 torch thread, interleaved repeats, median.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchorlens.resampling.published_format import load_reference_trace, recompute_trajectory_metrics  # noqa: E402
from anchorlens.resampling.similarity import MiniLMEmbedder, cosine_similarity  # noqa: E402
from anchorlens.taxonomy import TaxonomyClassifier  # noqa: E402

TRACES = REPO / "data" / "thought-anchors" / "deepseek-r1-distill-llama-8b"
METRICS_TRACE = TRACES / "incorrect_base_solution" / "problem_2189"  # 24 sentences, 2,400 rollouts
TAXONOMY_TRACE = TRACES / "incorrect_base_solution" / "problem_6998"  # 157 sentences


def naive_dtf(trace, model) -> list[float]:
    out = []
    for original, resampled in zip(trace.sentences, trace.resampled):
        if not resampled:
            out.append(float("nan"))
            continue
        v = model.encode([original, *resampled], batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
        out.append(float((cosine_similarity(v[:1], v[1:])[0] < 0.8).float().mean()))
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    trace = load_reference_trace(METRICS_TRACE)
    n_strings = sum(len(r) for r in trace.resampled) + len(trace.sentences)
    n_distinct = len(set(trace.sentences) | {s for r in trace.resampled for s in r})
    ours, base = [], []
    for _ in range(args.repeats):
        t, df = timed(lambda: recompute_trajectory_metrics(trace, embed=MiniLMEmbedder()))
        ours.append(t)
        embedder = MiniLMEmbedder()
        t, naive = timed(lambda: naive_dtf(trace, embedder.model))
        base.append(t)
    agree = max(abs(a - b) for a, b in zip(df.dtf.tolist(), naive))
    a, b = statistics.median(ours), statistics.median(base)
    print(f"trajectory metrics, {len(trace.sentences)} sentences, {n_strings} strings ({n_distinct} distinct):")
    print(f"  anchorlens {a:.1f} s   naive per-sentence encode {b:.1f} s   speed-up {b / a:.2f}x   max |diff| {agree:.3f}")

    trace = load_reference_trace(TAXONOMY_TRACE)
    classifier = TaxonomyClassifier.load()
    ours, base = [], []
    for _ in range(args.repeats):
        t, _ = timed(lambda: classifier.predict(trace.sentences, embed=MiniLMEmbedder()))
        ours.append(t)
        embedder = MiniLMEmbedder()
        t, _ = timed(lambda: embedder.model.encode(trace.sentences, batch_size=64))
        base.append(t)
    a, b = statistics.median(ours), statistics.median(base)
    print(f"classify_sentences, {len(trace.sentences)} sentences:")
    print(f"  anchorlens {a:.2f} s ({len(trace.sentences) / a:.0f} sentences/s)   MiniLM encode alone {b:.2f} s   ratio {a / b:.2f}x")


if __name__ == "__main__":
    main()
