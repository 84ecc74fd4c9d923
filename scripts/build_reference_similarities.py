"""Cache the MiniLM cosine similarities behind the published trajectory metrics (for the test suite).

For each of the 20 published traces in data/thought-anchors (source: interp-reasoning/thought-anchors.com,
MIT), and each sentence i, this stores the cosine similarity between the original sentence and each of its
rollouts' ``chunk_resampled`` (from chunks_resampled.json), as embedded by all-MiniLM-L6-v2
(``anchorlens.resampling.similarity.MiniLMEmbedder``). Embedding the ~114,000 distinct strings takes most
of an hour on two busy CPU cores, so tests/test_reference_metrics.py reads this file for the full check
and re-embeds a random sample live to show the file still matches the embedder.

Output: tests/data/reference_similarities.npz with, per trace key "<correct|incorrect>_base_solution/problem_<id>",
an int16 array [sentences, max rollouts] of round(cosine * 32000) (padding: -32768) and the SHA-256 of the
chunks_resampled.json it was built from (key + "__sha256").

    nice -n 19 .venv/bin/python scripts/build_reference_similarities.py [--threads 1]

Traces are done smallest first and the output file is rewritten after each one, so an interrupted run leaves
a valid file with the traces done so far (the test checks the traces the file holds); running the script again
resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchorlens.resampling.published_format import load_reference_trace, reference_trace_dirs  # noqa: E402
from anchorlens.resampling.similarity import MiniLMEmbedder, cosine_similarity, embed_unique  # noqa: E402

SCALE = 32000  # cosine in [-1, 1] -> int16; resolution 3e-5, far finer than the 0.8 threshold needs
PAD = -32768
OUT = REPO / "tests" / "data" / "reference_similarities.npz"


def trace_key(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    embed = MiniLMEmbedder()
    arrays: dict[str, np.ndarray] = dict(np.load(args.out)) if args.out.exists() else {}
    start = time.time()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    folders = sorted(reference_trace_dirs(), key=lambda f: (f / "chunks_resampled.json").stat().st_size)
    for folder in tqdm(folders, desc="traces"):
        if trace_key(folder) in arrays:
            continue  # done in an earlier run
        trace = load_reference_trace(folder)
        width = max(len(r) for r in trace.resampled)
        table = np.full((len(trace.sentences), width), PAD, dtype=np.int16)
        strings = list(trace.sentences) + [s for rs in trace.resampled for s in rs]
        vectors, index = embed_unique(strings, embed)
        n = len(trace.sentences)
        k = n
        for i, rs in enumerate(trace.resampled):
            if rs:
                sims = cosine_similarity(vectors[[index[i]]], vectors[index[k : k + len(rs)]])[0]
                table[i, : len(rs)] = np.round(sims.clamp(-1, 1).numpy() * SCALE).astype(np.int16)
            k += len(rs)
        key = trace_key(folder)
        arrays[key] = table
        arrays[key + "__sha256"] = np.array(hashlib.sha256((folder / "chunks_resampled.json").read_bytes()).hexdigest())
        embed.clear_cache()  # strings rarely repeat across traces; keep memory flat
        tmp = args.out.with_name(args.out.stem + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(args.out)  # atomic: a killed run leaves the previous complete file
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
