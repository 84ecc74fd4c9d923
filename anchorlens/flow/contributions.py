"""Contributions of information flow routes (Ferrando and Voita 2024; docs/methods.md section 3): pure math.

A layer's attention update at target ``i`` is the sum of parts ``z_ijh = A^h_ij (v_j^h W_O^h)`` (one per
source token ``j`` and head ``h``) plus the residual ``resid_pre_i``; the whole is ``resid_mid_i``. A part's
proximity to the whole is ``max(eps, |whole|_p - |whole - part|_p)``, normalised to sum to 1 over every part
of the same whole: every source and head (future sources too, whose part is 0 and so gets ``eps``, as in the
reference tool facebookresearch/llm-transparency-tool) plus the residual. The MLP has two parts, its output
and ``resid_mid``, of the whole ``resid_post``.

L1 (the reference's default) has no shortcut: ``|y - a v|_1`` needs every coordinate of every (target,
source, head), O(T^2 H d) element operations. They are computed in blocks of target rows so that the
``[target, source, head, d_model]`` tensor never exists whole (memory stays bounded at any length), and only
for sources ``j <= i`` (later ones are exactly ``eps``). L2 factors into dot products,
``|y - a v|^2 = |y|^2 - 2 a y.v + a^2 |v|^2``: one matrix product ``y . v`` per head, then O(T^2 H) scalar work.
L2 weighs large coordinates more than L1 does (a part aligned with the whole's biggest coordinates scores
higher), so the two rank parts alike but not identically.

A norm after attention (OLMo-2/3, Gemma 2/3) multiplies each target's attention output by
``out_scale_i = g / rms_i`` (its gain over the clean root mean square, ``hooks.flow_capture``): the parts are then
``out_scale_i * A^h_ij (v_j^h W_O^h)``, which sum exactly to the normed output (docs/methods.md 3.1).

The reference measures distances with ``torch.nn.functional.pairwise_distance``, which adds 1e-6 to every
coordinate of the difference; here the distance is exact (the definition above).
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import UnsupportedArchitectureError

EPS = 1e-5
DISTANCES = ("l1", "l2")
BLOCK_BYTES = 64 * 2**20  # the largest [block, source, head, d_model] temporary of the L1 computation
FUSED_ROWS = 32  # target rows per fused-kernel call


def head_values_out(
    v: Float[Tensor, "pos kv_head d_head"], W_O: Float[Tensor, "head d_head d_model"]
) -> Float[Tensor, "head pos d_model"]:
    """Each source's value vector mapped through its query head's output matrix: ``v_j^h W_O^h``.

    Grouped-query attention: query head ``h`` reads key/value head ``h // (n_heads / n_kv_heads)`` (the
    ``repeat_kv`` order of Hugging Face Llama / Qwen2).
    """
    n_heads, n_kv = W_O.shape[0], v.shape[1]
    if n_heads % n_kv:
        raise UnsupportedArchitectureError(
            f"{n_heads} query heads cannot share {n_kv} key/value heads evenly: the values handed to information flow "
            "are not laid out [pos, kv_head, d_head]; this attention is not supported by information flow"
        )
    v = v.repeat_interleave(n_heads // n_kv, dim=1)
    return einsum(v, W_O, "pos head d_head, head d_head d_model -> head pos d_model")


def _normalise(
    parts: Float[Tensor, "target source head"], residual: Float[Tensor, " target"]
) -> tuple[Float[Tensor, "target source head"], Float[Tensor, " target"]]:
    total = parts.sum(dim=(1, 2), dtype=torch.float64) + residual.double()  # float64 sum; float32 division
    return parts / total.to(parts.dtype)[:, None, None], (residual / total).to(parts.dtype)


def _residual_proximity(whole: Tensor, residual: Tensor, p: int) -> Tensor:
    """Proximity of one part per row, in float64 (O(pos d_model), cheap): a residual close to the whole makes
    ``|whole| - |whole - part|`` a small difference of large numbers."""
    whole, residual = whole.double(), residual.double()
    whole_norm = torch.linalg.vector_norm(whole, ord=p, dim=-1)
    return (whole_norm - torch.linalg.vector_norm(whole - residual, ord=p, dim=-1)).clamp(min=EPS)


def attention_contributions(
    resid_pre: Float[Tensor, "pos d_model"],
    resid_mid: Float[Tensor, "pos d_model"],
    pattern: Float[Tensor, "head target source"],
    values_out: Float[Tensor, "head source d_model"],
    distance: str = "l1",
    block_bytes: int | None = None,
    fused: bool = False,
    out_scale: Float[Tensor, "target d_model"] | None = None,
) -> tuple[Float[Tensor, "target source head"], Float[Tensor, " target"]]:
    """Normalised contributions of every (source, head) part and of the residual to each ``resid_mid``.

    Returns ``(parts [target, source, head], residual [target])``; for each target they sum to 1.
    ``fused`` (L1 only) runs each block through one ``torch.compile``-d kernel that never writes the
    ``[block, source, head, d_model]`` temporary (measured: tens of times faster on CPU; compiling takes
    about 40 s once per process). ``out_scale``: a norm after attention held at its clean scale (module
    docstring); each part is multiplied by its target's row.
    """
    if distance == "l2":
        return _attention_contributions_l2(resid_pre, resid_mid, pattern, values_out, out_scale)
    if distance != "l1":
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    n_heads, n_pos, d_model = values_out.shape
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes  # read at call time (tests shrink it)
    parts = torch.full((n_pos, n_pos, n_heads), EPS, dtype=resid_mid.dtype, device=resid_mid.device)
    values = rearrange(values_out, "head source d_model -> source head d_model")
    weights = rearrange(pattern, "head target source -> target source head")
    start = 0
    while start < n_pos:
        # Rows start..start+b-1 see sources 0..start+b-1: pick b with b * (start + b) vectors within budget.
        # Fused, the temporary never exists: only the [block, source, head] result counts.
        budget = block_bytes / (n_heads * (1 if fused else d_model) * resid_mid.element_size())
        rows = int((-start + math.sqrt(start * start + 4 * budget)) / 2)
        if fused:  # small blocks: each computes its full [block, start + block] rectangle, causal or not
            rows = min(rows, FUSED_ROWS)
        stop = min(n_pos, start + max(1, rows))
        n_src = stop
        if fused:
            scale = None if out_scale is None else out_scale[start:stop]
            proximity = _fused_l1()(resid_mid[start:stop], weights[start:stop, :n_src], values[:n_src], scale).clamp(min=EPS)
        else:
            block = weights[start:stop, :n_src, :, None] * values[None, :n_src]  # [block, source, head, d_model]
            if out_scale is not None:
                block.mul_(out_scale[start:stop, None, None, :])
            whole = resid_mid[start:stop, None, None, :]
            # |whole|_1 - |whole - part|_1 summed coordinate by coordinate: each term is at most |part_d|, so
            # float32 keeps its precision where the difference of the two large norms would not.
            block.neg_().add_(whole).abs_().sub_(whole.abs())
            proximity = (-block.sum(-1)).clamp(min=EPS)
            del block
        causal = torch.arange(n_src, device=proximity.device)[None, :] <= torch.arange(start, stop, device=proximity.device)[:, None]
        parts[start:stop, :n_src] = torch.where(causal[:, :, None], proximity, EPS)
        start = stop
    residual = _residual_proximity(resid_mid, resid_pre, p=1)
    return _normalise(parts, residual)


def l1_proximity_block(
    whole: Float[Tensor, "block d_model"],
    weights: Float[Tensor, "block source head"],
    values: Float[Tensor, "source head d_model"],
    scale: Float[Tensor, "block d_model"] | None = None,
) -> Float[Tensor, "block source head"]:
    """``sum_d |whole_d| - |whole_d - a v_d|`` for every (target, source, head): the unclamped L1 proximity
    (``a v_d s_d`` with a norm's frozen ``scale`` after attention)."""
    part = weights[..., None] * values[None]
    if scale is not None:
        part = part * scale[:, None, None, :]
    whole = whole[:, None, None, :]
    return (whole.abs() - (whole - part).abs()).sum(-1)


_COMPILED: dict[str, object] = {}


def _fused_l1():
    """``l1_proximity_block`` compiled once per process (dynamic shapes: one kernel for every block size)."""
    if "l1" not in _COMPILED:
        _COMPILED["l1"] = torch.compile(l1_proximity_block, dynamic=True)
    return _COMPILED["l1"]


def _attention_contributions_l2(resid_pre, resid_mid, pattern, values_out, out_scale=None):
    """L2 proximity from dot products (no [.., d_model] blocks): with ``n = |y|^2 - |y - a v|^2 = a (2 y.v - a |v|^2)``,
    ``|y| - |y - a v| = n / (|y| + |y - a v|)``, a form without the cancellation of ``|y|^2 - 2 a y.v + ...``.
    Computed head-major (the pattern's own layout), in place where possible. With a frozen norm scale ``s_i``
    the part is ``a (v * s_i)``: ``y.(v * s_i) = (y * s_i).v`` and ``|v * s_i|^2 = (v * v).(s_i * s_i)``."""
    if out_scale is None:
        dots = torch.matmul(resid_mid, values_out.transpose(1, 2))  # [head, target, source]: y_i . (v W_O)_j
        value_sq = (values_out * values_out).sum(-1)[:, None, :]  # [head, 1, source]
    else:
        dots = torch.matmul(resid_mid * out_scale, values_out.transpose(1, 2))
        value_sq = torch.matmul(out_scale * out_scale, (values_out * values_out).transpose(1, 2))  # [head, target, source]
    whole_sq = (resid_mid * resid_mid).sum(-1)[None, :, None]  # [1, target, 1]
    gain = dots.mul_(2).sub_(pattern * value_sq).mul_(pattern)  # a (2 y.v - a |v|^2), in dots' memory
    distance = (whole_sq - gain).clamp_(min=0).sqrt_().add_(whole_sq.sqrt())
    proximity = gain.div_(distance.clamp_(min=1e-30)).clamp_(min=EPS)
    residual = _residual_proximity(resid_mid, resid_pre, p=2)
    return _normalise(rearrange(proximity, "head target source -> target source head"), residual)


def mlp_contributions(
    resid_mid: Float[Tensor, "pos d_model"],
    mlp_out: Float[Tensor, "pos d_model"],
    resid_post: Float[Tensor, "pos d_model"],
    distance: str = "l1",
) -> tuple[Float[Tensor, " pos"], Float[Tensor, " pos"]]:
    """Normalised contributions ``(mlp, residual)`` of the MLP output and of ``resid_mid`` to ``resid_post``."""
    p = {"l1": 1, "l2": 2}.get(distance)
    if p is None:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    mlp = _residual_proximity(resid_post, mlp_out, p)
    residual = _residual_proximity(resid_post, resid_mid, p)
    total = mlp + residual
    return (mlp / total).to(resid_post.dtype), (residual / total).to(resid_post.dtype)


def naive_attention_contributions(
    resid_pre: Float[Tensor, "pos d_model"],
    resid_mid: Float[Tensor, "pos d_model"],
    pattern: Float[Tensor, "head target source"],
    values_out: Float[Tensor, "head source d_model"],
    distance: str = "l1",
    out_scale: Float[Tensor, "target d_model"] | None = None,
) -> tuple[Float[Tensor, "target source head"], Float[Tensor, " target"]]:
    """The definition taken literally, for tests: materialise every part ``[target, source, head, d_model]``,
    append the residual as one more part, measure each against the whole, normalise. Short prompts only."""
    p = {"l1": 1, "l2": 2}[distance]
    parts = einsum(pattern, values_out, "head target source, head source d_model -> target source head d_model")
    if out_scale is not None:
        parts = parts * out_scale[:, None, None, :]
    n_pos, _, n_heads, d_model = parts.shape
    flat = torch.cat([parts.reshape(n_pos, -1, d_model), resid_pre[:, None, :]], dim=1)  # [target, part, d]
    whole = resid_mid[:, None, :]
    proximity = (torch.linalg.vector_norm(whole, ord=p, dim=-1) - torch.linalg.vector_norm(whole - flat, ord=p, dim=-1))
    proximity = proximity.clamp(min=EPS)
    proximity = proximity / proximity.sum(dim=1, keepdim=True)
    return proximity[:, :-1].reshape(n_pos, n_pos, n_heads), proximity[:, -1]


def threshold_and_renormalise(
    blocks: Float[Tensor, "target ..."], residual: Float[Tensor, " target"], threshold: float
) -> tuple[Float[Tensor, "target ..."], Float[Tensor, " target"]]:
    """The reference's route pruning: zero every contribution at or below ``threshold``, renormalise the rest
    to sum to 1 per target (a target whose every part falls below keeps nothing: all zero)."""
    blocks = blocks * (blocks > threshold)
    residual = residual * (residual > threshold)
    total = residual + blocks.reshape(blocks.shape[0], -1).sum(-1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return blocks / safe.reshape((-1,) + (1,) * (blocks.dim() - 1)), residual / safe
