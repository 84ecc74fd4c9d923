"""KV caches: the one place where anchorlens builds, cuts and copies a model's keys and values.

A forward with ``return_type="logits_and_cache"`` hands back the Hugging Face cache: per layer, keys and values
``[batch, kv_head, pos, d_head]``. Every method that reuses work goes through the steps here:

- **prefix** (``forward_with_cache``): a forward that keeps its cache. ``keep="full"`` keeps every position of
  every layer, so the cache can be cut to any prefix later; ``keep="window"`` lets the model build its own cache,
  where a sliding-window layer keeps only its last ``window - 1`` positions (enough to decode on, not to cut).
- **crop** (``prefix``, ``crop``): the first ``length`` positions, as a fresh copy or in place. An intervention
  at position ``t`` leaves every state before ``t`` as the baseline had it (causal mask), so the intervened
  runs start at ``t`` on the baseline's prefix (suppression, the mediation sweep, the taxonomy labeller).
- **repeat rows** (``prefix``, ``repeat_rows``, ``keep_rows``): one row copied over a batch, or some rows
  kept (the local sampler's rollouts; the mediation sweep's pairs).
- **windows** (``sliding_windows``): which layers attend through a sliding window, and how far.

Why ``keep="full"`` is exact on sliding-window models (OLMo-3, Gemma 2/3, gpt-oss, Mistral, Qwen3 with
``use_sliding_window``): the window is not a property of the cache but of the attention mask. The decoder builds
one mask per layer type (``transformers.masking_utils.create_sliding_window_causal_mask`` for the layers that
``config.layer_types`` marks ``"sliding_attention"``) from absolute query and key positions: the query offset and
the key length come from the cache (``Cache.get_mask_sizes``), which for a full-length ``DynamicLayer`` are the
true positions ``0 .. past + new``. So a sliding layer still sees only its window; its cache merely also holds
the keys before the window, which the mask hides. Memory is linear in the trace length (the same as the
full-attention layers already need). ``tests/test_suppression_architectures.py`` checks it against the
Hugging Face model on windows shorter than the trace.

What cannot be cut: caches that hold a running state instead of per-position keys (linear attention, state-space
layers, hybrid caches). ``reusable`` says False for those, and the caller falls back to recomputing.
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Int
from torch import Tensor

from anchorlens.errors import CachedDecodingError
from anchorlens.versions import version_report

KEEP_CHOICES = ("full", "window")


def _cache_types():
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer  # lazy: light import

    return DynamicCache, DynamicLayer, DynamicSlidingWindowLayer


def _hf_config(model):
    original = getattr(model, "original_model", None)
    return getattr(original, "config", None)


# Layer types whose cache is per-position keys and values and whose window (if any) lives in the mask alone.
FULL_LENGTH_LAYER_TYPES = ("full_attention", "sliding_attention")


def full_length_cache(model):
    """An empty cache that will keep every position of every layer (a plain ``DynamicLayer`` each), or None
    where the model has layers of another type (``config.layer_types``: linear attention, state-space layers,
    chunked attention, layers that share another layer's cache): that model builds its own cache.
    """
    from transformers.cache_utils import get_layer_types_and_kwargs

    DynamicCache, _, _ = _cache_types()
    config = _hf_config(model)
    if config is not None:
        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        if any(kind not in FULL_LENGTH_LAYER_TYPES for kind in layer_types):
            return None
    return DynamicCache()  # no config: every layer a DynamicLayer, created as the forward fills it


def forward_with_cache(model, tokens: Int[Tensor, "batch pos"], keep: Literal["full", "window"] = "full",
                       past_key_values=None, **kwargs):
    """``(logits, cache)`` of one forward over ``tokens``, continuing ``past_key_values`` when given.

    ``keep="full"``: a fresh cache keeps all positions of every layer (``full_length_cache``), so ``prefix`` and
    ``crop`` can cut it; ``keep="window"``: the model's own cache, sliding-window layers trimmed to their window
    (less memory for decoding; it cannot be cut back). With ``past_key_values`` the given cache grows in place.

    >>> logits, cache = forward_with_cache(model, tokens)              # doctest: +SKIP
    >>> reusable(cache, tokens.shape[1])                               # doctest: +SKIP
    True
    """
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if past_key_values is None and keep == "full":
        past_key_values = full_length_cache(model)
    if past_key_values is not None:
        kwargs["past_key_values"] = past_key_values
    return model(tokens, return_type="logits_and_cache", **kwargs)


def reusable(cache, n_tokens: int) -> bool:
    """Whether ``cache`` can be cut to a prefix: a plain ``DynamicCache`` whose layers all hold every position.

    False for caches with sliding-window layers (they keep only their window: build the cache with
    ``forward_with_cache(keep="full")``) and for other cache types (e.g. linear attention's running state).
    A full-length cache that holds another number of positions than the forward ran was never filled correctly
    (transformers 5.24 with TransformerLens 4.3 leaves it empty): that raises, since every KV-cached path
    through this model is then wrong, not just this one.
    """
    DynamicCache, DynamicLayer, _ = _cache_types()
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


def prefix(cache, length: int, rows: int | Tensor):
    """A fresh cache with the first ``length`` positions of ``cache``: batch row 0 repeated ``rows`` times
    (an int: every run continues the same baseline), or the batch rows ``rows`` (an index tensor: each run
    continues its own baseline row, as the mediation sweep's pairs do).

    The baseline cache is left untouched: ``DynamicCache`` grows in place during a forward, so each
    intervened batch gets its own copy (``torch.cat`` inside ``DynamicLayer.update`` materialises the
    expanded views). ``cache`` must be ``reusable``.

    >>> logits, cache = forward_with_cache(model, tokens)                               # doctest: +SKIP
    >>> model(tokens[:, 10:].expand(4, -1), past_key_values=prefix(cache, 10, 4))     # doctest: +SKIP
    """
    DynamicCache, _, _ = _cache_types()
    if length <= 0:
        raise ValueError("a prefix cache needs at least one position; run the full sequence instead")

    def take(states: Tensor) -> Tensor:
        if isinstance(rows, int):
            return states[:1, :, :length].expand(rows, -1, -1, -1)
        return states[rows, :, :length]

    return DynamicCache([(take(layer.keys), take(layer.values)) for layer in cache.layers])


def crop(cache, length: int) -> None:
    """Cut ``cache`` back to its first ``length`` positions, in place (a ``reusable`` cache: full-length layers).

    ``Cache.crop`` takes the number of positions to remove (negative) in transformers 4.4x-5.x; this takes the
    length to keep.
    """
    extra = cache.get_seq_length() - length
    if extra < 0:
        raise ValueError(f"cannot crop a cache of {cache.get_seq_length()} positions to {length}")
    if extra > 0:
        cache.crop(-extra)


def repeat_rows(cache, rows: int):
    """A private copy of a one-row cache with that row repeated ``rows`` times (later forwards grow the copy,
    not ``cache``). Works on sliding-window caches too (``keep="window"``)."""
    import copy

    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    return cache


def keep_rows(cache, index: Int[Tensor, "kept"]) -> None:
    """Keep only the batch rows ``index`` of ``cache``, in place (finished rollouts leave the batch)."""
    cache.batch_select_indices(index)


def sliding_windows(model) -> list[int | None]:
    """Per layer, the sliding window (in positions, the query's own included) of a windowed layer, None for
    a layer that attends to the whole past; read from the Hugging Face config (``layer_types`` and
    ``sliding_window``, or ``use_sliding_window`` / ``max_window_layers`` for Qwen2-style configs).

    >>> sliding_windows(random_model("qwen2"))            # doctest: +SKIP
    [None, None]
    """
    from transformers.cache_utils import get_layer_types_and_kwargs

    config = _hf_config(model)
    if config is None:
        return [None] * model.cfg.n_layers
    config = config.get_text_config(decoder=True)
    layer_types, per_layer = get_layer_types_and_kwargs(config)
    return [kwargs.get("sliding_window") if kind == "sliding_attention" else None
            for kind, kwargs in zip(layer_types, per_layer)]


__all__ = [
    "FULL_LENGTH_LAYER_TYPES",
    "KEEP_CHOICES",
    "crop",
    "forward_with_cache",
    "full_length_cache",
    "keep_rows",
    "prefix",
    "repeat_rows",
    "reusable",
    "sliding_windows",
]
