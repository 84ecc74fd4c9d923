"""Issue 14 exploration: the published resamples as paraphrases of the labelled sentences (data augmentation).

``chunks_resampled.json`` holds, for every labelled sentence, the first sentence of 100 rollouts regenerated in
its place. Those that say nearly the same thing (MiniLM cosine to the original at least ``--threshold``) are
taken as paraphrases with the original's label: each training trace gets ``--copies`` extra copies in which
every sentence is replaced by its k-th most similar resample (the original where none is similar enough); the
copies' features are computed like the originals' (their own embeddings, neighbours, cues, TF-IDF), their
SmolLM2 states are the original sentences' (no forward for the copies). Test traces are never augmented.

Measured by leave-one-problem-out over the EIGHT training problems of scripts/train_taxonomy.py (the shipped
recipe: L2 1.0, balanced class weights, SmolLM2 layers 15 and 20), against the same recipe without copies;
``--held-out`` trains on the eight and scores the two held-out problems instead (for a finalist only). Prints
the mean over problems of accuracy / macro-F1 (categories present) and the pooled scores.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/taxonomy_paraphrase_augmentation.py [--copies 1 2 4] [--threshold 0.8]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import train_taxonomy as tt  # noqa: E402
from anchorlens.models import cache_dir  # noqa: E402
from anchorlens.resampling.similarity import MiniLMEmbedder  # noqa: E402
from anchorlens.taxonomy.features import CONTEXT_WINDOW, NgramVocabulary, features_from_embeddings  # noqa: E402
from anchorlens.taxonomy.training import fit_logistic, score_by_problem  # noqa: E402

HYPER = (tt.LM_L2, 1.0, (15, 20))
CANDIDATES = 8  # resamples embedded per sentence (the first ones stored)


def paraphrases(trace: dict, folder: Path, embed, cache: dict) -> tuple[list[list[str]], list[np.ndarray], list[np.ndarray]]:
    """Per sentence: candidate resamples, their embeddings and their cosine to the original."""
    key = trace["name"].replace("/", "__")
    resampled = json.loads((folder / "chunks_resampled.json").read_text())
    texts = [[s.strip() for s in resampled.get(str(i), []) if s and s.strip()][:CANDIDATES]
             for i in range(len(trace["sentences"]))]
    flat = [s for group in texts for s in group]
    if key not in cache:
        cache[key] = embed(flat).float().numpy() if flat else np.zeros((0, trace["emb"].shape[1]), np.float32)
    vectors, out_v, out_c = cache[key], [], []
    offset = 0
    for i, group in enumerate(texts):
        v = vectors[offset : offset + len(group)]
        offset += len(group)
        original = trace["emb"][i] / (np.linalg.norm(trace["emb"][i]) + 1e-9)
        out_v.append(v)
        out_c.append(v @ original / (np.linalg.norm(v, axis=1) + 1e-9) if len(v) else np.zeros(0))
    return texts, out_v, out_c


def augmented_copies(trace: dict, texts, vectors, cosines, copies: int, threshold: float) -> list[dict]:
    """``copies`` traces with each sentence replaced by its k-th most similar resample above ``threshold``."""
    out = []
    for k in range(copies):
        sentences, emb = list(trace["sentences"]), trace["emb"].copy()
        for i in range(len(sentences)):
            order = np.argsort(-cosines[i]) if len(cosines[i]) else []
            good = [j for j in order if cosines[i][j] >= threshold]
            if k < len(good):
                sentences[i] = texts[i][good[k]]
                emb[i] = vectors[i][good[k]]
        out.append({**trace, "sentences": sentences, "emb": emb})
    return out


def design(traces, vocabulary):
    xs = [np.concatenate([features_from_embeddings(t["sentences"], t["emb"], CONTEXT_WINDOW, vocabulary),
                          *(t["lm"][k] for k in HYPER[2])], axis=1) for t in traces]
    return np.concatenate(xs).astype(np.float32), np.concatenate([t["y"] for t in traces])


def evaluate(train, test, extra):
    vocabulary = NgramVocabulary.fit([s for t in train for s in t["sentences"]], max_terms=tt.NGRAM_TERMS)
    x, y = design(train + extra, vocabulary)
    model = fit_logistic(x, y, l2=HYPER[0], class_weight_power=HYPER[1])
    xt, yt = design(test, vocabulary)
    return yt, model.proba(xt).argmax(1)


def summarise(results):
    pooled = score_by_problem(results)
    return {"mean_accuracy": pooled["fold_mean"]["accuracy"], "mean_macro_f1": pooled["fold_mean"]["macro_f1"],
            "pooled_accuracy": pooled["accuracy"], "pooled_macro_f1": pooled["macro_f1"], "f1": pooled["f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "thought-anchors")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    embed = MiniLMEmbedder()
    traces = tt.load_traces(args.data, embed)
    folders = {f"{d.parent.name}/{d.name}": d for d in tt.reference_trace_dirs(args.data)}
    cache_path = cache_dir() / "taxonomy_paraphrase_embeddings.npz"
    cache = dict(np.load(cache_path)) if cache_path.exists() else {}
    para = {t["name"]: paraphrases(t, folders[t["name"]], embed, cache) for t in traces}
    np.savez(cache_path, **cache)
    share = np.mean([np.mean([bool(len(c)) and c.max() >= args.threshold for c in para[t["name"]][2]]) for t in traces])
    print(f"sentences with a resample at cosine >= {args.threshold}: {share:.2f} ({time.time() - started:.0f} s)", flush=True)
    problems = sorted({t["problem"] for t in traces})
    held_out = set(random.Random(tt.SEED).sample(problems, tt.N_HELD_OUT))
    training = [p for p in problems if p not in held_out]
    if args.held_out:
        splits = [(training, sorted(held_out))]
    else:
        splits = [([p for p in training if p != q], [q]) for q in training]
    report = {}
    for copies in [0, *args.copies]:
        results = []
        for train_problems, test_problems in splits:
            train = [t for t in traces if t["problem"] in train_problems]
            test = [t for t in traces if t["problem"] in test_problems]
            extra = [c for t in train for c in augmented_copies(t, *para[t["name"]], copies, args.threshold)]
            if args.held_out:
                results.extend(evaluate(train, [t for t in test if t["problem"] == q], extra) for q in test_problems)
            else:
                results.append(evaluate(train, test, extra))
        r = report[copies] = summarise(results)
        print(f"copies={copies}: mean {r['mean_accuracy']:.3f} / {r['mean_macro_f1']:.3f}, pooled "
              f"{r['pooled_accuracy']:.3f} / {r['pooled_macro_f1']:.3f} ({time.time() - started:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
