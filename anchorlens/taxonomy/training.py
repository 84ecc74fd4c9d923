"""Fitting and scoring the taxonomy classifier (used by ``scripts/train_taxonomy.py``; scikit-learn).

>>> stage = fit_logistic(x_train, y_train, l2=0.1)                    # doctest: +SKIP
>>> scores = score(y_true, stage.proba(x_test).argmax(1))              # doctest: +SKIP
>>> cv = score_by_problem([(y_a, pred_a), (y_b, pred_b)])              # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.preprocessing import StandardScaler

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
    """Multinomial logistic regression on standardised features (scikit-learn, L-BFGS).

    Minimises the class-weighted mean cross-entropy plus ``l2`` times the summed squared weights (the
    intercepts are not penalised); classes are weighted by (balanced weight) ** ``class_weight_power``: 0 is
    unweighted, 1 fully balanced (rare categories such as problem_setup and final_answer_emission matter for
    macro-F1). A class absent from ``y`` gets zero weights and an intercept below every other: never predicted.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    scaler = StandardScaler().fit(x)  # constant columns (e.g. an unseen n-gram) get scale 1 and stay 0
    counts = np.bincount(y, minlength=n_classes)
    weights = (len(y) / (n_classes * np.maximum(counts, 1))) ** class_weight_power
    # sklearn minimises sum_i w_i CE_i / sum_i w_i + ||W||^2 / (2 C sum_i w_i): this C makes the penalty l2 ||W||^2
    C = 1.0 / (2.0 * l2 * weights[y].sum())
    present = np.flatnonzero(counts)
    model = LogisticRegression(C=C, class_weight=dict(enumerate(weights)), max_iter=max_iter)
    model.fit(scaler.transform(x), y)
    weight = np.zeros((n_classes, x.shape[1]))
    bias = np.full(n_classes, model.intercept_.min() - 50.0 if len(present) > 1 else -50.0)
    if len(present) == 1:  # sklearn refuses one class; predicting it always is the fit
        bias[present] = 0.0
    else:
        weight[present], bias[present] = model.coef_, model.intercept_
    return LinearStage(mean=scaler.mean_.astype(np.float32), scale=scaler.scale_.astype(np.float32),
                       weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def score(y_true: Int[np.ndarray, "n"], y_pred: Int[np.ndarray, "n"], n_classes: int = len(SENTENCE_CATEGORIES)) -> dict:
    """Accuracy, macro-F1 over all categories, per-category F1 and the confusion matrix (rows: true)."""
    labels = list(range(n_classes))
    confusion = confusion_matrix(y_true, y_pred, labels=labels) if len(y_true) else np.zeros((n_classes,) * 2, int)
    f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0) if len(y_true) else np.zeros(n_classes)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
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
