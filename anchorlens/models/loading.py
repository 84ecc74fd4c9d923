"""Loading models as TransformerLens ``TransformerBridge`` objects: the embedded default or any Hugging Face model
(``load_model``), random models of every supported family (``random_model``), and a plain transformers backbone
(``load_backbone``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError

from anchorlens.errors import AnchorlensError, InputError, ModelLoadError
from anchorlens.models.checks import _check, check_device, check_dtype, verify_float16_range
from anchorlens.models.gguf import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_model_dir

def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    check_attention_edits: bool = True,
    check_cached_decoding: bool = True,
    check_fused_attention: bool = True,
    **boot_kwargs,
):
    """Load a model as a TransformerLens ``TransformerBridge``.

    Args:
        name: ``"smollm2-135m-instruct"`` (embedded, offline), a local model folder, or any Hugging Face
            model name (fetched by transformers; e.g. ``"deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"``).
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
        dtype: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16``, or their names. float16 is
            refused (``UnsupportedDtypeError``) for a model whose activations on a short text come within 16x of
            float16's largest value (Gemma's, for one): use bfloat16 there.
        check_attention_edits: refuse a model whose attention edits do not change its output.
        check_cached_decoding: refuse a model whose KV-cached decoding differs from a full recomputation.
        check_fused_attention: check once that fused (SDPA) attention gives the eager bridge's logits; on a
            mismatch fused attention is refused for this model, with a ``FusedAttentionFallbackWarning``.
        **boot_kwargs: passed to ``TransformerBridge.boot_transformers`` (e.g. ``device_map="auto"``
            for models that span several GPUs; then leave ``device`` unset).

    >>> model = load_model()                     # doctest: +SKIP
    >>> model.cfg.n_layers, model.cfg.n_heads    # doctest: +SKIP
    (30, 9)
    """
    from transformer_lens.model_bridge import TransformerBridge

    dtype = check_dtype(dtype)
    check_device(device)
    if device is None and "device_map" not in boot_kwargs:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    embedded = name in EMBEDDED_MODELS
    source = str(embedded_model_dir(name)) if embedded else name
    if not embedded:
        from anchorlens.inputs import check_model_source

        try:  # a local folder without a model: said before transformers reads it
            check_model_source(str(name), "model")
        except InputError as error:
            raise ModelLoadError(str(error)) from None
    try:
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=dtype, **boot_kwargs)
    except (OSError, ValueError, SafetensorError) as error:  # SafetensorError: a weights file that is not one
        if embedded or isinstance(error, AnchorlensError):
            raise  # the embedded model's own folder failing is a bug, not bad input
        raise _load_error(name, error) from error
    bridge.eval()
    bridge.anchorlens_name = name
    if dtype == torch.float16:
        verify_float16_range(bridge)
    _check(bridge, check_attention_edits, check_cached_decoding, check_fused_attention)
    return bridge


def _load_error(name: str, error: Exception) -> ModelLoadError:
    """What a failed boot of ``name`` (a local folder or a Hugging Face name) means, in one line with a way out."""
    from importlib.metadata import version

    transformers_version, transformer_lens_version = version("transformers"), version("transformer-lens")

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    local = Path(name).expanduser().is_dir()
    model_type = re.search(r"model type `([^`]*)` but Transformers does not recognize", str(error))
    if model_type:
        return ModelLoadError(f"cannot load model {name!r}: transformers {transformers_version} does not know its "
                              f"model type {model_type.group(1)!r} (config.json): check config.json's model_type, "
                              "or install a transformers that supports it")
    if first.startswith(("Unsupported architecture", "Could not determine supported architecture")):
        return ModelLoadError(f"cannot load model {name!r}: TransformerLens {transformer_lens_version} has no "
                              f"adapter for its architecture{_architectures(name)}; use a supported architecture "
                              "(docs/architectures.md)")
    if local:
        return ModelLoadError(f"cannot load the model folder {name!r} ({first}): pass a folder that save_pretrained "
                              f"wrote, a Hugging Face model name, or the embedded {DEFAULT_MODEL!r}")
    return ModelLoadError(f"cannot load model {name!r}: it is not embedded, not a local folder, and transformers "
                          f"could not fetch it ({first}); pass the embedded model {DEFAULT_MODEL!r}, a local folder "
                          "with a Hugging Face model, or a Hugging Face model name that this machine can download")


def _architectures(name: str) -> str:
    """`` (Name, ...)``: the architectures a local folder's config.json names, or nothing."""
    try:
        names = json.loads((Path(name).expanduser() / "config.json").read_text()).get("architectures")
        return f" ({', '.join(names)})" if names else ""
    except (OSError, ValueError, AttributeError, TypeError):
        return ""


def random_model(
    architecture: str = "llama",
    n_layers: int | None = None,
    d_model: int | None = None,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
    d_mlp: int | None = None,
    n_ctx: int = 2048,
    tokenizer=None,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    check_attention_edits: bool = True,
    check_cached_decoding: bool = True,
    *,
    size: str = "small",
    head_dim: int | None = None,
    sliding_window: int | None = None,
    n_experts: int | None = None,
    n_active_experts: int | None = None,
    config_overrides: dict | None = None,
    edit_weights=None,
    check_fused: bool = True,
):
    """A randomly initialised model of any family in ``anchorlens.random_models.FAMILIES``, as a bridge.

    Families: llama, qwen2, mistral, qwen3, qwen3_moe, olmo2, olmo3, gemma2, gemma3, gpt_oss, phi3,
    deepseek_v3, each with its own attention features on (QK norms, sliding-window layers, sinks, softcapping,
    joint QKV, latent attention). ``size="small"`` (default: 2 layers, width 64, 4 heads, 16-token windows) or
    ``"real"`` (a released model's sizes, ``random_models.REAL_SIZES``); the other sizes override it. GQA when
    ``n_kv_heads < n_heads``. The tokenizer defaults to the embedded SmolLM2 tokenizer, so texts tokenize as they
    would for the real model. Use it for fast tests, model organisms, and timing real-size configurations on a
    GPU (e.g. ``random_model("qwen3", size="real", dtype=torch.bfloat16, device="cuda")``).
    ``config_overrides``: raw Hugging Face config fields; ``edit_weights``: a function called with the Hugging
    Face model before it is booted (plant weights, sharpen attention, keep an untouched copy for a test).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from anchorlens.random_models import random_config

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config, model_class = random_config(
        architecture, tokenizer, size=size, n_ctx=n_ctx, overrides=config_overrides, n_layers=n_layers,
        d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, d_mlp=d_mlp, head_dim=head_dim,
        sliding_window=sliding_window, n_experts=n_experts, n_active_experts=n_active_experts,
    )
    torch.manual_seed(seed)
    hf_model = model_class(config).to(dtype=dtype).eval()
    if device is not None:
        hf_model = hf_model.to(device)
    if edit_weights is not None:
        with torch.no_grad():
            edit_weights(hf_model)
    bridge = TransformerBridge.boot_transformers(
        f"random-{architecture}", hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    bridge.anchorlens_name = (
        f"random-{architecture}-{config.num_hidden_layers}x{config.num_attention_heads}x{config.hidden_size}-seed{seed}"
    )
    _check(bridge, check_attention_edits, check_cached_decoding, check_fused)
    return bridge


def load_backbone(folder, n_layers: int, device: str = "cpu"):
    """``(tokenizer, model)``: the plain transformers model in ``folder`` without its head (no bridge, float32,
    eval mode), cut after its first ``n_layers`` layers. For features read from hidden states (the taxonomy)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    if n_layers > len(model.layers):
        raise InputError(
            f"the feature model has {len(model.layers)} layers; layers must be below that, got {n_layers - 1}"
        )
    model.layers = model.layers[:n_layers]
    model.config.num_hidden_layers = n_layers
    return tokenizer, model.to(device).eval()
