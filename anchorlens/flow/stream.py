"""Sentence-level information flow in bounded memory: no ``[tokens, tokens]`` array of any layer, ever.

``information_flow`` keeps ``[layers, tokens, tokens]`` contributions (6.9 GB at 7.6k tokens on SmolLM2) and the
eager pattern of each layer. ``SentenceFlow`` needs much less: the contributions reduced to sentences, and the
token influence of one position. Both are computed here from each layer's queries, keys, values and residual
states, ``block_tokens`` target rows at a time (L2: dot products, as in ``flow_math``):

- the sentence matrix sums each block's rows into ``[sentence, sentence]`` at once;
- the token influence of position ``p`` (``routes.token_influence``) is a backward pass over layers of a
  ``[tokens]`` vector ``w``: ``w <- (w * mlp_total) * resid_attn + (w * mlp_total) @ tril(A_l)``; the product
  with ``A_l`` needs only ``A_l``'s rows, one block at a time. It runs from the top layer down, while the
  forward produces layers bottom up: the forward first keeps the residual entering every
  ``checkpoint_every``-th layer, then reruns each group of layers from its checkpoint (top group first) and
  processes that group's layers in reverse. Memory: ``n_layers / checkpoint_every`` residuals plus
  ``checkpoint_every`` layers of queries/keys/values, all ``O(tokens)``, plus one block's
  ``heads x block_tokens x tokens`` floats.

The forwards run with fused attention (``anchorlens.hooks.fused_attention``); the pattern is recomputed
block by block from the rotated queries and keys (``fused_attention.attention_rows``, the eager bridge's
arithmetic: each layer's sliding window, attention sinks and logit softcapping included). A norm after
attention (OLMo-2/3, Gemma 2/3) is held at its clean scale per target position and an attention output bias
(gpt-oss) counts in the whole with no part, both as ``information_flow`` does (docs/methods.md 3.1). Same
numbers as ``information_flow`` + ``flow_sentences`` to float rounding (tested to 1e-4 relative on every
family it accepts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import UnsupportedArchitectureError
from anchorlens.hooks.flow_capture import POST_NORM_HOOKS, has_post_attention_norm, layer_tensors, output_weights
from anchorlens.hooks.fused_attention import attention_rows, fused_attention, model_layer_window, observe_queries_keys
from anchorlens.hooks.skip_blocks import skipped_blocks
from anchorlens.flow.information_flow import refuse_undecomposable
from anchorlens.flow.contributions import EPS, _residual_proximity, mlp_contributions
from anchorlens.progress import progress_bar

DEFAULT_BLOCK_TOKENS = 512
STATE_HOOKS = {"resid_pre": "hook_resid_pre", "v": "attn.hook_v", "resid_mid": "hook_resid_mid",
               "mlp_out": "hook_mlp_out", "resid_post": "hook_resid_post"}


class _Stop(Exception):
    """Raised after the last layer a pass needs: the rest of the forward (and the unembedding) is skipped."""


@dataclass
class LayerState:
    """What one layer's contribution rows are computed from (all ``O(tokens)``).

    ``q``: rotated queries ``[head, pos, d_head]``; ``k``, ``v``: ``[kv_head, pos, d_head]``; ``y``: each head's
    output matrix applied to ``resid_mid``, ``W_O^h resid_mid_i`` ``[head, pos, d_head]`` (so that
    ``resid_mid_i . (v_j W_O^h) = y^h_i . v_j``); ``value_sq[h, j] = |v_j W_O^h|^2``; ``whole_sq = |resid_mid|^2``;
    ``resid_prox``: the residual's unnormalised proximity (float64); ``mlp``, ``resid_mlp``: the MLP split.
    """

    q: Float[Tensor, "head pos d_head"]
    k: Float[Tensor, "kv_head pos d_head"]
    v: Float[Tensor, "kv_head pos d_head"]
    y: Float[Tensor, "head pos d_head"]
    value_sq: Float[Tensor, "head pos"]
    whole_sq: Float[Tensor, " pos"]
    resid_prox: Float[Tensor, " pos"]
    mlp: Float[Tensor, " pos"]
    resid_mlp: Float[Tensor, " pos"]
    scale: float
    dtype: torch.dtype
    distance: str = "l2"
    resid_mid: Float[Tensor, "pos d_model"] | None = None  # L1 only: it needs every coordinate
    W_O: Float[Tensor, "head d_head d_model"] | None = None  # L1, and L2 with a norm after attention
    window: int | None = None  # the layer's sliding window (query i sees keys i - window < j <= i)
    features: dict | None = None  # sinks, softcap (``fused_attention.scoring_features``)
    out_scale: Float[Tensor, "pos d_model"] | None = None  # a norm after attention, held at its clean scale


def window_allowed(lo: int, hi: int, window: int | None, device) -> Float[Tensor, "1 1 rows hi"]:
    """Which keys ``0..hi-1`` queries ``lo..hi-1`` attend to: causal, and within ``window`` (HF's sliding window:
    ``i - window < j <= i``) where the layer has one."""
    query = torch.arange(lo, hi, device=device)[:, None]
    key = torch.arange(hi, device=device)[None, :]
    allowed = key <= query
    if window is not None:
        allowed &= key > query - window
    return allowed[None, None]


def state_pattern(state: "LayerState", lo: int, hi: int) -> Float[Tensor, "head rows hi"]:
    """Rows ``lo..hi-1`` of the layer's attention pattern over keys ``0..hi-1``, windows, sinks and softcap
    included (``fused_attention.attention_rows``: the one definition)."""
    allowed = window_allowed(lo, hi, state.window, state.q.device)
    return attention_rows(state.q[None, :, lo:hi], state.k[None], state.scale, hi, allowed, **(state.features or {}))[0].float()


def layer_state(
    tensors: dict, queries: Tensor, keys: Tensor, scale: float, W_O: Float[Tensor, "head d_head d_model"], distance: str = "l2",
    window: int | None = None, features: dict | None = None,
) -> LayerState:
    """A ``LayerState`` from one layer's hooked tensors (batch row 0) and its rotated queries/keys.

    ``tensors["out_scale"]`` (a norm after attention, ``hooks.flow_capture.frozen_norm_scale``): each part
    ``a v W_O`` of target ``i`` is multiplied by ``out_scale_i``, as in ``information_flow``; then
    ``y = W_O (resid_mid * out_scale)`` and ``value_sq`` depends on the target too (``_scaled_value_sq``)."""
    dtype = queries.dtype
    t = {k: v.float() for k, v in tensors.items()}
    W_O = W_O.float()
    n_heads, n_kv = W_O.shape[0], keys.shape[1]
    v = rearrange(t["v"], "pos kv d -> kv pos d")
    v_heads = v.repeat_interleave(n_heads // n_kv, dim=0)  # [head, pos, d_head]: query head h reads kv head h // g
    gram = torch.matmul(W_O, W_O.transpose(1, 2))  # [head, d_head, d_head]: |v W_O|^2 = v G v
    value_sq = (torch.matmul(v_heads, gram) * v_heads).sum(-1)
    del v_heads
    mlp, resid_mlp = mlp_contributions(t["resid_mid"], t["mlp_out"], t["resid_post"], distance)
    l1 = distance == "l1"
    out_scale = t.get("out_scale")
    scaled_mid = t["resid_mid"] if out_scale is None else t["resid_mid"] * out_scale
    return LayerState(
        q=queries[0], k=keys[0], v=v,
        y=torch.matmul(scaled_mid[None], W_O.transpose(1, 2)),  # [head, pos, d_head]
        value_sq=value_sq,
        whole_sq=(t["resid_mid"] * t["resid_mid"]).sum(-1),
        resid_prox=_residual_proximity(t["resid_mid"], t["resid_pre"], p=1 if l1 else 2),
        mlp=mlp, resid_mlp=resid_mlp, scale=scale, dtype=dtype, distance=distance,
        resid_mid=t["resid_mid"] if l1 else None, W_O=W_O if l1 or out_scale is not None else None,
        window=window, features=features or None, out_scale=out_scale,
    )


def _grouped(x: Tensor, n_kv: int) -> Tensor:
    """``[head, rows, d]`` -> ``[kv_head, group * rows, d]``: each kv head's query heads side by side."""
    return rearrange(x, "(kv g) r d -> kv (g r) d", kv=n_kv)


def contribution_rows(
    state: LayerState, lo: int, hi: int, fused: bool = False
) -> tuple[Float[Tensor, "rows source"], Float[Tensor, " rows"]]:
    """Normalised contributions of sources ``0..hi-1`` to targets ``lo..hi-1`` summed over heads, and of the
    residual: the rows ``lo:hi`` of ``InformationFlow.attention[:, :hi]`` and ``residual_attention``."""
    n_heads, n_pos = state.q.shape[0], state.q.shape[1]
    pattern = state_pattern(state, lo, hi)  # [head, rows, hi]
    if state.distance == "l1":
        proximity = _l1_proximity(state, pattern, lo, hi, fused)
    else:
        proximity = _l2_proximity(state, pattern, lo, hi)
    del pattern
    # the normaliser runs over every source of the row, the ones after this block too (EPS each per head)
    total = proximity.sum(dim=(0, 2), dtype=torch.float64) + EPS * n_heads * (n_pos - hi) + state.resid_prox[lo:hi]
    rows = proximity.sum(0) / total.float()[:, None]
    return rows, (state.resid_prox[lo:hi] / total).float()


def _l2_proximity(state: LayerState, pattern: Tensor, lo: int, hi: int) -> Float[Tensor, "head rows source"]:
    """L2 proximity from dot products, as ``flow_math``: ``|y| - |y - a v| = n / (|y| + |y - a v|)`` with
    ``n = a (2 y.v - a |v|^2)``; masked (future) sources have ``a = 0`` and get ``EPS``."""
    n_heads, n_kv = state.q.shape[0], state.k.shape[0]
    dots = torch.matmul(_grouped(state.y[:, lo:hi], n_kv), state.v[:, :hi].transpose(1, 2))  # [kv, g * rows, hi]
    dots = rearrange(dots, "kv (g r) s -> (kv g) r s", g=n_heads // n_kv)
    value_sq = state.value_sq[:, None, :hi] if state.out_scale is None else _scaled_value_sq(state, lo, hi)
    gain = dots.mul_(2).sub_(pattern * value_sq).mul_(pattern)
    whole_sq = state.whole_sq[None, lo:hi, None]
    distance = (whole_sq - gain).clamp_(min=0).sqrt_().add_(whole_sq.sqrt())
    return gain.div_(distance.clamp_(min=1e-30)).clamp_(min=EPS)


def _scaled_value_sq(state: LayerState, lo: int, hi: int) -> Float[Tensor, "head rows source"]:
    """``|out_scale_i * (v_j W_O^h)|^2`` for targets ``lo..hi-1`` and sources ``0..hi-1``, one head at a time
    (``[source, d_model]`` alive, as the L1 blocks hold)."""
    n_heads, n_kv = state.q.shape[0], state.k.shape[0]
    scale_sq = state.out_scale[lo:hi] ** 2
    out = torch.empty(n_heads, hi - lo, hi, device=scale_sq.device)
    for head in range(n_heads):
        values = torch.matmul(state.v[head // (n_heads // n_kv), :hi], state.W_O[head])  # [source, d_model]
        out[head] = torch.matmul(scale_sq, (values * values).T)
    return out


def _l1_proximity(state: LayerState, pattern: Tensor, lo: int, hi: int, fused: bool) -> Float[Tensor, "head rows source"]:
    """L1 proximity coordinate by coordinate (``flow_math``'s blocks: ``[rows, source, head, d_model]`` within
    ``BLOCK_BYTES``, or the fused kernel); masked (future) sources get ``EPS``."""
    from anchorlens.flow.contributions import BLOCK_BYTES, FUSED_ROWS, _fused_l1, l1_proximity_block

    n_heads, n_kv = state.q.shape[0], state.k.shape[0]
    v_heads = state.v[:, :hi].repeat_interleave(n_heads // n_kv, dim=0)  # [head, hi, d_head]
    values = rearrange(torch.matmul(v_heads, state.W_O), "head source d_model -> source head d_model")
    weights = rearrange(pattern, "head rows source -> rows source head")
    d_model = values.shape[-1]
    step = FUSED_ROWS if fused else max(1, BLOCK_BYTES // (hi * n_heads * d_model * 4))
    out = torch.empty(hi - lo, hi, n_heads, device=pattern.device)
    for a in range(0, hi - lo, step):
        b = min(a + step, hi - lo)
        whole = state.resid_mid[lo + a: lo + b]
        scale = None if state.out_scale is None else state.out_scale[lo + a: lo + b]
        block = (_fused_l1()(whole, weights[a:b], values, scale) if fused
                 else l1_proximity_block(whole, weights[a:b], values, scale))
        out[a:b] = block
    causal = torch.arange(hi, device=out.device)[None, :] <= torch.arange(lo, hi, device=out.device)[:, None]
    out = torch.where(causal[:, :, None], out.clamp_(min=EPS), EPS)
    return rearrange(out, "rows source head -> head rows source")


def check_state_decomposition(layer: int, tensors: dict, state: LayerState, W_O: Tensor, tolerance: float = 1e-3, rows: int = 16) -> None:
    """``resid_pre + out_scale * (sum_h pattern_h @ (v W_O)_h + b_O) == resid_mid`` on the last ``rows`` positions
    (see ``flow.check_decomposition``: an architecture that breaks it breaks it everywhere). The output bias
    ``b_O`` (``tensors["attn_bias"]``) counts in the whole and has no part, as in ``information_flow``."""
    n_pos, n_kv = state.q.shape[1], state.k.shape[0]
    lo = max(0, n_pos - rows)
    pattern = state_pattern(state, lo, n_pos)
    v_heads = state.v.repeat_interleave(state.q.shape[0] // n_kv, dim=0)
    z = torch.matmul(pattern, v_heads)  # [head, rows, d_head]
    update = torch.einsum("hrd,hdm->rm", z, W_O.float())
    if tensors.get("attn_bias") is not None:
        update = update + tensors["attn_bias"].float()
    if state.out_scale is not None:
        update = update * state.out_scale[lo:]
    rebuilt = tensors["resid_pre"][lo:].float() + update
    refuse_undecomposable(layer, rebuilt, tensors["resid_mid"][lo:].float(), tolerance)


def check_window_mask(layer: int, allowed: Tensor, window: int | None, rows: int = 16) -> None:
    """The mask a layer attended with must be the causal (windowed) one the pattern is recomputed with, on its
    last ``rows`` queries (padding or hidden keys would change every row): else a clear refusal."""
    n_queries, n_keys = allowed.shape[-2], allowed.shape[-1]
    lo = max(0, n_keys - rows)
    expected = window_allowed(lo, n_keys, window, allowed.device)[0, 0]
    if n_queries != n_keys or not bool((allowed[..., lo:, :] == expected).all()):
        raise UnsupportedArchitectureError(
            f"layer {layer}: streamed information flow takes one unpadded sequence with causal (sliding-window) "
            "attention and no hidden keys: use information_flow on this input")


def _capture(
    model, tokens: Tensor, first: int, stop: int, checkpoint: Tensor | None, W_O: Tensor, distance: str
) -> dict[int, LayerState]:
    """Run layers ``first..stop-1`` (from ``checkpoint``, the residual entering ``first``, or from the tokens)
    and return their states."""
    stash: dict[int, dict] = {}
    states: dict[int, LayerState] = {}
    wanted = {**STATE_HOOKS, **(POST_NORM_HOOKS if has_post_attention_norm(model) else {})}

    def keep(tensor, hook, layer, key):
        stash.setdefault(layer, {})[key] = tensor[0].detach()

    def observe(layer, queries, keys, scale, allowed, **features):
        if first <= layer < stop:
            window = model_layer_window(model, layer)
            if allowed is not None:
                check_window_mask(layer, allowed, window)
            stash.setdefault(layer, {}).update(queries=queries.detach(), keys=keys.detach(), scale=scale,
                                               window=window, features=features)

    def finish(tensor, hook, layer):
        t = stash.pop(layer)
        t["resid_post"] = tensor[0].detach()
        missing = sorted({"queries", *wanted} - set(t))
        if missing:
            raise UnsupportedArchitectureError(f"layer {layer}: the hooks {missing} did not fire, so the attention cannot be decomposed")
        queries, keys, scale = t.pop("queries"), t.pop("keys"), t.pop("scale")
        window, features = t.pop("window"), t.pop("features")
        t = layer_tensors(model, layer, t)  # MLA's head-major values, a post-norm's clean scale, the output bias
        states[layer] = layer_state(t, queries, keys, scale, W_O[layer], distance, window, features)
        check_state_decomposition(layer, t, states[layer], W_O[layer])
        if layer == stop - 1:
            raise _Stop

    hooks = []
    for layer in range(first, stop):
        for key, name in wanted.items():
            if key != "resid_post":
                hooks.append((f"blocks.{layer}.{name}", lambda t, hook, layer=layer, key=key: keep(t, hook, layer, key)))
        hooks.append((f"blocks.{layer}.hook_resid_post", lambda t, hook, layer=layer: finish(t, hook, layer)))
    with fused_attention(model), observe_queries_keys(model, observe, layers=range(first, stop)), model.hooks(fwd_hooks=hooks):
        try:
            if checkpoint is None:
                model(tokens, return_type=None)
            else:
                with skipped_blocks(model, first):
                    model(checkpoint[None], start_at_layer=first, return_type=None)
        except _Stop:
            pass
    return states


def _checkpoints(model, tokens: Tensor, layers: list[int]) -> dict[int, Tensor]:
    """The residual entering each of ``layers`` (one forward, stopped after the last of them)."""
    saved: dict[int, Tensor] = {}
    last = max(layers)

    def keep(tensor, hook, layer):
        saved[layer] = tensor[0].detach().clone()
        if layer == last:
            raise _Stop

    hooks = [(f"blocks.{layer}.hook_resid_pre", lambda t, hook, layer=layer: keep(t, hook, layer)) for layer in layers]
    with fused_attention(model), model.hooks(fwd_hooks=hooks):
        try:
            model(tokens, return_type=None)
        except _Stop:
            pass
    return saved


def default_checkpoint_every(model) -> int:
    """Layers per rerun group: minimises ``n_layers / g`` residuals + ``g`` layer states (both per token)."""
    cfg = model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    state = 2 * cfg.n_heads * cfg.d_head + 2 * n_kv * cfg.d_head  # q, y, k, v floats per token
    return max(1, min(cfg.n_layers, round(math.sqrt(cfg.n_layers * cfg.d_model / state))))


@torch.inference_mode()
def streamed_sentence_flow(
    model,
    tokens: Tensor,
    members: Float[Tensor, "sentence token"],
    position: int,
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
    checkpoint_every: int | None = None,
    distance: str = "l2",
    fused: bool | None = None,
    progress: bool = True,
) -> tuple[Float[Tensor, "target source"], Float[Tensor, " pos"]]:
    """``(matrix, token_influence)`` of ``flow_sentences.sentence_flow`` without any ``[tokens, tokens]``
    array: ``matrix`` as ``sentence_flow_matrix`` and the token influence of ``position`` (non-negative) as
    ``InformationFlow.token_influence``. ``members``: the ``[sentence, token]`` span indicator. ``fused``
    (L1): the compiled kernel of ``information_flow`` (default: from ``FUSED_FROM_TOKENS`` tokens on)."""
    from anchorlens.flow.information_flow import FUSED_FROM_TOKENS

    if distance not in ("l1", "l2"):
        raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be positive, got {block_tokens}")
    tokens = tokens.reshape(1, -1)
    n_layers, n_pos = model.cfg.n_layers, tokens.shape[1]
    group = checkpoint_every or default_checkpoint_every(model)
    starts = list(range(0, n_layers, group))
    W_O = output_weights(model)  # [layer, head, d_value, d_model]; MLA's too
    use_fused = distance == "l1" and (n_pos >= FUSED_FROM_TOKENS if fused is None else bool(fused))
    checkpoints = _checkpoints(model, tokens, starts[1:]) if len(starts) > 1 else {}
    members = members.to(tokens.device)
    n_sentences = members.shape[0]
    # each token's sentence (n_sentences: none): sources are summed per sentence with index_add, O(rows x
    # tokens) per block instead of the O(rows x tokens x sentences) of a product with the indicator matrix
    column = torch.where(members.any(0), members.argmax(0), n_sentences)
    disjoint = bool((members.sum(0) <= 1).all())
    summed = torch.zeros(n_sentences, n_sentences, device=tokens.device)
    weight = torch.zeros(n_pos, dtype=torch.float64, device=tokens.device)
    weight[position] = 1.0
    bar = progress_bar(total=n_layers, desc="sentence flow", progress=progress, leave=False)
    for first in reversed(starts):
        stop = min(first + group, n_layers)
        states = _capture(model, tokens, first, stop, checkpoints.pop(first, None), W_O, distance)
        for layer in reversed(range(first, stop)):
            state = states.pop(layer)
            at_mid = weight * (state.mlp + state.resid_mlp).double()  # both lead back to a(l, i)
            weight = at_mid * 0
            for lo in range(0, n_pos, block_tokens):
                hi = min(lo + block_tokens, n_pos)
                rows, resid = contribution_rows(state, lo, hi, use_fused)
                rows = torch.tril(rows, diagonal=lo)  # source j <= target i (future ones carry only EPS)
                if disjoint:
                    by_source = torch.zeros(hi - lo, n_sentences + 1, device=rows.device).index_add_(1, column[:hi], rows)
                    summed += members[:, lo:hi] @ by_source[:, :n_sentences]
                else:
                    summed += members[:, lo:hi] @ rows @ members[:, :hi].T
                weight[lo:hi] += at_mid[lo:hi] * resid.double()
                weight[:hi] += at_mid[lo:hi] @ rows.double()
            del state
            bar.update(1)
    bar.close()
    matrix = summed / n_layers / members.sum(1, keepdim=True)
    return matrix.cpu(), weight.float().cpu()
