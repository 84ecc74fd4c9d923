"""A model's attention heads as ``(layer, head)`` pairs, and their check.

A leaf module (it imports only ``anchorlens.errors``) so that the hook layer can check the heads it is given
without importing a method package.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch  # noqa: F401 (the doctest below builds a tensor)

from anchorlens.errors import InputError

Head = tuple[int, int]


HeadSelectionError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def check_heads(heads: Iterable[Sequence[int]], n_layers: int, n_heads: int) -> list[Head]:
    """``heads`` as a list of ``(layer, head)`` ints, refused with advice when one is out of range.

    >>> check_heads([(1, 2), torch.tensor([0, 1])], n_layers=2, n_heads=4)
    [(1, 2), (0, 1)]
    """
    checked = []
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise HeadSelectionError(f"a head is a (layer, head) pair of ints, got {item!r}") from None
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise HeadSelectionError(
                f"head {(layer, head)} is outside the model ({n_layers} layers x {n_heads} heads); "
                "layers and heads count from 0"
            )
        checked.append((layer, head))
    return checked
