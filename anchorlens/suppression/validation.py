"""Checking the inputs of attention suppression, with errors that say what to do."""

from __future__ import annotations

import operator
from typing import Sequence

from anchorlens.errors import InputError, TokenizerMismatchError, TraceTooLongError


SuppressionInputError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def _indices(values, n: int, what: str, hint: str) -> list[int]:
    """Sorted, de-duplicated integer indices in ``0..n-1`` (numpy / torch integers accepted), or a clear error."""
    if hasattr(values, "tolist"):  # numpy arrays, torch tensors
        values = values.tolist()
    if not isinstance(values, (list, tuple, set, range)):
        values = [values]
    values = list(values)
    if not values:
        raise SuppressionInputError(f"the list of {what} is empty: {hint}")
    good, bad = [], []
    for value in values:
        try:
            index = operator.index(value)
        except TypeError:
            bad.append(value)
            continue
        (good if 0 <= index < n else bad).append(index)
    if bad:
        raise SuppressionInputError(f"{what} {bad} are out of range: valid {what} are 0..{n - 1}")
    return sorted(set(good))


def check_trace(model, trace) -> None:
    """Refuse traces that suppression cannot measure or that do not fit the model.

    >>> check_trace(model, Trace.from_text(model, "Only one sentence."))   # doctest: +SKIP
    Traceback (most recent call last):
    SuppressionInputError: ...
    """
    if trace.n_sentences < 2:
        raise SuppressionInputError(
            f"attention suppression needs at least two sentences (it measures how a later sentence depends "
            f"on an earlier one), but the trace has {trace.n_sentences}: pass a longer chain of thought"
        )
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and trace.n_tokens > n_ctx:
        raise TraceTooLongError(
            f"the trace has {trace.n_tokens} tokens but the model's context holds {n_ctx}: shorten the trace"
        )
    d_vocab = getattr(model.cfg, "d_vocab", None)
    if d_vocab and max(trace.token_ids) >= d_vocab:
        raise TokenizerMismatchError(
            f"the trace holds token id {max(trace.token_ids)} but the model's vocabulary has {d_vocab} entries: "
            f"the trace was tokenized for another model ({trace.model_name!r}); rebuild it with "
            "Trace.from_text(model, ...) for this model"
        )


def resolve_layers(model, layers: Sequence[int] | int | None) -> list[int]:
    """``None`` -> all layers; an int -> that layer; a list -> sorted, de-duplicated, range-checked.

    >>> resolve_layers(model, [3, 1, 3])   # doctest: +SKIP
    [1, 3]
    """
    n_layers = model.cfg.n_layers
    if layers is None:
        return list(range(n_layers))
    return _indices(layers, n_layers, "layers", f"pass layers=None to suppress in all layers, or some of 0..{n_layers - 1}")


def resolve_heads(model, heads: Sequence[int] | int | None) -> list[int] | None:
    """``None`` -> all heads (returned as None: no per-head mask needed); otherwise range-checked query heads.

    >>> resolve_heads(model, [0, 2])   # doctest: +SKIP
    [0, 2]
    """
    if heads is None:
        return None
    n_heads = model.cfg.n_heads
    return _indices(heads, n_heads, "heads", f"pass heads=None for all heads, or some of the query heads 0..{n_heads - 1}")


def check_temperature(temperature: float) -> float:
    """A positive, finite temperature."""
    if not isinstance(temperature, (int, float)) or not 0 < float(temperature) < float("inf"):
        raise SuppressionInputError(f"temperature must be a positive number (the paper uses 0.6), got {temperature!r}")
    return float(temperature)


def resolve_sentences(trace, sentences: Sequence[int] | None) -> list[int]:
    """Which sentences to suppress: None -> all; otherwise sorted, de-duplicated, range-checked indices."""
    n = trace.n_sentences
    if sentences is None:
        return list(range(n))
    return _indices(sentences, n, "sentences", f"pass sentences=None to suppress all, or some of 0..{n - 1}")
