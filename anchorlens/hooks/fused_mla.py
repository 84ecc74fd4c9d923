"""Fused (SDPA) attention for DeepSeek's multi-head latent attention (``MLAAttentionBridge``: DeepSeek-V2/V3, R1).

TransformerLens 4.3's ``MLAAttentionBridge.forward`` rebuilds each layer's per-head queries, keys and values
from their compressed latents and then computes ``softmax(Q K^T * scale) V`` with an explicit
``[batch, head, query, key]`` pattern. ``fused_mla_forward`` follows it step by step (the same Hugging Face
submodules, so the same ``LinearBridge`` hooks; ``hook_q_latent``, ``hook_kv_latent``, ``hook_rot_q``,
``hook_rot_k``, ``hook_q``, ``hook_k``, ``hook_v`` and ``hook_z`` fire at the same points; the same KV-cache
update) and replaces only the pattern with one ``scaled_dot_product_attention`` call, under the same
contract as ``fused_attention.fused_forward``: ``hide_keys`` masks and ``observe_queries_keys`` observers
from the layer's state, pattern hooks refused.

Two things differ from the plain RoPE attention of ``fused_forward``:

- queries and keys are ``[nope | rope]`` (``qk_nope_head_dim + qk_rope_head_dim`` wide) and values
  ``v_head_dim`` wide. SDPA accepts that only in its quadratic math kernel (checked on torch 2.13's CPU
  kernels), so the narrower side is zero-padded to the wider width and the output cut back: zero columns
  change no score and no output, and the memory stays linear in the length.
- the softmax scale is the Hugging Face module's ``scaling`` (``qk_head_dim ** -0.5`` times yarn's
  ``mscale ** 2`` under long-context rope scaling), as the bridge reads it.

Every head has its own key (no grouped-query sharing): the observer gets keys ``[batch, head, key, qk_head_dim]``.
Registered with ``fused_attention`` (``OTHER_FORWARDS``) when ``anchorlens.hooks`` is imported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from anchorlens.errors import AnchorlensError, UnsupportedArchitectureError
from anchorlens.hooks import fused_attention as fused  # attribute access: tests may patch its block sizes


def is_mla(attn) -> bool:
    """Whether ``attn`` is TransformerLens's own ``MLAAttentionBridge`` (not a subclass with another forward)."""
    from transformer_lens.model_bridge.generalized_components.mla_attention import MLAAttentionBridge

    return isinstance(attn, MLAAttentionBridge) and type(attn).forward is MLAAttentionBridge.forward


def mla_layer_reasons(layer: int, attn) -> list[str]:
    """Why ``fused_mla_forward`` cannot reproduce this MLA layer (empty: it can)."""
    reasons = []
    if getattr(attn, "compatibility_mode", False):
        reasons.append(f"layer {layer}: compatibility mode (enable_compatibility_mode) is on")
    hf = attn.original_component
    if getattr(hf, "layer_idx", None) is None or getattr(attn, "_layer_idx", None) is None:
        reasons.append(f"layer {layer}: no layer index for the KV cache")
    for attr in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_a_proj_with_mqa", "kv_b_proj"):
        if getattr(hf, attr, None) is None:
            reasons.append(f"layer {layer}: the MLA module has no {attr}")
    for attr in ("attn_logit_softcapping", "sinks", "sliding_window"):
        if getattr(hf, attr, None) is not None:
            reasons.append(f"layer {layer}: {attr}")
    return reasons


def _rotate(self, q_rot: Tensor, k_rot: Tensor, position_embeddings) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """RoPE on the rope parts as ``MLAAttentionBridge.forward`` applies it: complex ``freqs_cis`` (V2),
    interleaved pairs (V3's ``rope_interleave``) or halves. Returns ``(q_rot, k_rot, cos, sin)``."""
    from transformer_lens.model_bridge.generalized_components.mla_attention import (
        _apply_rotary_complex,
        _apply_rotary_pos_emb,
        _apply_rotary_pos_emb_interleave,
    )

    if position_embeddings is None:
        raise UnsupportedArchitectureError(
            f"{self.name}: no position_embeddings reached the MLA attention; run it with attention='eager'"
        )
    position_embeddings = self._apply_position_embedding_hooks(position_embeddings)
    if isinstance(position_embeddings, Tensor) and position_embeddings.is_complex():
        q_rot, k_rot = _apply_rotary_complex(q_rot, k_rot, position_embeddings)
        return q_rot, k_rot, None, None
    cos, sin = position_embeddings
    hf_config = getattr(self.original_component, "config", None)
    if getattr(hf_config, "rope_interleave", False):
        q_rot, k_rot = _apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin)
    else:
        q_rot, k_rot = _apply_rotary_pos_emb(q_rot, k_rot, cos, sin)
    return q_rot, k_rot, cos, sin


def _pad_last(x: Tensor, width: int) -> Tensor:
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


def fused_mla_forward(self, *args, **kwargs):
    """``MLAAttentionBridge.forward`` with SDPA in place of the explicit pattern (see the module docstring)."""
    hidden_states, position_embeddings, attention_mask = fused.forward_inputs(self, args, kwargs)
    hf_attn = self.original_component
    state = vars(self).get(fused._STATE, {})
    nope, rope, v_dim = hf_attn.qk_nope_head_dim, hf_attn.qk_rope_head_dim, hf_attn.v_head_dim
    qk_dim = nope + rope

    hidden_states = self.hook_in(hidden_states)
    batch, seq = hidden_states.shape[:2]
    # Queries: direct, or compressed (q_a_proj -> q_a_layernorm -> q_b_proj), per head [nope | rope].
    if getattr(hf_attn, "q_lora_rank", None) is None:
        q_states = hf_attn.q_proj(hidden_states)
    else:
        q_latent = self.hook_q_latent(hf_attn.q_a_layernorm(hf_attn.q_a_proj(hidden_states)))
        q_states = hf_attn.q_b_proj(q_latent)
    q_states = q_states.view(batch, seq, -1, qk_dim).transpose(1, 2)
    q_pass, q_rot = torch.split(q_states, [nope, rope], dim=-1)
    # Keys and values: a shared latent (decompressed per head by kv_b_proj) and one shared rope key.
    kv_latent, k_rot = torch.split(hf_attn.kv_a_proj_with_mqa(hidden_states), [hf_attn.kv_lora_rank, rope], dim=-1)
    kv_latent = self.hook_kv_latent(hf_attn.kv_a_layernorm(kv_latent))
    k_pass = hf_attn.kv_b_proj(kv_latent).view(batch, seq, -1, nope + v_dim).transpose(1, 2)
    k_pass, value_states = torch.split(k_pass, [nope, v_dim], dim=-1)
    k_rot = k_rot.view(batch, 1, seq, rope)

    q_rot, k_rot, cos, sin = _rotate(self, q_rot, k_rot, position_embeddings)
    q_rot = self.hook_rot_q(q_rot)
    k_rot = self.hook_rot_k(k_rot)
    query_states = self.hook_q(torch.cat((q_pass, q_rot), dim=-1))
    key_states = self.hook_k(torch.cat((k_pass, k_rot.expand(*k_pass.shape[:-1], -1)), dim=-1))
    value_states = self.hook_v(value_states)

    # The bridge's cache update: full per-head keys and values (not the latents), cos/sin as cache kwargs.
    past_key_values = kwargs.pop("past_key_values", None)
    cache_position = kwargs.pop("cache_position", None)
    if past_key_values is not None:
        cache_kwargs: dict = {"cache_position": cache_position}
        if cos is not None:
            cache_kwargs["cos"], cache_kwargs["sin"] = cos, sin
        key_states, value_states = past_key_values.update(key_states, value_states, hf_attn.layer_idx, cache_kwargs)

    n_queries, n_keys = query_states.shape[-2], key_states.shape[-2]
    hidden_keys = state.get("hidden_keys")
    hidden = None
    if hidden_keys is not None:
        if hidden_keys.n_rows != batch:
            raise AnchorlensError(
                f"hide_keys got {hidden_keys.n_rows} key ranges for a batch of {batch} rows: pass one per row"
            )
        hidden = hidden_keys(n_queries, n_keys, query_states.device)
    allowed, blind = fused._layer_mask(attention_mask, n_queries, n_keys, hidden, query_states.device)
    if blind is not None:
        query_states = query_states.masked_fill(blind, 0.0)
    scaling = getattr(hf_attn, "scaling", None)
    if scaling is None:
        scaling = getattr(hf_attn, "softmax_scale", None)
    if scaling is None:
        scaling = qk_dim**-0.5
    observer = state.get("observer")
    if observer is not None:
        observer(layer=self._layer_idx, queries=query_states, keys=key_states, scale=scaling, allowed=allowed)

    # SDPA's fused kernels need one head width for q, k and v: zero-pad the narrower side (exact).
    width = max(qk_dim, v_dim)
    query_states, key_states = _pad_last(query_states, width), _pad_last(key_states, width)
    value_states = _pad_last(value_states, width)
    sdpa_kwargs = {"is_causal": n_queries > 1} if allowed is None else {}
    block = fused.QUERY_BLOCK if query_states.device.type == "cpu" else fused.QUERY_BLOCK_GPU
    if hidden is not None and n_queries >= 2 * block:
        attn_output = fused._causal_blocks(query_states, key_states, value_states, allowed, scaling, sdpa_kwargs, block)
    else:
        attn_output = F.scaled_dot_product_attention(
            query_states, key_states, value_states, attn_mask=allowed, scale=scaling, **sdpa_kwargs
        )
    attn_output = attn_output[..., :v_dim].transpose(1, 2).reshape(batch, seq, -1)
    attn_output = self.hook_out(hf_attn.o_proj(attn_output))  # hook_z is o.hook_in
    return attn_output, None


fused.OTHER_FORWARDS.append((is_mla, fused_mla_forward, mla_layer_reasons))
