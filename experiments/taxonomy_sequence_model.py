"""Issue 14 exploration: bidirectional context for the taxonomy classifier, measured by leave-one-problem-out.

Measures, by leave-one-problem-out cross-validation over the EIGHT training problems only (the two held-out
problems of scripts/train_taxonomy.py, drawn with random.Random(0), are excluded unless ``--held-out``):

- ``lr``: the shipped logistic regression (previous features + SmolLM2 layers 15 and 20, L2 1.0, balanced);
- ``lr_nbr``: the same plus the SmolLM2 states of the previous and the next sentence, the mean of the next
  two, and the difference between the sentence's state and the previous sentence's (``--nbr-layers``);
- ``gru``: a bidirectional GRU over the sentences of each trace, its inputs the standardised features
  PCA-reduced (fitted on the training folds only), class-weighted cross-entropy, dropout, weight decay,
  scored after each of ``--epochs`` checkpoints, averaged over ``--seeds`` seeds;
- blends of the GRU's and the LR's log-probabilities.

Prints, for each, the mean over problems of accuracy / macro-F1 (categories present in the problem) and the
pooled scores, and writes them as JSON to ``--out``. Uses the cached embeddings and SmolLM2 states of
scripts/train_taxonomy.py (``load_traces``). ``--held-out`` trains on the eight problems and scores the two
held-out ones instead (look at it for a finalist only).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/taxonomy_sequence_model.py --what lr lr_nbr gru [--held-out]

The runs reported in anchorlens/data/taxonomy_report.md (Notes; one CPU thread, shared machine): ``--what lr
lr_nbr`` with ``--nbr-layers 20`` / ``15`` / ``15 20`` and ``--nbr-layers 20 --l2 3.0`` (about 35 s each);
``--what lr gru --epochs 5 10 20 30 50`` (the GRU, 11 minutes); ``--what lr gru --arch conv --epochs 10 20 40 60
100`` and the same with ``--pca 256 --hidden 128 --epochs 20 40 60 100`` (3-4 minutes); the finalist
``--what lr gru --held-out --epochs 50`` (1.5 minutes).
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
from anchorlens.resampling.similarity import MiniLMEmbedder  # noqa: E402
from anchorlens.taxonomy.categories import SENTENCE_CATEGORIES  # noqa: E402
from anchorlens.taxonomy.features import CONTEXT_WINDOW, NgramVocabulary, features_from_embeddings  # noqa: E402
from anchorlens.taxonomy.training import fit_logistic, score_by_problem  # noqa: E402

N_CLASSES = len(SENTENCE_CATEGORIES)


def neighbour_states(states: np.ndarray) -> np.ndarray:
    """Previous sentence's state, next sentence's, mean of the next two, and state - previous (zeros at edges)."""
    n, d = states.shape
    prev = np.zeros_like(states)
    nxt = np.zeros_like(states)
    next2 = np.zeros_like(states)
    prev[1:] = states[:-1]
    nxt[:-1] = states[1:]
    for i in range(n - 1):
        next2[i] = states[i + 1 : i + 3].mean(0)
    diff = states - prev
    diff[0] = 0
    return np.concatenate([prev, nxt, next2, diff], axis=1)


def trace_features(t, vocabulary, nbr_layers=()):
    x = features_from_embeddings(t["sentences"], t["emb"], CONTEXT_WINDOW, vocabulary)
    parts = [x, t["lm"][15], t["lm"][20]]
    parts += [neighbour_states(t["lm"][k]) for k in nbr_layers]
    return np.concatenate(parts, axis=1).astype(np.float32)


def fold_scores(results):
    """results: list of (y, pred) per test problem -> mean over problems and pooled."""
    pooled = score_by_problem(results)
    return {"mean_accuracy": pooled["fold_mean"]["accuracy"], "mean_macro_f1": pooled["fold_mean"]["macro_f1"],
            "pooled_accuracy": pooled["accuracy"], "pooled_macro_f1": pooled["macro_f1"], "f1": pooled["f1"]}


class TemporalConv(torch.nn.Module):
    """Two residual 1-D convolutions over the sentence sequence (kernel 5: two sentences either side each)."""

    def __init__(self, d_in, hidden, dropout):
        super().__init__()
        self.drop_in = torch.nn.Dropout(dropout)
        self.proj = torch.nn.Linear(d_in, hidden)
        self.convs = torch.nn.ModuleList([torch.nn.Conv1d(hidden, hidden, 5, padding=2) for _ in range(2)])
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(hidden, N_CLASSES)

    def forward(self, x):  # x: (1, n, d)
        h = torch.relu(self.proj(self.drop_in(x))).transpose(1, 2)
        for conv in self.convs:
            h = h + torch.relu(conv(self.drop(h)))
        return self.out(self.drop(h.transpose(1, 2)))


class BiGRU(torch.nn.Module):
    def __init__(self, d_in, hidden, dropout):
        super().__init__()
        self.drop_in = torch.nn.Dropout(dropout)
        self.proj = torch.nn.Linear(d_in, hidden)
        self.gru = torch.nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(3 * hidden, N_CLASSES)

    def forward(self, x):  # x: (1, n, d)
        h = torch.relu(self.proj(self.drop_in(x)))
        g, _ = self.gru(h)
        return self.out(self.drop(torch.cat([h, g], dim=-1)))


def fit_gru(xs_train, ys_train, xs_test, seed, epochs, hidden, dropout, weight_decay, lr, class_weight_power,
            arch="gru"):
    """Train on whole traces (one sequence per step); log-probabilities of the test traces at each checkpoint."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = (BiGRU if arch == "gru" else TemporalConv)(xs_train[0].shape[1], hidden, dropout)
    counts = np.bincount(np.concatenate(ys_train), minlength=N_CLASSES).astype(np.float32)
    weights = torch.tensor((counts.sum() / (N_CLASSES * np.maximum(counts, 1))) ** class_weight_power)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt = [torch.tensor(x)[None] for x in xs_train]
    yt = [torch.tensor(y, dtype=torch.long) for y in ys_train]
    xe = [torch.tensor(x)[None] for x in xs_test]
    out = {}
    for epoch in range(1, max(epochs) + 1):
        model.train()
        for k in rng.permutation(len(xt)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[k])[0], yt[k], weight=weights)
            loss.backward()
            opt.step()
        if epoch in epochs:
            model.eval()
            with torch.no_grad():
                out[epoch] = [torch.log_softmax(model(x)[0], -1).numpy() for x in xe]
    return out


def pca_inputs(x_train_rows, xs, dims):
    """Standardise with the training rows, PCA to ``dims`` (training rows only), whiten-free (scaled by sd)."""
    mean = x_train_rows.mean(0)
    scale = x_train_rows.std(0) + 1e-6
    z = (x_train_rows - mean) / scale
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    comp = vt[:dims]
    sd = (z @ comp.T).std(0) + 1e-6
    return [(((x - mean) / scale) @ comp.T / sd).astype(np.float32) for x in xs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", nargs="+", default=["lr", "lr_nbr", "gru"])
    parser.add_argument("--nbr-layers", type=int, nargs="+", default=[20])
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument("--l2", type=float, default=tt.LM_L2, help="L2 of the logistic regressions")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15, 20, 30])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pca", type=int, default=128)
    parser.add_argument("--gru-nbr", action="store_true", help="GRU inputs include the neighbour states")
    parser.add_argument("--cw", type=float, default=0.75, help="GRU class weights balanced ** cw")
    parser.add_argument("--arch", choices=("gru", "conv"), default="gru", help="sequence model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()

    traces = tt.load_traces(REPO / "data" / "thought-anchors", MiniLMEmbedder())
    problems = sorted({t["problem"] for t in traces})
    held_out = sorted(random.Random(tt.SEED).sample(problems, tt.N_HELD_OUT))
    train_problems = [p for p in problems if p not in held_out]
    if args.held_out:
        splits = [(train_problems, held_out)]
    else:
        splits = [([q for q in train_problems if q != p], [p]) for p in train_problems]

    results = {}
    lr_logp = {}
    for name in [w for w in args.what if w.startswith("lr")]:
        nbr = tuple(args.nbr_layers) if name == "lr_nbr" else ()
        per_split = []
        for fit_on, test_on in splits:
            train = [t for t in traces if t["problem"] in fit_on]
            test = [t for t in traces if t["problem"] in test_on]
            vocab = NgramVocabulary.fit([s for t in train for s in t["sentences"]], max_terms=tt.NGRAM_TERMS)
            x = np.concatenate([trace_features(t, vocab, nbr) for t in train])
            y = np.concatenate([t["y"] for t in train])
            model = fit_logistic(x, y, l2=args.l2, class_weight_power=1.0)
            for p in test_on:
                tp = [t for t in test if t["problem"] == p]
                logp = np.log(model.proba(np.concatenate([trace_features(t, vocab, nbr) for t in tp])) + 1e-12)
                per_split.append((p, np.concatenate([t["y"] for t in tp]), logp))
            print(name, test_on, f"{time.time() - start:.0f}s", flush=True)
        lr_logp[name] = {p: lp for p, _, lp in per_split}
        results[name] = fold_scores([(y, lp.argmax(1)) for _, y, lp in per_split])
        print(name, json.dumps({k: round(v, 3) for k, v in results[name].items() if k != "f1"}), flush=True)

    if "gru" in args.what:
        per_epoch = {e: [] for e in args.epochs}
        for fit_on, test_on in splits:
            train = [t for t in traces if t["problem"] in fit_on]
            test = [t for t in traces if t["problem"] in test_on]
            vocab = NgramVocabulary.fit([s for t in train for s in t["sentences"]], max_terms=tt.NGRAM_TERMS)
            nbr = tuple(args.nbr_layers) if args.gru_nbr else ()
            raw_train = [trace_features(t, vocab, nbr) for t in train]
            raw_test = [trace_features(t, vocab, nbr) for t in test]
            xs = pca_inputs(np.concatenate(raw_train), raw_train + raw_test, args.pca)
            xs_train, xs_test = xs[: len(train)], xs[len(train):]
            acc = {e: [np.zeros((len(t["y"]), N_CLASSES)) for t in test] for e in args.epochs}
            for seed in range(args.seeds):
                out = fit_gru(xs_train, [t["y"] for t in train], xs_test, seed, set(args.epochs), args.hidden,
                              args.dropout, args.weight_decay, args.lr, args.cw, args.arch)
                for e in args.epochs:
                    for k in range(len(test)):
                        acc[e][k] += np.exp(out[e][k]) / args.seeds
            for e in args.epochs:
                for p in test_on:
                    idx = [k for k, t in enumerate(test) if t["problem"] == p]
                    per_epoch[e].append((p, np.concatenate([test[k]["y"] for k in idx]),
                                         np.log(np.concatenate([acc[e][k] for k in idx]) + 1e-12)))
            print("gru", test_on, f"{time.time() - start:.0f}s", flush=True)
        for e in args.epochs:
            name = f"{args.arch}_e{e}"
            results[name] = fold_scores([(y, lp.argmax(1)) for _, y, lp in per_epoch[e]])
            print(name, json.dumps({k: round(v, 3) for k, v in results[name].items() if k != "f1"}), flush=True)
            for base in lr_logp:
                for w in (0.25, 0.5, 0.75):
                    bname = f"blend_{w}{args.arch}_e{e}+{base}"
                    results[bname] = fold_scores(
                        [(y, (w * lp + (1 - w) * lr_logp[base][p]).argmax(1)) for p, y, lp in per_epoch[e]])
                    print(bname, json.dumps({k: round(v, 3) for k, v in results[bname].items() if k != "f1"}),
                          flush=True)
    results["_args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results["_seconds"] = time.time() - start
    results["_splits"] = splits
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"done in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
