"""Fitting and scoring the taxonomy classifier (used by ``scripts/train_taxonomy.py``; pure numpy/torch).

>>> stage = fit_logistic(x_train, y_train, l2=0.1)                    # doctest: +SKIP
>>> scores = score(y_true, stage.proba(x_test).argmax(1))              # doctest: +SKIP
>>> cv = score_by_problem([(y_a, pred_a), (y_b, pred_b)])              # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int

from anchorlens.taxonomy.categories import SENTENCE_CATEGORIES
from anchorlens.taxonomy.classifier import LinearStage


def fit_logistic(
    x: Float[np.ndarray, "sentence feature"],
    y: Int[np.ndarray, "sentence"],
    l2: float = 0.1,
    class_weight_power: float = 0.5,
    n_classes: int = len(SENTENCE_CATEGORIES),
    max_iter: int = 400,
) -> LinearStage:
    """Multinomial logistic regression on standardised features, fitted with L-BFGS.

    ``l2`` penalises the squared weights (summed); classes are weighted by (balanced weight) **
    ``class_weight_power``: 0 is unweighted, 1 fully balanced (rare categories such as problem_setup and
    final_answer_emission matter for macro-F1).
    """
    x_t = torch.tensor(np.asarray(x, dtype=np.float32))
    y_t = torch.tensor(np.asarray(y, dtype=np.int64))
    mean = x_t.mean(0)
    scale = x_t.std(0) + 1e-6  # constant columns (e.g. an unseen n-gram) stay finite
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
    return LinearStage(
        mean=mean.numpy(), scale=scale.numpy(), weight=model.weight.detach().numpy(), bias=model.bias.detach().numpy()
    )


def score(y_true: Int[np.ndarray, "n"], y_pred: Int[np.ndarray, "n"], n_classes: int = len(SENTENCE_CATEGORIES)) -> dict:
    """Accuracy, macro-F1 over all categories, per-category F1 and the confusion matrix (rows: true)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(n_classes), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros(n_classes), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=(precision + recall) > 0)
    return {
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1.mean()),
        "f1": {SENTENCE_CATEGORIES[k]: float(f1[k]) for k in range(n_classes)},
        "support": {SENTENCE_CATEGORIES[k]: int(confusion[k].sum()) for k in range(n_classes)},
        "confusion": confusion.tolist(),
        "n_sentences": int(len(y_true)),
    }


def score_by_problem(results: list[tuple[np.ndarray, np.ndarray]], n_classes: int = len(SENTENCE_CATEGORIES)) -> dict:
    """Scores of a cross-validation over whole problems: ``results`` holds ``(y_true, y_pred)`` per test fold.

    Returns ``score`` of all folds pooled, plus ``fold_mean``: the mean over folds of accuracy and of macro-F1,
    where a fold's macro-F1 averages only the categories present in it (a problem without a final answer
    emission must not count an F1 of 0 for that category).
    """
    if not results:
        raise ValueError("score_by_problem needs at least one fold of (y_true, y_pred)")
    folds = [score(y, p, n_classes) for y, p in results]
    pooled = score(np.concatenate([y for y, _ in results]), np.concatenate([p for _, p in results]), n_classes)
    pooled["fold_mean"] = {
        "accuracy": float(np.mean([f["accuracy"] for f in folds])),
        "macro_f1": float(np.mean([np.mean([f["f1"][c] for c in f["f1"] if f["support"][c]]) for f in folds])),
    }
    return pooled
