"""Attention suppression (Thought Anchors, docs/methods.md 1.6): the sentence-to-sentence causal matrix.

- ``suppression_matrix(model, trace)``: hide each sentence's keys from the attention, measure the KL of
  every later sentence's next-token distributions; fast by reusing the unchanged prefix's keys and values.
- ``suppression_by_layer(model, trace, window=1)``: the same, one layer (or window of layers) at a time,
  with a summary of which layers carry each dependency.

Modules: ``matrix`` (pure math), ``runner`` (forwards; the prefix cache it reuses is in ``anchorlens.hooks``),
``result`` / ``layers`` (result objects), ``plots``, ``validation``; the masking hook is ``anchorlens.hooks.key_suppression``.
"""

from anchorlens.suppression.layers import LayerSuppression, suppression_by_layer
from anchorlens.suppression.result import SuppressionMatrix
from anchorlens.suppression.runner import SuppressionFallbackWarning
from anchorlens.suppression.suppress import suppression_matrix
from anchorlens.suppression.validation import SuppressionInputError

__all__ = [
    "LayerSuppression",
    "SuppressionFallbackWarning",
    "SuppressionInputError",
    "SuppressionMatrix",
    "suppression_by_layer",
    "suppression_matrix",
]
