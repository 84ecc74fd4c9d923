"""Fused attention (``torch.nn.functional.scaled_dot_product_attention``) for forwards that read no pattern.

TransformerLens 4.3's ``PositionEmbeddingsAttentionBridge.forward`` (Llama, Qwen2, Mistral, ...) computes
attention itself, as ``softmax(Q K^T) V`` with ``hook_attn_scores`` and ``hook_pattern`` in between,
whatever the Hugging Face config's attention implementation says: every forward materialises a
``[batch, head, query, key]`` pattern per layer. Inside ``fused_attention(model)`` each attention bridge
runs ``fused_forward`` instead: the same projections through the same ``LinearBridge`` objects (so
``hook_q`` / ``hook_k`` / ``hook_v`` / ``hook_z`` / ``hook_rot_q`` / ``hook_rot_k`` fire and edits there
apply), the same RoPE, the same KV cache update, the same output projection, and one
``scaled_dot_product_attention`` call in place of the matmul / mask / softmax / matmul (flash attention
on a GPU when no mask is needed). Families: Llama, Qwen2, Mistral, Qwen3(-MoE), OLMo-2/3, Gemma 2/3,
gpt-oss (``PositionEmbeddingsAttentionBridge``) and Phi-3/4 (``JointQKVPositionEmbeddingsAttentionBridge``):
QK norms, per-layer sliding windows and RoPE bases, query pre-attention scalars and sinks stay in SDPA;
Gemma 2's logit softcapping runs blocked eager (``layer_attention_modes`` says which layer runs how).
A check at load (``verify_fused_attention``) compares the fused logits with the eager bridge's once per
model and refuses fused attention on a mismatch. Nothing is copied: the bridge's bound ``forward`` is replaced on the
instance and deleted again on exit, and the Hugging Face config's attention implementation is set to
``"sdpa"`` for the block so that the decoder builds no ``[query, key]`` float mask when none is needed.

Two things ride on the fused forward (set per layer, for one block, by context managers here):

- ``hide_keys``: attention suppression as a boolean mask on the suppressed key columns (the same result
  as setting their scores to the minimum, as ``key_suppression_hooks`` do in eager mode);
- ``observe_queries_keys``: a callback that gets each layer's rotated queries and keys (blocked
  ``sentence_attention`` recomputes the pattern from them a block of queries at a time).

``hook_attn_scores`` and ``hook_pattern`` do not exist in a fused forward: a hook on them inside the
block raises ``PatternUnavailableError`` instead of being silently skipped.
"""

from __future__ import annotations

import types
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor

from anchorlens.errors import AnchorlensError, InputError, UnsupportedArchitectureError
from anchorlens.hooks.key_suppression import head_selection, key_suppression_mask

ATTENTION_CHOICES = ("auto", "sdpa", "eager")
_STATE = "_anchorlens_fused"  # per-bridge dict: hidden-key mask builder, query/key observer
_PATTERN_HOOKS = ("hook_attn_scores", "hook_pattern")


PatternUnavailableError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


class FusedAttentionFallbackWarning(UserWarning):
    """``attention="auto"`` runs eager attention: the model is unsupported or a pattern hook is active."""


# ---------------------------------------------------------------------------------------------- support


#: Fused forwards of other attention bridges: ``(accepts(attn), forward, reasons(layer, attn))``; hooks/fused_mla.py
#: adds DeepSeek's MLAAttentionBridge (``anchorlens.hooks`` imports it, so it is here before any use).
OTHER_FORWARDS: list[tuple[Callable, Callable, Callable]] = []


def _other_forward(attn):
    return next((entry for entry in OTHER_FORWARDS if entry[0](attn)), None)


def attention_bridges(model) -> list:
    """The attention bridge of every block, in layer order."""
    return [block.attn for block in model.blocks]


def unsupported_reasons(model) -> list[str]:
    """Why ``fused_attention`` cannot reproduce this model's attention (empty: it can).

    Supported: RoPE attention through ``PositionEmbeddingsAttentionBridge`` (Llama, Qwen2, Mistral, Qwen3,
    Qwen3-MoE, OLMo-2/3, Gemma 2/3, gpt-oss: grouped-query layouts, q/k/v biases, partial rotary, QK norms
    before or after the head reshape, per-layer sliding windows and RoPE bases, attention sinks, logit
    softcapping, a query pre-attention scalar) and ``JointQKVPositionEmbeddingsAttentionBridge`` (Phi-3/4).
    Refused: every feature the bridge handles that the fused forward does not re-implement (gated or split
    inputs, key multipliers, clipped QKV, QK norms after RoPE, llama-4 query scaling, other bridges), and a
    model whose fused logits failed the check at load (``verify_fused_attention``).
    """
    reasons: list[str] = list(_layer_reasons(model))
    cfg = model.cfg
    for flag in ("use_split_qkv_input", "use_attn_in", "use_attn_result", "gated_q_proj",
                 "rotary_interleaved_cos_sin", "rotary_adjacent_pairs", "qk_norm_after_rope"):
        if getattr(cfg, flag, False):
            reasons.append(f"cfg.{flag} is set")
    verdict = vars(model).get(_VERDICT)
    if verdict:
        reasons.append(verdict)
    return reasons


_VERDICT = "_anchorlens_fused_verdict"  # set by verify_fused_attention: None / "" (passed) / why it failed


def _is_joint(attn) -> bool:
    from transformer_lens.model_bridge.generalized_components.joint_qkv_position_embeddings_attention import (
        JointQKVPositionEmbeddingsAttentionBridge,
    )

    return isinstance(attn, JointQKVPositionEmbeddingsAttentionBridge)


def _layer_reasons(model) -> tuple[str, ...]:
    """The per-layer part of ``unsupported_reasons``, computed once per model (its modules do not change)."""
    from transformer_lens.model_bridge.generalized_components.joint_qkv_position_embeddings_attention import (
        JointQKVPositionEmbeddingsAttentionBridge as Joint,
    )
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    cached = vars(model).get("_anchorlens_fused_layer_reasons")
    if cached is not None:
        return cached
    reasons: list[str] = []
    for layer, block in enumerate(model.blocks):
        if "attn" not in block._modules and not hasattr(block, "attn"):  # e.g. Qwen3-Next's linear-attention layers
            reasons.append(f"layer {layer}: no softmax attention ({type(block).__name__} without attn)")
            continue
        attn = block.attn
        kind = type(attn)
        if (other := _other_forward(attn)) is not None:  # e.g. MLA (hooks/fused_mla.py)
            reasons.extend(other[2](layer, attn))
            continue
        hf = attn.original_component
        if _is_joint(attn):
            if kind._reconstruct_attention is not Joint._reconstruct_attention or kind.forward is not Joint.forward:
                reasons.append(f"layer {layer}: {kind.__name__} changes the joint-QKV attention")
        elif not isinstance(attn, PositionEmbeddingsAttentionBridge) or kind.forward is not PositionEmbeddingsAttentionBridge.forward:
            reasons.append(f"layer {layer}: attention bridge {kind.__name__} (only PositionEmbeddingsAttentionBridge "
                           "and JointQKVPositionEmbeddingsAttentionBridge)")
            continue
        else:
            if kind._pre_output_projection is not PositionEmbeddingsAttentionBridge._pre_output_projection:
                reasons.append(f"layer {layer}: {kind.__name__} transforms the output before o_proj")
            if "gate" in attn.submodules:
                reasons.append(f"layer {layer}: gate")
            if "q_norm" not in attn.submodules and "k_norm" in attn.submodules:
                reasons.append(f"layer {layer}: k_norm without q_norm")
        if getattr(attn, "compatibility_mode", False):
            reasons.append(f"layer {layer}: compatibility mode (enable_compatibility_mode) is on")
        if getattr(hf, "key_multiplier", None) is not None:
            reasons.append(f"layer {layer}: key_multiplier")
        hf_config = getattr(hf, "config", None)
        if getattr(hf_config, "clip_qkv", None) is not None:
            reasons.append(f"layer {layer}: clip_qkv")
        rope = getattr(hf_config, "rope_parameters", None)
        if isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None:
            reasons.append(f"layer {layer}: llama-4 query scaling")
        if getattr(attn, "_layer_idx", None) is None:
            reasons.append(f"layer {layer}: no layer index for the KV cache")
        if len(reasons) > 8:
            break
    object.__setattr__(model, "_anchorlens_fused_layer_reasons", tuple(reasons))
    return tuple(reasons)


FUSED_CHECK_TOKENS = 48  # longer than random_model's small sliding windows
FUSED_CHECK_TEXT = (
    "The capital of France is Paris. The capital of Germany is Berlin. Two plus two is four, and six times "
    "seven is forty-two, so the answer is 42."
)
FUSED_CHECK_TOLERANCE = 1e-4  # float32: max |difference| / max |logit|
# Half precision rounds the two paths differently, and the differences compound over layers (SmolLM2 in bfloat16:
# 0.02-0.05 of the logits' standard deviation on average); hiding one key from every layer moves it by 0.3.
FUSED_CHECK_TOLERANCE_HALF = 0.1  # mean |difference| / std of the logits


def _check_tokens(model, n_tokens: int) -> Tensor:
    """A short natural text (synthetic ids where the tokenizer cannot give one inside the vocabulary and context)."""
    n_tokens = min(n_tokens, int(getattr(model.cfg, "n_ctx", None) or n_tokens))
    vocab = int(getattr(model.cfg, "d_vocab", None) or 500)
    try:
        tokens = model.to_tokens(FUSED_CHECK_TEXT)[:, :n_tokens]
        if int(tokens.max()) < vocab and tokens.shape[1] > 1:
            return tokens
    except Exception:  # noqa: BLE001 - no tokenizer, or one that cannot encode this: fall back to plain ids
        pass
    bos = model.tokenizer.bos_token_id if getattr(model, "tokenizer", None) is not None else None
    ids = [bos if bos is not None else 0] + [(11 + 7 * i) % min(vocab, 500) for i in range(n_tokens - 1)]
    return torch.tensor([ids], device=model.cfg.device)


@torch.inference_mode()
def verify_fused_attention(model, n_tokens: int = FUSED_CHECK_TOKENS) -> str:
    """Check once that the fused forward gives the model's own (eager) logits; refuse fused attention if not.

    Runs a short text through the eager bridge and through ``fused_attention``; on a mismatch the verdict
    (stored on the model, read by ``unsupported_reasons``) names the family and the difference, and a
    ``FusedAttentionFallbackWarning`` says so at once: every later ``attention="auto"`` call runs eager (and
    warns), ``attention="sdpa"`` raises. float32: max difference / max logit within 1e-4; half precision:
    mean difference / the logits' standard deviation within 0.1 (rounding alone, not a wrong feature).
    Returns the verdict ("" when fused attention matched, or the reasons it was not tried). Cached on the
    model: the check runs once.
    """
    cached = vars(model).get(_VERDICT)
    if cached is not None:
        return cached
    reasons = unsupported_reasons(model)
    if reasons:
        return "; ".join(reasons[:4])
    tokens = _check_tokens(model, n_tokens)
    eager = model(tokens).float()
    verdict = ""
    try:
        with fused_attention(model, "sdpa"):
            fused = model(tokens).float()
        if next(model.parameters()).dtype == torch.float32:
            error = ((fused - eager).abs().max() / eager.abs().max().clamp_min(1e-12)).item()
            tolerance, measure = FUSED_CHECK_TOLERANCE, "max difference / max logit"
        else:
            error = ((fused - eager).abs().mean() / eager.std().clamp_min(1e-12)).item()
            tolerance, measure = FUSED_CHECK_TOLERANCE_HALF, "mean difference / logit std"
        if not error <= tolerance:
            verdict = (f"the fused forward's logits differ from the eager bridge's on this "
                       f"{type(model.original_model).__name__}: {measure} {error:.2g} (tolerance {tolerance:g})")
    except Exception as error:  # noqa: BLE001 - any failure means fused attention must not be trusted
        verdict = f"the fused forward failed on this {type(model.original_model).__name__}: {type(error).__name__}: {error}"
    object.__setattr__(model, _VERDICT, verdict)
    if verdict:
        warnings.warn(f"{verdict}: anchorlens runs eager attention on this model (report it, with the versions)",
                      FusedAttentionFallbackWarning, stacklevel=2)
    return verdict


def layer_attention_modes(model) -> list[str]:
    """How each layer's attention runs under ``fused_attention``, in words (for support tables and reports).

    ``"sdpa"``; ``"sdpa, sliding window W"`` (blocks of queries over only their window's keys at long
    lengths); ``"sdpa with a sink key"``; ``"blocked eager (softcapping)"``: SDPA cannot softcap, so the
    layer computes the bridge's own softmax a block of queries at a time (exact, memory bounded by one block);
    or ``"eager: <reason>"`` when the model is refused.
    """
    reasons = unsupported_reasons(model)
    if reasons:
        return [f"eager: {reasons[0]}"] * model.cfg.n_layers
    modes = []
    for attn in attention_bridges(model):
        hf = attn.original_component
        features = scoring_features(hf)
        if "softcap" in features:
            mode = "blocked eager (softcapping)"
        else:
            mode = "sdpa with a sink key" if "sinks" in features else "sdpa"
            window = layer_window(hf)
            if window is not None:
                mode += f", sliding window {window}"
        modes.append(mode)
    return modes


def check_supported(model) -> None:
    """Raise ``UnsupportedArchitectureError`` (with the reasons and what to do) if attention cannot run fused."""
    reasons = unsupported_reasons(model)
    if reasons:
        raise UnsupportedArchitectureError(
            "fused (SDPA) attention does not support this model: " + "; ".join(reasons[:8])
            + ". Pass attention='eager' (or 'auto', which falls back with a warning)."
        )


def active_pattern_hooks(model) -> list[str]:
    """Names of ``hook_attn_scores`` / ``hook_pattern`` points that have forward hooks right now."""
    names = []
    for layer, attn in enumerate(attention_bridges(model)):
        for name in _PATTERN_HOOKS:
            point = getattr(attn, name, None)
            if point is not None and point._forward_hooks:
                names.append(f"blocks.{layer}.attn.{name}")
    return names


def is_fused(model) -> bool:
    """Whether ``model``'s attention currently runs fused (inside a ``fused_attention`` block)."""
    return "_anchorlens_attn_impl" in vars(model)


def resolve_attention(model, attention: str) -> str:
    """``"sdpa"`` or ``"eager"`` for a requested ``attention`` (``"auto"``, ``"sdpa"`` or ``"eager"``).

    ``"auto"`` picks SDPA when the model supports it and no hook reads or edits the pattern, and warns
    (``FusedAttentionFallbackWarning``) when it falls back to eager attention; ``"sdpa"`` raises instead.
    """
    if attention not in ATTENTION_CHOICES:
        raise AnchorlensError(f"unknown attention {attention!r}: choose one of {ATTENTION_CHOICES}")
    if attention == "eager":
        return "eager"
    reasons = unsupported_reasons(model)
    hooked = active_pattern_hooks(model)
    if attention == "sdpa":
        check_supported(model)
        _refuse_pattern_hooks(hooked)
        return "sdpa"
    if reasons or hooked:
        why = "; ".join(reasons[:4]) if reasons else f"hooks on {', '.join(hooked[:3])} read the pattern"
        if not getattr(model, "_anchorlens_fused_warned", False) or hooked:
            warnings.warn(f"eager attention instead of SDPA: {why}", FusedAttentionFallbackWarning, stacklevel=3)
            if reasons:
                object.__setattr__(model, "_anchorlens_fused_warned", True)  # once per model for an architecture it cannot change
        return "eager"
    return "sdpa"


def _refuse_pattern_hooks(hooked: list[str]) -> None:
    if hooked:
        raise PatternUnavailableError(
            f"hooks on {', '.join(hooked[:3])} need the attention pattern, which fused (SDPA) attention never "
            "computes: remove them, or run with attention='eager'"
        )


# ---------------------------------------------------------------------------------------------- contexts


@contextmanager
def fused_attention(model, attention: str = "sdpa") -> Iterator:
    """Run every forward inside the block with fused SDPA attention; eager attention is restored afterwards.

    Args:
        model: a TransformerBridge (Llama / Qwen2-style RoPE attention).
        attention: ``"sdpa"`` (refuse an unsupported model), ``"auto"`` (fall back to eager with a
            warning) or ``"eager"`` (do nothing: lets callers pass their own setting through).

    Re-entrant: a fused block inside a fused block changes nothing; ``attention="eager"`` inside a fused
    block runs eager attention until it ends. Hooks on ``hook_q`` / ``hook_k`` / ``hook_v`` /
    ``hook_z`` (e.g. ``ablate_heads``) keep working; hooks on ``hook_attn_scores`` / ``hook_pattern``
    raise ``PatternUnavailableError``.

    >>> with fused_attention(model):                                        # doctest: +SKIP
    ...     logits = model(tokens)
    """
    wanted = resolve_attention(model, attention)
    if (wanted == "sdpa") == is_fused(model):  # already as asked (a block inside a block)
        yield model
        return
    if wanted == "eager":  # an eager analysis inside a fused block: eager for its duration
        saved = _uninstall(model)
        try:
            yield model
        finally:
            _install(model, saved)
        return
    _install(model)
    try:
        yield model
    finally:
        _uninstall(model)


def _install(model, states: list[dict] | None = None) -> None:
    hf_config = model.original_model.config
    object.__setattr__(model, "_anchorlens_attn_impl", hf_config._attn_implementation)
    for k, attn in enumerate(attention_bridges(model)):
        # An instance attribute shadows the class's forward. object.__setattr__: the bridge's own
        # __setattr__ would forward the name to the wrapped Hugging Face module.
        other = _other_forward(attn)
        if other is not None:  # e.g. MLA (hooks/fused_mla.py)
            object.__setattr__(attn, "forward", types.MethodType(other[1], attn))
        elif _is_joint(attn):  # Phi-3/4: the bridge's forward splits QKV; only its attention is replaced
            object.__setattr__(attn, "_reconstruct_attention", types.MethodType(fused_joint_reconstruct, attn))
        else:
            object.__setattr__(attn, "forward", types.MethodType(fused_forward, attn))
        object.__setattr__(attn, _STATE, {} if states is None else states[k])
    hf_config._attn_implementation = "sdpa"  # decoder masks: None (is_causal) or boolean, never [q, k] floats


def _uninstall(model) -> list[dict]:
    """Back to the bridge's own forward; returns each layer's fused state (for ``_install`` to put back)."""
    model.original_model.config._attn_implementation = vars(model).pop("_anchorlens_attn_impl")
    _MASK_CACHE.clear()  # drop the last forward's mask
    states = []
    for attn in attention_bridges(model):
        vars(attn).pop("forward", None)
        vars(attn).pop("_reconstruct_attention", None)
        states.append(vars(attn).pop(_STATE, {}))
    return states


HiddenKeys = Callable[[int, int, torch.device], Bool[Tensor, "batch head_or_1 query key"]]
QueryKeyObserver = Callable[..., None]


@contextmanager
def _layer_state(model, layers: Sequence[int], key: str, value) -> Iterator:
    if not is_fused(model):
        raise AnchorlensError(f"{key} needs fused attention: use it inside `with fused_attention(model):`")
    bridges = attention_bridges(model)
    states = [vars(bridges[layer])[_STATE] for layer in layers]
    if any(key in state for state in states):
        raise AnchorlensError(f"{key} is already set for one of layers {list(layers)}; nested blocks cannot combine")
    try:
        for state in states:
            state[key] = value
        yield model
    finally:
        for state in states:
            state.pop(key, None)


@contextmanager
def hide_keys(
    model, key_ranges: Sequence[tuple[int, int]], layers: Sequence[int], heads: Sequence[int] | None = None
) -> Iterator:
    """Attention suppression under fused attention: batch row ``b`` hides keys ``key_ranges[b]`` from every query.

    The same mask as ``key_suppression_hooks`` (absolute key positions, the "blind query keeps itself"
    exception; see ``key_suppression_mask``), applied as an SDPA boolean mask in ``layers`` / ``heads``.

    >>> with fused_attention(model), hide_keys(model, [(3, 7)], layers=range(30)):   # doctest: +SKIP
    ...     logits = model(tokens)
    """
    ranges = [(int(a), int(b)) for a, b in key_ranges]
    head_list = None if heads is None else [int(h) for h in heads]
    n_heads = model.cfg.n_heads
    cached: dict[tuple, Tensor] = {}  # one mask per (shape, device), shared by all layers of a forward

    def build(n_queries: int, n_keys: int, device: torch.device, window: int | None = None) -> Tensor:
        # window: the layer's sliding window, for the "blind query keeps itself" exception (key_suppression_mask)
        key = (n_queries, n_keys, device, window)
        if key not in cached:
            if len(cached) > 1:  # one mask per layer kind (full, windowed) of a forward
                cached.clear()
            mask = key_suppression_mask(ranges, n_queries, n_keys, device=device, window=window)  # [batch, 1, query, key]
            if head_list is not None:
                mask = mask & head_selection(n_heads, head_list, device)[None, :, None, None]
            cached[key] = mask
        return cached[key]

    build.n_rows = len(ranges)
    with _layer_state(model, [int(layer) for layer in layers], "hidden_keys", build):
        yield model


@contextmanager
def observe_queries_keys(model, observer: QueryKeyObserver, layers: Sequence[int] | None = None) -> Iterator:
    """Call ``observer(layer=, queries=, keys=, scale=, allowed=, **features)`` in each fused layer forward.

    ``features`` (``scoring_features``): ``sinks`` (per-head sink logits, gpt-oss) and ``softcap`` (Gemma 2),
    passed only on layers that have them; an observer that recomputes the pattern must apply them
    (``attention_rows`` does).

    ``queries``: ``[batch, head, query, d_head]`` after RoPE; ``keys``: ``[batch, kv_head, key, d_head]``
    after RoPE and the KV cache update (not repeated to query heads); ``allowed``: the boolean mask
    ``[batch, 1 or head, query, key]`` the layer attends with (sliding windows included), or None for plain
    causal attention (then ``n_queries`` is 1 or ``n_keys``). An exception raised by the observer ends the
    forward pass (``sentence_attention`` uses that to skip the last layer's MLP).
    """
    layer_list = range(model.cfg.n_layers) if layers is None else [int(layer) for layer in layers]
    with _layer_state(model, layer_list, "observer", observer):
        yield model


# ---------------------------------------------------------------------------------------------- the forward


def causal_allowed(n_queries: int, n_keys: int, device) -> Bool[Tensor, "1 1 query key"]:
    """Lower-right causal mask: query ``q`` (absolute position ``n_keys - n_queries + q``) sees keys up to itself."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril_(n_keys - n_queries)[None, None]


def attend_mask(
    attention_mask: Tensor | None, n_queries: int, n_keys: int, hidden: Tensor | None, device: torch.device
) -> Tensor | None:
    """The boolean ``allowed`` mask (True: attend) for SDPA, or None for plain causal attention.

    ``attention_mask``: what the decoder passed (None, or a boolean ``[batch, 1, query, key]`` under the
    ``"sdpa"`` implementation; a float additive one is accepted too). ``hidden``: keys to hide.
    Rows that see no key at all (left-padding queries) are left all False here; ``fused_forward`` makes
    them attend uniformly to every key, as the eager bridge's softmax over all-minimum scores does.
    """
    if attention_mask is None and hidden is None:
        return None
    if attention_mask is None:
        allowed = causal_allowed(n_queries, n_keys, device)
    else:
        mask = attention_mask[..., -n_queries:, :n_keys]
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
        if allowed.ndim < 4:  # a 2D padding mask [batch, key]: add the causal part
            allowed = allowed.reshape(allowed.shape[0], 1, 1, -1) & causal_allowed(n_queries, n_keys, device)
    if hidden is not None:
        allowed = allowed & ~hidden
    return allowed


_MASK_CACHE: list = []  # [(attention_mask, hidden, n_queries, n_keys, device), (allowed, blind)]: one forward's


def _layer_mask(attention_mask, n_queries: int, n_keys: int, hidden, device):
    """``(allowed, blind)`` for one layer; every layer of a forward gets the same tensors, so they are built
    once per forward (the decoder hands each layer the same mask object, ``hide_keys`` the same hidden one)."""
    key = (attention_mask, hidden, n_queries, n_keys, device)
    if _MASK_CACHE and all(a is b if isinstance(a, Tensor) or a is None else a == b for a, b in zip(_MASK_CACHE[0], key)):
        return _MASK_CACHE[1]
    allowed = attend_mask(attention_mask, n_queries, n_keys, hidden, device)
    if allowed is None and n_queries not in (1, n_keys):  # cached prefix: SDPA's is_causal aligns top-left
        allowed = causal_allowed(n_queries, n_keys, device)
    blind = None
    if allowed is not None:
        # Eager: softmax over all-minimum scores = uniform over every key. Same here: a query that sees
        # nothing sees every key, with a zero query (equal scores). Only padding queries, whose outputs
        # nothing reads. Unconditional: checking first would synchronise with the device.
        blind = ~allowed.any(dim=-1, keepdim=True)  # [batch, 1 or head, query, 1]
        allowed = allowed | blind
    _MASK_CACHE[:] = [key, (allowed, blind)]
    return allowed, blind


QUERY_BLOCK = 128  # queries per SDPA call in suppressed forwards on a CPU (see _causal_blocks)
QUERY_BLOCK_GPU = 1024  # larger on a GPU, where each call costs a kernel launch (not measured yet)


def _causal_blocks(queries, keys, values, allowed, scale, sdpa_kwargs, block: int = QUERY_BLOCK,
                   window: int | None = None, lead: int = 0):
    """SDPA a block of ``block`` queries at a time, each over only the keys it can see.

    With a mask, SDPA computes every (query, key) pair, the masked half of a causal square too; a block
    of queries ending at absolute position ``p`` sees no key after ``p``, and on a sliding-window layer
    (``window``: HF's convention, query ``q`` sees keys ``q - window < k <= q``) none before its first
    query's window, so those keys are cut off instead (about a third less attention work in a suppressed
    forward over a cached prefix; on a window layer, work linear in the length). Exact: the cut keys have
    zero weight. ``lead`` keys at the front (the sink key) are kept for every block. The mask is
    lower-right causal with no all-False row (``key_suppression_mask`` keeps a blind query's own key; an
    unpadded sequence's window always holds the query itself).
    """
    n_queries, n_keys = queries.shape[-2], keys.shape[-2] - lead
    offset = n_keys - n_queries
    blocks = []
    for lo in range(0, n_queries, block):
        hi = min(lo + block, n_queries)
        end = lead + offset + hi  # keys up to the block's last query
        start = 0 if window is None else lead + max(0, offset + lo - window + 1)
        k, v, mask = keys[..., start:end, :], values[..., start:end, :], allowed[..., lo:hi, start:end]
        if lead and start > 0:
            k = torch.cat([keys[..., :lead, :], k], dim=-2)
            v = torch.cat([values[..., :lead, :], v], dim=-2)
            mask = torch.cat([allowed[..., lo:hi, :lead], mask], dim=-1)
        blocks.append(torch.nn.functional.scaled_dot_product_attention(
            queries[..., lo:hi, :], k, v, attn_mask=mask, scale=scale, **sdpa_kwargs,
        ))
    return torch.cat(blocks, dim=-2)


def _refuse_active_pattern_hooks(self) -> None:
    for name in _PATTERN_HOOKS:
        point = getattr(self, name, None)
        if point is not None and point._forward_hooks:
            _refuse_pattern_hooks([f"blocks.{self._layer_idx}.attn.{name}"])


def forward_inputs(self, args: tuple, kwargs: dict) -> tuple[Tensor, object, object]:
    """The start every fused forward shares: refuse active pattern hooks, then take ``hidden_states``,
    ``position_embeddings`` and ``attention_mask`` out of the bridge's call (``kwargs`` keeps the rest: the cache)."""
    _refuse_active_pattern_hooks(self)
    if "hidden_states" in kwargs:
        hidden_states = kwargs.pop("hidden_states")
    elif args and isinstance(args[0], Tensor):
        hidden_states = args[0]
    else:
        raise ValueError("Could not find hidden_states in args or kwargs")
    return hidden_states, kwargs.pop("position_embeddings", None), kwargs.pop("attention_mask", None)


def fused_forward(self, *args, **kwargs):
    """``PositionEmbeddingsAttentionBridge.forward`` with SDPA in place of the explicit pattern.

    Follows the bridge's forward step by step for the features ``unsupported_reasons`` admits: QK norms
    before the head reshape (OLMo-2/3: one RMS norm over all heads) or per head after it (Qwen3, Gemma 3),
    RoPE with the per-layer ``position_embeddings`` the decoder hands each layer (Gemma 3's local and global
    bases), the per-layer mask the decoder builds (sliding windows), the query pre-attention scalar (through
    ``hf_attn.scaling``), attention sinks and logit softcapping (see ``_attend``).
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    from transformer_lens.utilities.hf_utils import get_rotary_pct_from_config

    hidden_states, position_embeddings, attention_mask = forward_inputs(self, args, kwargs)
    hf_attn = self.original_component

    hidden_states = self.hook_in(hidden_states)
    input_shape = hidden_states.shape[:-1]
    head_dim = hf_attn.head_dim
    hidden_shape = (*input_shape, -1, head_dim)
    # Through the LinearBridges, so hook_q / hook_k / hook_v fire as in the eager forward.
    query_states, key_states, value_states = self.q(hidden_states), self.k(hidden_states), self.v(hidden_states)
    has_k_norm = "k_norm" in self.submodules
    norm_phase = self._qk_norm_phase if "q_norm" in self.submodules else None
    if norm_phase == "pre_reshape":  # OLMo-2/3: RMS over all heads' queries (keys) at once
        query_states = self.hook_q_normed(self.q_norm(query_states))
        if has_k_norm:
            key_states = self.hook_k_normed(self.k_norm(key_states))
    query_states = query_states.view(hidden_shape).transpose(1, 2)
    key_states = key_states.view(hidden_shape).transpose(1, 2)
    value_states = value_states.view(hidden_shape).transpose(1, 2)
    if norm_phase == "post_reshape":  # Qwen3 / Gemma 3: per head, before RoPE
        if self._qk_norm_per_head:
            query_states = self.hook_q_normed(self.q_norm(query_states.transpose(1, 2)).transpose(1, 2))
            if has_k_norm:
                key_states = self.hook_k_normed(self.k_norm(key_states.transpose(1, 2)).transpose(1, 2))
        else:
            query_states = self.hook_q_normed(self.q_norm(query_states))
            if has_k_norm:
                key_states = self.hook_k_normed(self.k_norm(key_states))

    if position_embeddings is not None:
        cos, sin = self._apply_position_embedding_hooks(position_embeddings)
        rotary_dim = cos.shape[-1]
        if rotary_dim * 2 == head_dim and get_rotary_pct_from_config(self.config) == 1.0:
            cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        elif rotary_dim < head_dim:
            q_rot, q_pass = query_states[..., :rotary_dim], query_states[..., rotary_dim:]
            k_rot, k_pass = key_states[..., :rotary_dim], key_states[..., rotary_dim:]
            q_rot, k_rot = apply_rotary_pos_emb(q_rot, k_rot, cos, sin)
            query_states, key_states = torch.cat([q_rot, q_pass], dim=-1), torch.cat([k_rot, k_pass], dim=-1)
        else:
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
    elif getattr(self.config, "positional_embedding_type", None) == "rotary" and not getattr(self, "rope_optional", False):
        raise UnsupportedArchitectureError(
            f"{self.name}: no position_embeddings reached the attention of a rotary model; run it with attention='eager'"
        )
    if hasattr(self, "hook_rot_q"):
        query_states = self.hook_rot_q(query_states)
    if hasattr(self, "hook_rot_k"):
        key_states = self.hook_rot_k(key_states)

    key_states, value_states = self._update_kv_cache(key_states, value_states, **kwargs)
    scaling = getattr(hf_attn, "scaling", head_dim**-0.5)
    attn_output = _attend(self, query_states, key_states, value_states, attention_mask, scaling)
    attn_output = attn_output.transpose(1, 2).reshape(*input_shape, -1)

    o_weight = getattr(getattr(self.o, "original_component", None), "weight", None)
    if isinstance(o_weight, Tensor) and o_weight.dtype.is_floating_point and attn_output.dtype != o_weight.dtype:
        attn_output = attn_output.to(dtype=o_weight.dtype)
    attn_output = self.hook_out(self.o(attn_output))  # hook_z is o.hook_in
    return attn_output, None


def fused_joint_reconstruct(self, q: Tensor, k: Tensor, v: Tensor, **kwargs):
    """``JointQKVPositionEmbeddingsAttentionBridge._reconstruct_attention`` (Phi-3 / Phi-4) with SDPA.

    The bridge's own forward still splits the joint QKV projection (``hook_q`` / ``hook_k`` / ``hook_v`` fire)
    and applies ``hook_out``; only the attention itself runs fused.
    """
    _refuse_active_pattern_hooks(self)
    n_heads = self.config.n_heads
    n_kv_heads = getattr(self.config, "n_key_value_heads", None) or n_heads
    q, k, v, batch_size, seq_len, head_dim = self._reshape_qkv_to_heads(q, k, v, n_heads, n_kv_heads)
    position_embeddings = kwargs.get("position_embeddings", None)
    if isinstance(position_embeddings, tuple):
        cos, sin = self._apply_position_embedding_hooks(position_embeddings)
        q, k = self._apply_rotary_pos_emb(q, k, cos, sin)
    k, v = self._update_kv_cache(k, v, **kwargs)
    attn_output = _attend(self, q, k, v, kwargs.get("attention_mask"), head_dim**-0.5)
    attn_output = self._reshape_attn_output(attn_output, batch_size, seq_len, n_heads, head_dim)
    return self._apply_output_projection(attn_output), None


def layer_window(hf_attn) -> int | None:
    """The layer's sliding window (HF: query ``q`` sees keys ``q - window < k <= q``), or None.

    The attention module's own ``sliding_window`` (None on full layers) where it has one; else the config's,
    when the config has no per-layer ``layer_types`` (Mistral: every layer slides). Only used to skip keys
    the decoder's window mask hides anyway, so a window missed here costs time, never exactness.
    """
    if hasattr(hf_attn, "sliding_window"):
        return hf_attn.sliding_window
    config = getattr(hf_attn, "config", None)
    if getattr(config, "layer_types", None) is None:
        return getattr(config, "sliding_window", None)
    return None


def model_layer_window(model, layer: int) -> int | None:
    """``layer_window`` of a bridge's layer ``layer`` (None: full causal attention)."""
    return layer_window(model.blocks[layer].attn.original_component)


def scoring_features(hf_attn) -> dict:
    """What the softmax of one layer adds to plain ``Q K^T * scale``: ``sinks`` (a per-head logit that joins the
    denominator, gpt-oss) and ``softcap`` (``cap * tanh(scores / cap)`` before masking, Gemma 2); only those set."""
    features = {}
    sinks = getattr(hf_attn, "sinks", None)
    if isinstance(sinks, Tensor):
        features["sinks"] = sinks
    softcap = getattr(hf_attn, "attn_logit_softcapping", None)
    if softcap is not None:
        features["softcap"] = float(softcap)
    return features


def _attend(self, query_states, key_states, value_states, attention_mask, scaling):
    """Attention output ``[batch, head, query, d_head]`` of one layer, without a ``[head, query, key]`` pattern.

    Plain layers: one SDPA call (flash kernels where no mask is needed). Sliding-window layers: the decoder's
    boolean window mask (HF semantics: query ``q`` sees keys ``q - window < k <= q``), computed by SDPA a
    block of queries at a time over only the keys inside the window. Sinks (gpt-oss): exact through SDPA
    with one extra key whose score is the sink logit and whose value is zero (``_sink_attention``).
    Softcapping (Gemma 2): SDPA cannot apply ``tanh`` to scores, so the layer runs blocked eager
    (``_blocked_eager``): a block of queries at a time, the bridge's own arithmetic.
    """
    state = vars(self).get(_STATE, {})
    features = scoring_features(self.original_component)
    n_queries, n_keys = query_states.shape[-2], key_states.shape[-2]
    window = layer_window(self.original_component)
    hidden_keys = state.get("hidden_keys")
    hidden = None
    if hidden_keys is not None:
        if hidden_keys.n_rows != query_states.shape[0]:
            raise AnchorlensError(
                f"hide_keys got {hidden_keys.n_rows} key ranges for a batch of {query_states.shape[0]} rows: pass one per row"
            )
        hidden = hidden_keys(n_queries, n_keys, query_states.device, window=window)
    allowed, blind = _layer_mask(attention_mask, n_queries, n_keys, hidden, query_states.device)
    if blind is not None:
        query_states = query_states.masked_fill(blind, 0.0)
    observer = state.get("observer")
    if observer is not None:
        observer(layer=self._layer_idx, queries=query_states, keys=key_states, scale=scaling, allowed=allowed, **features)
    if "softcap" in features:
        return _blocked_eager(query_states, key_states, value_states, allowed, scaling, features)
    if "sinks" in features:
        query_states, key_states, value_states, allowed = _with_sink_key(
            query_states, key_states, value_states, allowed, scaling, features["sinks"]
        )
    groups = query_states.shape[1] // key_states.shape[1]
    sdpa_kwargs = {}
    if allowed is None:
        # No mask: the flash / fused kernels apply; grouped-query heads are expanded by the kernel.
        sdpa_kwargs["is_causal"] = query_states.shape[-2] > 1
        sdpa_kwargs["enable_gqa"] = groups > 1
    elif groups > 1 and query_states.device.type == "cpu":
        sdpa_kwargs["enable_gqa"] = True  # the CPU flash kernel takes a mask and grouped heads together
    elif groups > 1:
        # With a mask, the GPU memory-efficient kernel takes no grouped-query layout: repeat K/V (cheap: no
        # [query, key] tensor per head) rather than let SDPA fall back to the quadratic math kernel.
        from transformers.models.llama.modeling_llama import repeat_kv

        key_states, value_states = repeat_kv(key_states, groups), repeat_kv(value_states, groups)
    block = QUERY_BLOCK if query_states.device.type == "cpu" else QUERY_BLOCK_GPU
    lead = 1 if "sinks" in features else 0  # the sink key, first, seen by every query
    if allowed is not None and n_queries >= 2 * block and (hidden is not None or window is not None):
        attn_output = _causal_blocks(query_states, key_states, value_states, allowed, scaling, sdpa_kwargs, block,
                                     window, lead)
    else:
        attn_output = torch.nn.functional.scaled_dot_product_attention(
            query_states, key_states, value_states, attn_mask=allowed, scale=scaling, **sdpa_kwargs
        )
    if "sinks" in features:
        attn_output = attn_output[..., -n_queries:, :-SINK_PAD]  # without the dummy first query and the padding
    return attn_output


SINK_PAD = 8  # extra query/key dimensions for the sink score (a multiple of 8 keeps GPU kernels eligible)


def _with_sink_key(queries, keys, values, allowed, scale: float, sinks: Tensor):
    """Queries, keys, values and mask with gpt-oss's sink as one more key, first: exact sinks through SDPA.

    The sink joins the softmax denominator with logit ``s_h`` (one per query head) and adds nothing to the
    output. Queries get ``s_h / scale`` in an extra dimension and keys a 1 there (0 for real keys), so the
    sink key's score is ``s_h`` for every query and every real score is unchanged; its value is zero. Without
    a mask, a dummy query goes first too, so SDPA's top-left causal alignment gives query ``i`` the sink and
    keys ``0..i`` (``_attend`` drops the dummy's row); with one, the mask gets an all-True first column.
    """
    batch, n_heads, n_queries, d_head = queries.shape
    n_kv = keys.shape[1]
    sink_dim = (sinks.to(torch.float32) / scale).to(queries.dtype).reshape(1, n_heads, 1, 1)
    q_extra = torch.zeros(batch, n_heads, n_queries, SINK_PAD, dtype=queries.dtype, device=queries.device)
    q_extra[..., :1] = sink_dim
    queries = torch.cat([queries, q_extra], dim=-1)
    keys = torch.cat([keys, keys.new_zeros(batch, n_kv, keys.shape[2], SINK_PAD)], dim=-1)
    sink_key = keys.new_zeros(batch, n_kv, 1, d_head + SINK_PAD)
    sink_key[..., d_head] = 1.0
    keys = torch.cat([sink_key, keys], dim=-2)
    # Values padded to the same width: GPU flash kernels take one head size for queries, keys and values.
    values = torch.cat([values, values.new_zeros(batch, n_kv, values.shape[2], SINK_PAD)], dim=-1)
    values = torch.cat([values.new_zeros(batch, n_kv, 1, d_head + SINK_PAD), values], dim=-2)
    if allowed is None:
        if n_queries > 1:  # square causal: a dummy query first keeps SDPA's is_causal exact
            queries = torch.cat([queries.new_zeros(batch, n_heads, 1, queries.shape[-1]), queries], dim=-2)
    else:
        allowed = torch.nn.functional.pad(allowed, (1, 0), value=True)
    return queries, keys, values, allowed


def _blocked_eager(queries, keys, values, allowed, scale: float, features: dict, block: int = QUERY_BLOCK):
    """The eager bridge's attention (scores, softcap, mask, sinks, float32 softmax) a block of queries at a time.

    For what SDPA cannot compute (logit softcapping): exact, at most ``heads x block x keys`` scores at once.
    """
    n_queries, n_keys = queries.shape[-2], keys.shape[-2]
    offset = n_keys - n_queries
    groups = queries.shape[1] // keys.shape[1]
    blocks = []
    for lo in range(0, n_queries, block):
        hi = min(lo + block, n_queries)
        rows_allowed = causal_allowed(hi - lo, offset + hi, queries.device) if allowed is None else allowed[..., lo:hi, :]
        pattern = attention_rows(queries[..., lo:hi, :], keys, scale, offset + hi, rows_allowed[..., :offset + hi],
                                 **features)
        v = values[..., :offset + hi, :]
        v = v.repeat_interleave(groups, dim=1) if groups > 1 else v
        blocks.append(torch.matmul(pattern, v))
    return torch.cat(blocks, dim=-2)


def attention_rows(
    queries: Float[Tensor, "batch head rows d_head"],
    keys: Float[Tensor, "batch kv_head key d_head"],
    scale: float,
    n_keys: int,
    allowed: Bool[Tensor, "batch head_or_1 rows n_keys"],
    sinks: Tensor | None = None,
    softcap: float | None = None,
) -> Float[Tensor, "batch head rows n_keys"]:
    """Softmax attention of some query rows over keys ``[0, n_keys)``, with the eager bridge's arithmetic.

    Scores ``Q K^T * scale`` in the model's dtype (grouped-query aware: no repeated keys), then
    ``softcap * tanh(scores / softcap)`` if set, masked with the dtype's minimum where ``allowed`` is False,
    softmax in float32 (with each head's sink logit as one more column of the denominator, if set), rounded
    to the model's dtype. Pure math: the one definition that blocked sentence attention and blocked eager
    attention share.
    """
    n_kv = keys.shape[1]
    groups = queries.shape[1] // n_kv
    q = rearrange(queries, "b (kv g) r d -> b kv (g r) d", kv=n_kv)
    # In place from here on: the block's scores are the largest tensor, so no second copy of them is made.
    scores = torch.matmul(q, keys[:, :, :n_keys].transpose(-1, -2)).mul_(scale)
    scores = rearrange(scores, "b kv (g r) k -> b (kv g) r k", g=groups)
    if softcap is not None:
        scores.div_(softcap).tanh_().mul_(softcap)
    scores.masked_fill_(~allowed, torch.finfo(scores.dtype).min)
    if sinks is None:
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(queries.dtype)
    # The sink logit joins the denominator: softmax over [scores, sink] without its column, computed in place.
    scores = scores.float()
    sink = sinks.to(queries.dtype).float().reshape(1, -1, 1, 1)
    top = torch.maximum(scores.amax(dim=-1, keepdim=True), sink)
    scores.sub_(top).exp_()
    total = scores.sum(dim=-1, keepdim=True).add_((sink - top).exp_())
    return scores.div_(total).to(queries.dtype)
