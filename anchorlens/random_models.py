"""Randomly initialised Hugging Face models of every supported family, as Hugging Face configs.

One table, ``FAMILIES``: family name -> (config class, model class, config builder). A builder turns the
common sizes (layers, width, heads, ...) into that family's config with its own attention features switched on:
QK norms (Qwen3, OLMo-2/3, Gemma 3), sliding-window layers mixed with full ones (Mistral, OLMo-3, Gemma 2/3,
gpt-oss), attention sinks (gpt-oss), logit softcapping (Gemma 2), a query pre-attention scalar (Gemma),
a joint QKV projection (Phi-3/4), mixtures of experts (Qwen3-MoE, gpt-oss, DeepSeek-V3) and multi-head latent
attention (DeepSeek-V3). Small by default (fast tests build many), with sliding windows shorter than a test
trace (``SMALL_WINDOW`` tokens); ``size="real"`` takes a released model's sizes (``REAL_SIZES``), for GPU
timings. ``anchorlens.models.random_model`` boots the result as a TransformerBridge.
"""

from __future__ import annotations

from typing import Any, Callable

SMALL_WINDOW = 16  # tokens: shorter than every test trace, so window masks matter in tests

# Released models' sizes (``size="real"``), from their config.json files.
REAL_SIZES: dict[str, dict[str, Any]] = {
    "llama": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_mlp=14336),  # Llama-3.1-8B
    "qwen2": dict(n_layers=28, d_model=1536, n_heads=12, n_kv_heads=2, d_mlp=8960),  # R1-Distill-Qwen-1.5B
    "mistral": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_mlp=14336, sliding_window=4096),
    "qwen3": dict(n_layers=36, d_model=4096, n_heads=32, n_kv_heads=8, d_mlp=12288, head_dim=128),  # Qwen3-8B
    "qwen3_moe": dict(n_layers=48, d_model=2048, n_heads=32, n_kv_heads=4, d_mlp=768, head_dim=128,
                      n_experts=128, n_active_experts=8),  # Qwen3-30B-A3B
    "olmo2": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, d_mlp=11008),  # OLMo-2-1124-7B
    "olmo3": dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, d_mlp=11008, sliding_window=4096),  # OLMo-3-7B
    "gemma2": dict(n_layers=26, d_model=2304, n_heads=8, n_kv_heads=4, d_mlp=9216, head_dim=256,
                   sliding_window=4096),  # gemma-2-2b
    "gemma3": dict(n_layers=34, d_model=2560, n_heads=8, n_kv_heads=4, d_mlp=10240, head_dim=256,
                   sliding_window=1024),  # gemma-3-4b (text)
    "gpt_oss": dict(n_layers=24, d_model=2880, n_heads=64, n_kv_heads=8, d_mlp=2880, head_dim=64,
                    sliding_window=128, n_experts=32, n_active_experts=4),  # gpt-oss-20b
    "phi3": dict(n_layers=40, d_model=5120, n_heads=40, n_kv_heads=10, d_mlp=17920),  # Phi-4(-reasoning)
    "deepseek_v3": dict(n_layers=61, d_model=7168, n_heads=128, n_kv_heads=128, d_mlp=18432,
                        n_experts=256, n_active_experts=8),  # DeepSeek-V3 / R1 (671B: a GPU cluster)
}


def _alternating(n_layers: int, every: int = 2) -> list[str]:
    """Layer types with a full-attention layer every ``every`` layers (the last of each group), sliding otherwise."""
    return ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n_layers)]


def _common(s: dict) -> dict:
    return dict(
        vocab_size=s["vocab_size"], hidden_size=s["d_model"], intermediate_size=s["d_mlp"],
        num_hidden_layers=s["n_layers"], num_attention_heads=s["n_heads"], num_key_value_heads=s["n_kv_heads"],
        max_position_embeddings=s["n_ctx"], bos_token_id=s["bos"], eos_token_id=s["eos"], tie_word_embeddings=False,
    )


def _head_dim(s: dict) -> int:
    return s["head_dim"] or s["d_model"] // s["n_heads"]


def _plain(s: dict) -> dict:
    return _common(s)


def _mistral(s: dict) -> dict:
    # Mistral's window applies to every layer (no layer_types).
    return dict(_common(s), sliding_window=s["window"], head_dim=_head_dim(s))


def _qwen3(s: dict) -> dict:
    # Qwen3 ships without sliding windows (use_sliding_window=False); QK norms per head.
    return dict(_common(s), head_dim=_head_dim(s))


def _qwen3_moe(s: dict) -> dict:
    return dict(_qwen3(s), num_experts=s["n_experts"] or 4, num_experts_per_tok=s["n_active_experts"] or 2,
                moe_intermediate_size=s["d_mlp"], decoder_sparse_step=1, mlp_only_layers=[])


def _olmo3(s: dict) -> dict:
    # OLMo-3: three sliding-window layers, then a full one.
    return dict(_common(s), sliding_window=s["window"], layer_types=_alternating(s["n_layers"], 4 if s["n_layers"] >= 4 else 2))


def _gemma(s: dict, softcap: bool) -> dict:
    head_dim = _head_dim(s)
    config = dict(_common(s), head_dim=head_dim, sliding_window=s["window"], layer_types=_alternating(s["n_layers"]),
                  query_pre_attn_scalar=2 * head_dim if s["small"] else 256, hidden_activation="gelu_pytorch_tanh")
    if softcap:
        config.update(attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    return config


def _gemma3(s: dict) -> dict:
    # Local layers rotate with their own RoPE base (10k), global ones with 1M.
    config = _gemma(s, softcap=False)
    config["rope_parameters"] = {
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    return config


def _gpt_oss(s: dict) -> dict:
    return dict(_common(s), head_dim=_head_dim(s), sliding_window=s["window"], layer_types=_alternating(s["n_layers"]),
                num_local_experts=s["n_experts"] or 4, num_experts_per_tok=s["n_active_experts"] or 2)


def _phi3(s: dict) -> dict:
    return dict(_common(s), sliding_window=None, pad_token_id=None)


def _deepseek_v3(s: dict) -> dict:
    if s["small"]:
        latent = dict(q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)
    else:
        latent = dict(q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128)
    # MLA has no grouped-query layout: every query head has its own key and value (n_kv_heads is ignored)
    return dict(_common(s), num_key_value_heads=s["n_heads"], **latent, n_routed_experts=s["n_experts"] or 4, num_experts_per_tok=s["n_active_experts"] or 2,
                moe_intermediate_size=s["d_mlp"] // (1 if s["small"] else 9), first_k_dense_replace=1, n_group=1,
                topk_group=1, n_shared_experts=1, rope_scaling=None)


def _classes(family: str) -> tuple[type, type]:
    import transformers

    names = {
        "llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral", "qwen3": "Qwen3", "qwen3_moe": "Qwen3Moe",
        "olmo2": "Olmo2", "olmo3": "Olmo3", "gemma2": "Gemma2", "gemma3": "Gemma3Text", "gpt_oss": "GptOss",
        "phi3": "Phi3", "deepseek_v3": "DeepseekV3",
    }
    stem = names[family]
    return getattr(transformers, f"{stem}Config"), getattr(transformers, f"{stem.replace('Text', '')}ForCausalLM")


FAMILIES: dict[str, Callable[[dict], dict]] = {
    "llama": _plain, "qwen2": _plain, "mistral": _mistral, "qwen3": _qwen3, "qwen3_moe": _qwen3_moe,
    "olmo2": _plain, "olmo3": _olmo3, "gemma2": lambda s: _gemma(s, softcap=True), "gemma3": _gemma3,
    "gpt_oss": _gpt_oss, "phi3": _phi3, "deepseek_v3": _deepseek_v3,
}
SMALL = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=None, d_mlp=None, head_dim=None, sliding_window=SMALL_WINDOW,
             n_experts=None, n_active_experts=None)


def random_config(
    family: str,
    tokenizer,
    size: str = "small",
    n_ctx: int = 2048,
    overrides: dict | None = None,
    **sizes,
):
    """The Hugging Face config of a random ``family`` model (``config.architectures`` set, eager attention).

    ``sizes``: ``n_layers``, ``d_model``, ``n_heads``, ``n_kv_heads``, ``d_mlp``, ``head_dim``, ``sliding_window``,
    ``n_experts``, ``n_active_experts`` (None: the size's default); ``overrides``: raw config fields, set last.
    """
    from anchorlens.errors import AnchorlensError

    if family not in FAMILIES:
        raise AnchorlensError(f"unknown architecture {family!r}; choose one of {sorted(FAMILIES)}")
    if size not in ("small", "real"):
        raise AnchorlensError(f"size must be 'small' or 'real', got {size!r}")
    unknown = set(sizes) - set(SMALL)
    if unknown:
        raise AnchorlensError(f"random_config got unknown sizes {sorted(unknown)}; known: {sorted(SMALL)}")
    s = dict(SMALL if size == "small" else {**SMALL, **REAL_SIZES[family]})
    s.update({k: v for k, v in sizes.items() if v is not None})
    s["n_kv_heads"] = s["n_kv_heads"] or s["n_heads"]
    s["d_mlp"] = s["d_mlp"] or 4 * s["d_model"]
    if s["d_model"] % s["n_heads"] and not s["head_dim"]:
        raise AnchorlensError(f"d_model ({s['d_model']}) must be divisible by n_heads ({s['n_heads']}), or pass head_dim")
    if s["n_heads"] % s["n_kv_heads"]:
        raise AnchorlensError(f"n_heads ({s['n_heads']}) must be a multiple of n_kv_heads ({s['n_kv_heads']})")
    s.update(small=size == "small", window=s["sliding_window"], n_ctx=n_ctx, vocab_size=len(tokenizer),
             bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)
    config_class, model_class = _classes(family)
    fields = FAMILIES[family](s)
    fields.update(overrides or {})
    config = config_class(**fields)
    config.architectures = [model_class.__name__]
    config._attn_implementation = "eager"
    return config, model_class
