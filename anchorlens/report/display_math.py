"""Pure math behind the report's pictures: numpy arrays in, numpy arrays (or plain lists) out.

Kept apart from the HTML and the PNGs so that what the page shows is tested without a browser:
how the suppression matrix is normalised for display (docs/methods.md 1.6), which edges the sentence graph
draws, and the colour range of a heatmap.
"""

from __future__ import annotations

import warnings

import numpy as np
from jaxtyping import Float

#: Added to the KL before the log, as the reference does (docs/methods.md 1.6).
LOG_EPS = 1e-9


def suppression_for_display(kl: Float[np.ndarray, "target suppressed"]) -> Float[np.ndarray, "target suppressed"]:
    """The suppression matrix as the paper plots it: ``log(KL + 1e-9)``, row mean subtracted.

    Only entries with suppressed sentence ``j`` before target ``i`` mean anything (causal masking), so
    the diagonal and the upper triangle become NaN, and the mean of each row is taken over ``j < i``.
    Row 0 (nothing before it) is all NaN.

    >>> suppression_for_display(np.array([[0, 0], [np.e - 1e-9, 0]]))  # doctest: +NORMALIZE_WHITESPACE
    array([[nan, nan],
           [ 0., nan]])
    """
    kl = np.asarray(kl, dtype=float)
    logged = np.log(np.clip(kl, 0.0, None) + LOG_EPS)
    below = np.tril(np.ones_like(logged, dtype=bool), k=-1)
    shown = np.where(below, logged, np.nan)
    with warnings.catch_warnings():  # row 0 is all NaN: "Mean of empty slice" is expected there
        warnings.simplefilter("ignore", RuntimeWarning)
        row_mean = np.nanmean(shown, axis=1, keepdims=True)
    return shown - row_mean


def top_edges(
    matrix: Float[np.ndarray, "row col"], k: int, part: str
) -> list[tuple[int, int, float]]:
    """The ``k`` strongest positive entries of one triangle of ``matrix`` as ``(earlier, later, value)``.

    ``part="lower"`` reads entries ``[i, j]`` with ``j < i`` (suppression: row = target, column = the
    earlier, suppressed sentence); ``part="upper"`` reads ``j > i`` (counterfactual: row = the earlier,
    resampled sentence). Either way an edge runs from the earlier sentence to the later one. NaN and
    non-positive entries are never edges. Ties keep matrix order, so the result is deterministic.

    >>> top_edges(np.array([[0, 5.0], [2.0, 0]]), 1, "upper")
    [(0, 1, 5.0)]
    """
    if part not in ("lower", "upper"):
        raise ValueError(f"part must be 'lower' or 'upper', got {part!r}")
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = np.tril_indices_from(matrix, k=-1) if part == "lower" else np.triu_indices_from(matrix, k=1)
    values = matrix[rows, cols]
    keep = np.isfinite(values) & (values > 0)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = np.argsort(-values, kind="stable")[: max(int(k), 0)]
    edges = []
    for index in order:
        r, c, v = int(rows[index]), int(cols[index]), float(values[index])
        earlier, later = (c, r) if part == "lower" else (r, c)
        edges.append((earlier, later, v))
    return edges


def color_range(values: np.ndarray, kind: str, percentile: float = 99.0) -> tuple[float, float]:
    """The ``(vmin, vmax)`` a colour scale spans, robust to a few outliers.

    ``kind="diverging"`` is symmetric around 0 (``±`` the percentile of ``|values|``); ``"sequential"``
    runs from the minimum to the percentile. Empty or constant data still gives a usable range.

    >>> color_range(np.array([-1.0, 0.5, np.nan]), "diverging", percentile=100)
    (-1.0, 1.0)
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (0.0, 1.0)
    if kind == "diverging":
        top = float(np.percentile(np.abs(finite), percentile))
        top = top if top > 0 else float(np.abs(finite).max()) or 1.0
        return (-top, top)
    if kind != "sequential":
        raise ValueError(f"kind must be 'diverging' or 'sequential', got {kind!r}")
    low = float(finite.min())
    high = float(np.percentile(finite, percentile))
    if high <= low:
        high = float(finite.max())
    if high <= low:
        high = low + 1.0
    return (low, high)


def scale_kind(values: np.ndarray) -> str:
    """``"diverging"`` when the data holds negative values (signed importance), else ``"sequential"``."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return "diverging" if finite.size and finite.min() < 0 else "sequential"


def rounded(values: np.ndarray, digits: int = 4) -> list:
    """Nested lists of ``digits`` significant figures, None for NaN / inf: compact JSON for the page."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 0:
        return _round_one(float(array), digits)
    if array.ndim == 1:
        return [_round_one(v, digits) for v in array.tolist()]
    return [rounded(row, digits) for row in array]


def _round_one(value: float, digits: int):
    if not np.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")

