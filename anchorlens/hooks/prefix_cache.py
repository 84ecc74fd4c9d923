"""Reusing a baseline's keys and values for the positions an intervention cannot change.

An intervention at position ``t`` (suppressing a sentence that starts at ``t``, patching a cell at ``t``)
leaves every state before ``t`` as the baseline had it (causal mask). A Hugging Face ``DynamicCache`` from
the baseline forward (``return_type="logits_and_cache"``) holds those states as per-layer keys and values
``[batch, kv_head, pos, d_head]``; a copy truncated to the shared prefix, with the batch rows each run
needs, lets the intervened runs start at ``t``. Used by suppression and by the mediation sweep.
"""

from __future__ import annotations

from torch import Tensor

from anchorlens.errors import CachedDecodingError
from anchorlens.versions import version_report


def reusable(cache, n_tokens: int) -> bool:
    """Whether ``cache`` can be truncated to a prefix: a plain ``DynamicCache`` of full-length layers.

    Sliding-window layers keep only their window, and other cache types store other state (e.g. linear
    attention): False, and the caller falls back to the naive method with a ``SuppressionFallbackWarning``.
    A plain ``DynamicCache`` that holds another number of positions than the forward ran was never filled
    correctly (transformers 5.24 with TransformerLens 4.3 leaves it empty): that raises, since every
    KV-cached path through this model is then wrong, not just this one.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer  # lazy: keeps `import anchorlens` light

    if type(cache) is not DynamicCache or not cache.layers:
        return False
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return False
    lengths = sorted({layer.get_seq_length() for layer in cache.layers})
    if lengths != [n_tokens]:
        raise CachedDecodingError(
            f"after a forward over {n_tokens} tokens the model's KV cache holds {lengths} positions per layer: "
            f"the cache is not filled through this TransformerBridge, so cached decoding is wrong. "
            f"{version_report()}. Install the tested versions (bash scripts/setup.sh), or use method='naive'."
        )
    return True


def prefix_cache(cache, length: int, rows: int | Tensor):
    """A fresh cache with the first ``length`` positions of ``cache``: batch row 0 repeated ``rows`` times
    (an int: every run continues the same baseline), or the batch rows ``rows`` (an index tensor: each run
    continues its own baseline row, as the mediation sweep's pairs do).

    The baseline cache is left untouched: ``DynamicCache`` grows in place during a forward, so each
    intervened batch gets its own copy (``torch.cat`` inside ``DynamicLayer.update`` materialises the
    expanded views).

    >>> logits, cache = model(tokens, return_type="logits_and_cache")        # doctest: +SKIP
    >>> model(tokens[:, 10:].expand(4, -1), past_key_values=prefix_cache(cache, 10, 4))  # doctest: +SKIP
    """
    from transformers.cache_utils import DynamicCache

    if length <= 0:
        raise ValueError("a prefix cache needs at least one position; run the full sequence instead")

    def take(states: Tensor) -> Tensor:
        if isinstance(rows, int):
            return states[:1, :, :length].expand(rows, -1, -1, -1)
        return states[rows, :, :length]

    return DynamicCache([(take(layer.keys), take(layer.values)) for layer in cache.layers])
