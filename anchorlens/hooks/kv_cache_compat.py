"""Compatibility shim: hand the KV cache to TransformerLens's attention bridges under the name they read.

transformers 5.24 renamed the attention modules' cache argument from ``past_key_values`` to ``cache``
(``LlamaDecoderLayer.forward`` calls ``self.self_attn(..., cache=cache)``). TransformerLens 4.3's attention
bridge (``AttentionBridge._update_kv_cache``) reads only ``past_key_values`` or ``layer_past``, so with 5.24 the
cache is never filled: every decoding step attends to itself alone, and every KV-cached path through a bridge
(sampling, ``generate``, prefix reuse) is silently wrong. A forward pre-hook on each attention bridge moves
``cache`` back to ``past_key_values``; on transformers < 5.24 no ``cache`` keyword arrives and it does nothing.

The shim is installed on the TransformerLens releases known to need it (``AFFECTED_TRANSFORMER_LENS``).
``ANCHORLENS_KV_CACHE_SHIM=0`` disables it (to see the bug), ``=1`` forces it on any release. Whatever this
decides, ``anchorlens.models.verify_cached_decoding`` checks the result when a model is loaded.
"""

from __future__ import annotations

import os
from importlib.metadata import version

from packaging.specifiers import SpecifierSet
from packaging.version import Version

SHIM_ENV = "ANCHORLENS_KV_CACHE_SHIM"
# Every TransformerLens release up to 4.3.x reads only past_key_values / layer_past.
AFFECTED_TRANSFORMER_LENS = "<4.4"
_MARK = "_anchorlens_kv_cache_shim"


def shim_wanted() -> bool:
    """Whether to install the shim: the environment variable if set, else the TransformerLens version."""
    setting = os.environ.get(SHIM_ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    return Version(version("transformer-lens")) in SpecifierSet(AFFECTED_TRANSFORMER_LENS)


def _cache_to_past_key_values(module, args, kwargs):
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None


def install_kv_cache_shim(model) -> int:
    """Install the rename hook on every attention bridge of ``model`` (once); returns how many carry it.

    Does nothing (returns 0) where ``shim_wanted()`` is False.
    """
    if not shim_wanted():
        return 0
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    count = 0
    for module in model.modules():
        if isinstance(module, AttentionBridge):
            if not hasattr(module, _MARK):
                handle = module.register_forward_pre_hook(_cache_to_past_key_values, with_kwargs=True)
                setattr(module, _MARK, handle)
            count += 1
    return count


def remove_kv_cache_shim(model) -> None:
    """Take the shim off again (tests use it to show what it fixes)."""
    for module in model.modules():
        handle = getattr(module, _MARK, None)
        if handle is not None:
            handle.remove()
            delattr(module, _MARK)
