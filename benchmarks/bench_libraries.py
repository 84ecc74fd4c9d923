"""Kept libraries against hand-written code (issue 22), each pair timed in the same run, with their agreement.

- kurtosis of vertical scores ``[30 layers, 9 heads, S sentences]`` (SmolLM2's shape; the last 4 sentences NaN,
  as ``vertical_scores`` leaves them): ``anchorlens.receivers.scores.kurtosis`` (torch) against
  ``scipy.stats.kurtosis(nan_policy="omit")``;
- depth-control ranks of sentence matrices ``[30, 9, S, S]``: ``row_ranks`` (now ``scipy.stats.rankdata``) against
  the torch sort / searchsorted version it replaced;
- the study's reliability interval (2000 resamples, 20 traces): ``scipy.stats.bootstrap`` against the
  hand-written loop it replaced;
- the taxonomy's logistic regression on the published labelled traces (lexical, position and TF-IDF features of
  the 8 training problems; the 2 held-out problems predicted): scikit-learn against the torch L-BFGS fit it
  replaced.

One torch thread, median of ``--repeats``.

    .venv/bin/python benchmarks/bench_libraries.py [--repeats 3] [--sentences 150]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchorlens.receivers.scores import kurtosis, row_ranks  # noqa: E402
from anchorlens.study.aggregate import even_odd_reliability, reliability_interval  # noqa: E402


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report(name, hand, library, agreement):
    print(f"{name}: hand-written {hand:.4f} s, library {library:.4f} s, library / hand-written {library / hand:.2f}; "
          f"{agreement}")


def bench_kurtosis(n, repeats):
    from scipy.stats import kurtosis as scipy_kurtosis

    values = torch.rand(30, 9, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) ** 4
    values[..., -4:] = float("nan")
    hand, ours = timed(lambda: kurtosis(values), repeats)
    library, theirs = timed(lambda: scipy_kurtosis(values.numpy(), axis=-1, nan_policy="omit"), repeats)
    difference = np.abs(ours.numpy() - np.asarray(theirs)).max()
    report(f"kurtosis [30, 9, {n}]", hand, library, f"max |difference| {difference:.1e}")


def hand_row_ranks(values, valid):
    """The torch sort / searchsorted ranks that ``row_ranks`` replaced (baseline only)."""
    filled = torch.where(valid, values, torch.full_like(values, float("inf"))).contiguous()
    ordered = filled.sort(dim=-1).values.contiguous()
    left = torch.searchsorted(ordered, filled, side="left")
    right = torch.searchsorted(ordered, filled, side="right")
    ranks = (left + right + 1).to(values.dtype) / 2
    per_row = valid.sum(-1, keepdim=True).to(values.dtype)
    return torch.where(valid, ranks / per_row, torch.full_like(values, float("nan")))


def bench_ranks(n, repeats):
    values = torch.rand(30, 9, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    values[..., : n // 3] = values[..., : n // 3].round(decimals=1)  # ties, as attention has
    i = torch.arange(n)
    valid = ((i[:, None] - i[None, :]) >= 4).expand_as(values)
    hand, ours = timed(lambda: hand_row_ranks(values, valid), repeats)
    library, theirs = timed(lambda: row_ranks(values, valid), repeats)  # scipy.stats.rankdata(nan_policy="omit")
    ours, theirs = ours.numpy(), theirs.numpy()
    same_nan = bool((np.isnan(ours) == np.isnan(theirs)).all())
    report(f"row_ranks [30, 9, {n}, {n}]", hand, library,
           f"max |difference| {np.nanmax(np.abs(ours - theirs)):.1e}, same NaN: {same_nan}")


def hand_reliability_interval(kurtosis_, n_boot=2000, confidence=0.95, seed=0):
    """The loop that ``reliability_interval`` replaced (baseline only)."""
    values = kurtosis_.double().numpy()
    even_idx, odd_idx = np.arange(0, len(values), 2), np.arange(1, len(values), 2)
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_boot):
        draw = np.empty(len(even_idx) + len(odd_idx), dtype=int)
        draw[0::2] = rng.choice(even_idx, size=len(even_idx))
        draw[1::2] = rng.choice(odd_idx, size=len(odd_idx))
        rs.append(even_odd_reliability(torch.from_numpy(values[draw])))
    rs = np.asarray(rs)
    rs = rs[np.isfinite(rs)]
    tail = (1 - confidence) / 2
    return tuple(float(v) for v in np.quantile(rs, [tail, 1 - tail]))


def bench_reliability(repeats):
    g = torch.Generator().manual_seed(2)
    values = torch.randn(1, 30, 9, generator=g).repeat(20, 1, 1) + 0.5 * torch.randn(20, 30, 9, generator=g)
    hand, ours = timed(lambda: hand_reliability_interval(values), repeats)
    library, theirs = timed(lambda: reliability_interval(values, method="percentile"), repeats)
    report("reliability_interval (20 traces, 2000 resamples)", hand, library,
           f"hand-written {ours[0]:.4f}..{ours[1]:.4f}, scipy {theirs[0]:.4f}..{theirs[1]:.4f} (other random draws)")


def hand_fit_logistic(x, y, l2, class_weight_power, n_classes=8, max_iter=400):
    """The torch L-BFGS fit that ``fit_logistic`` replaced (baseline only): returns the predict function."""
    x_t, y_t = torch.tensor(np.asarray(x, dtype=np.float32)), torch.tensor(np.asarray(y, dtype=np.int64))
    mean, scale = x_t.mean(0), x_t.std(0) + 1e-6
    xs = (x_t - mean) / scale
    counts = torch.bincount(y_t, minlength=n_classes).float()
    weights = (counts.sum() / (n_classes * counts.clamp(min=1))) ** class_weight_power
    torch.manual_seed(0)
    model = torch.nn.Linear(x_t.shape[1], n_classes)
    optimiser = torch.optim.LBFGS(model.parameters(), max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xs), y_t, weight=weights) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return lambda z: torch.softmax(model((torch.tensor(z, dtype=torch.float32) - mean) / scale), -1).detach().numpy()


def bench_logistic(repeats):
    from anchorlens.resampling.published_format import load_reference_trace, reference_trace_dirs
    from anchorlens.taxonomy.categories import SENTENCE_CATEGORIES
    from anchorlens.taxonomy.classifier import TaxonomyClassifier
    from anchorlens.taxonomy.features import NgramVocabulary, context_means, lexical_features, position_features
    from anchorlens.taxonomy.training import fit_logistic, score

    held_out = set(TaxonomyClassifier.load().info["held_out_problems"])
    traces = []
    for folder in reference_trace_dirs(REPO / "data" / "thought-anchors"):
        trace = load_reference_trace(folder)
        if trace.categories is not None:
            labels = np.array([SENTENCE_CATEGORIES.index(c) for c in trace.categories])
            traces.append((folder.name, trace.sentences, labels))
    train = [t for t in traces if t[0] not in held_out]
    test = [t for t in traces if t[0] in held_out]
    vocabulary = NgramVocabulary.fit([s for t in train for s in t[1]])

    def design(part):
        xs = []
        for _, sentences, _ in part:
            cues = lexical_features(sentences)
            xs.append(np.concatenate([position_features(len(sentences)), cues, *context_means(cues, 5),
                                      vocabulary.transform(sentences)], axis=1))
        return np.concatenate(xs), np.concatenate([t[2] for t in part])

    (x, y), (x_test, y_test) = design(train), design(test)
    for l2, power in ((0.1, 0.75), (1.0, 1.0)):
        hand, predict = timed(lambda: hand_fit_logistic(x, y, l2, power), repeats)
        library, stage = timed(lambda: fit_logistic(x, y, l2=l2, class_weight_power=power), repeats)
        p_hand, p_lib = predict(x_test), stage.proba(x_test)
        agree = (p_hand.argmax(1) == p_lib.argmax(1)).mean()
        s_hand, s_lib = score(y_test, p_hand.argmax(1)), score(y_test, p_lib.argmax(1))
        report(f"taxonomy logistic regression ({x.shape[0]} x {x.shape[1]}, l2={l2}, power={power})", hand, library,
               f"held-out ({len(y_test)} sentences) predictions equal {agree:.4f}, max |proba difference| "
               f"{np.abs(p_hand - p_lib).max():.1e}, accuracy {s_hand['accuracy']:.4f} / {s_lib['accuracy']:.4f}, "
               f"macro-F1 {s_hand['macro_f1']:.4f} / {s_lib['macro_f1']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_kurtosis(args.sentences, args.repeats)
    bench_ranks(args.sentences, args.repeats)
    bench_reliability(args.repeats)
    bench_logistic(args.repeats)


if __name__ == "__main__":
    main()
