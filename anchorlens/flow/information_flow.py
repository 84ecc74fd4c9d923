"""``information_flow(model, text_or_trace)``: contributions of every token, head, residual and MLP, per layer.

One forward pass with hooks (``anchorlens.hooks.flow_capture``); each layer's contributions are computed
as soon as the layer has run (``flow_math``), so only one layer's attention pattern is alive at a time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import EmptyTextError, UnsupportedArchitectureError
from anchorlens.hooks.flow_capture import check_flow_hooks, output_weights, run_layerwise
from anchorlens.flow.checks import DEFAULT_THRESHOLD, FlowInputError, check_threshold  # noqa: F401 (re-exported)
from anchorlens.flow.contributions import DISTANCES, attention_contributions, head_values_out, mlp_contributions
from anchorlens.flow.routes import build_routes, token_influence
from anchorlens.results import Result
from anchorlens.progress import progress_bar

HEADS_AUTO_BYTES = 512 * 2**20  # keep per-head contributions of every layer when they fit in this
FUSED_FROM_TOKENS = 256  # from here the fused L1 kernel's one-off compile time pays for itself


@dataclass
class InformationFlow(Result):
    """How much each part feeds each residual state, at every layer (Ferrando and Voita 2024).

    Attributes:
        attention: ``[layer, target, source]``: contribution of source token ``j`` to target ``i``'s
            attention update (``resid_mid``), summed over heads, before thresholding.
        residual_attention: ``[layer, target]``: contribution of ``resid_pre`` to ``resid_mid``.
        mlp, residual_mlp: ``[layer, token]``: contributions of the MLP output and of ``resid_mid`` to
            ``resid_post``.
        heads: ``[layer, target, source, head]`` per-head contributions, or None when not kept (long traces;
            ``information_flow(..., keep_heads=True)`` keeps them).
        tokens: the token ids (as ``model.to_tokens`` gives them, BOS included); ``token_strs`` their text.
        distance: ``"l1"`` or ``"l2"``.

    For each target, ``attention.sum(-1) + residual_attention`` is 1 (future sources carry ``1e-5`` each
    before normalisation, as in the reference tool), and ``mlp + residual_mlp`` is 1.
    """

    attention: Float[Tensor, "layer target source"]
    residual_attention: Float[Tensor, "layer target"]
    mlp: Float[Tensor, "layer pos"]
    residual_mlp: Float[Tensor, "layer pos"]
    tokens: list[int]
    token_strs: list[str]
    distance: str = "l1"
    heads: Float[Tensor, "layer target source head"] | None = None
    model_name: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.attention.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.attention.shape[1]

    def check_position(self, position: int) -> int:
        """``position`` as a non-negative index (negative counts from the end); clear error if out of range."""
        pos = int(position)
        if not -self.n_tokens <= pos < self.n_tokens:
            raise FlowInputError(f"position {position} is out of range for {self.n_tokens} tokens (0..{self.n_tokens - 1}, or negative from the end)")
        return pos % self.n_tokens

    def check_layer(self, layer: int) -> int:
        if not 0 <= int(layer) < self.n_layers:
            raise FlowInputError(f"layer {layer} is out of range: the model has layers 0..{self.n_layers - 1}")
        return int(layer)

    def by_head(self, layer: int) -> Float[Tensor, "target source head"]:
        """Per-head contributions of one layer ``[target, source, head]`` (their sum over heads is ``attention``)."""
        layer = self.check_layer(layer)
        if self.heads is None:
            raise FlowInputError(
                "per-head contributions were not kept for this (long) trace: rerun "
                "information_flow(model, text, keep_heads=True) (memory: layers x tokens^2 x heads floats)"
            )
        return self.heads[layer]

    def routes(self, position: int = -1, threshold: float = DEFAULT_THRESHOLD):
        """The information flow route into ``position``'s prediction (``anchorlens.flow.routes.Routes``)."""
        return build_routes(self, position, threshold)

    def token_influence(self, position: int = -1, threshold: float | None = None) -> Float[Tensor, " pos"]:
        """How much each input token feeds the final residual at ``position``: contributions propagated back
        through every layer (sums over paths of products of edge weights; sums to about 1)."""
        return token_influence(self, position, threshold)

    def to_dataframe(self, min_weight: float = 0.0):
        """One row per (layer, target, source) with ``source <= target`` and contribution above ``min_weight``:
        layer, target, source, weight, target_token, source_token."""
        import pandas as pd

        causal = torch.tril(torch.ones(self.n_tokens, self.n_tokens, dtype=torch.bool))
        keep = causal[None] & (self.attention > min_weight)
        layer, target, source = keep.nonzero(as_tuple=True)
        return pd.DataFrame(
            {
                "layer": layer.numpy(),
                "target": target.numpy(),
                "source": source.numpy(),
                "weight": self.attention[layer, target, source].numpy(),
                "target_token": [self.token_strs[i] for i in target.tolist()],
                "source_token": [self.token_strs[j] for j in source.tolist()],
            }
        )

    def plot(self, layer: int | None = None, ax=None):
        """Heatmap of token-to-token contributions (one layer, or the mean over layers)."""
        import matplotlib.pyplot as plt

        matrix = self.attention.mean(0) if layer is None else self.attention[self.check_layer(layer)]
        matrix = matrix.masked_fill(~torch.tril(torch.ones_like(matrix, dtype=torch.bool)), float("nan"))
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 5))
        image = ax.imshow(matrix.numpy(), cmap="viridis")
        ax.set_xlabel("source token")
        ax.set_ylabel("target token")
        ax.set_title(f"attention contributions ({self.distance}, {'mean over layers' if layer is None else f'layer {layer}'})")
        if self.n_tokens <= 40:
            ax.set_xticks(range(self.n_tokens), self.token_strs, rotation=90, fontsize=7)
            ax.set_yticks(range(self.n_tokens), self.token_strs, fontsize=7)
        ax.figure.colorbar(image, ax=ax)
        return ax


def flow_tokens(model, text_or_trace) -> torch.Tensor:
    """``[1, pos]`` tokens of a string (``model.to_tokens``, BOS included), a ``Trace`` or a token tensor."""
    if hasattr(text_or_trace, "tokens") and hasattr(text_or_trace, "token_spans"):
        tokens = text_or_trace.tokens()
    elif isinstance(text_or_trace, str):
        if not text_or_trace.strip():
            raise EmptyTextError("information_flow needs a non-empty text: pass a prompt or a Trace")
        tokens = model.to_tokens(text_or_trace)
    elif isinstance(text_or_trace, Tensor):
        tokens = text_or_trace
    else:
        raise FlowInputError(f"information_flow takes a string, a Trace or a token tensor, got {type(text_or_trace).__name__}")
    tokens = tokens.reshape(1, -1) if tokens.dim() == 1 else tokens
    if tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise FlowInputError(f"information_flow takes one non-empty sequence, got tokens of shape {tuple(tokens.shape)}")
    return tokens


def check_decomposition(layer: int, tensors: dict, values_out: Tensor, tolerance: float = 1e-3, rows: int = 16) -> None:
    """The parts must add up: ``resid_pre + out_scale * (sum_h pattern_h @ (v W_O)_h + b_O) == resid_mid`` (no
    ``out_scale`` without a norm after attention, no ``b_O`` without an output bias), or the model's attention
    output holds something else that the per-head parts do not explain.
    Checked on the first and last ``rows`` positions (an architecture that breaks it breaks it everywhere)."""
    n_pos = tensors["resid_mid"].shape[0]
    picked = torch.unique(torch.cat([torch.arange(min(rows, n_pos)), torch.arange(max(0, n_pos - rows), n_pos)]))
    pattern = tensors["pattern"][:, picked].to(values_out.dtype)
    update = torch.einsum("hts,hsd->td", pattern, values_out)
    if tensors.get("attn_bias") is not None:
        update = update + tensors["attn_bias"].to(update.dtype)
    if tensors.get("out_scale") is not None:
        update = update * tensors["out_scale"][picked]
    rebuilt = tensors["resid_pre"][picked] + update
    refuse_undecomposable(layer, rebuilt, tensors["resid_mid"][picked], tolerance)


def refuse_undecomposable(layer: int, rebuilt: Tensor, whole: Tensor, tolerance: float) -> None:
    """Raise ``UnsupportedArchitectureError`` unless ``rebuilt`` (the residual plus the per-head attention parts)
    equals ``whole`` (``resid_mid``) within ``tolerance``, relative to ``whole``'s largest entry."""
    error = (rebuilt - whole).abs().max() / whole.abs().max().clamp(min=1e-12)
    if not error <= tolerance:
        raise UnsupportedArchitectureError(
            f"layer {layer}: resid_mid is not resid_pre plus the per-head attention parts (relative error {float(error):.2e}); "
            "this architecture's attention output cannot be decomposed per head (parallel blocks, or a norm after "
            "attention that is not an RMSNorm), so information flow does not apply to it"
        )


def information_flow(
    model,
    text_or_trace,
    distance: str = "l1",
    keep_heads: bool | None = None,
    progress: bool = True,
    fused: bool | None = None,
) -> InformationFlow:
    """Contributions of every source token (through every head), residual and MLP to each residual state.

    Args:
        model: a TransformerBridge (sequential blocks: Llama, Qwen2, ...; grouped-query attention supported).
        text_or_trace: a string (tokenised with ``model.to_tokens``, BOS included), a ``Trace``, or tokens.
        distance: ``"l1"`` (the reference tool's definition) or ``"l2"`` (faster: it factors into dot
            products; weighs large coordinates more, so rankings are close but not identical).
        keep_heads: keep per-head contributions of every layer (``by_head``); default: when they take under
            512 MB (about 600 tokens on SmolLM2).
        progress: a progress bar over layers.
        fused: L1 through one ``torch.compile``-d kernel per block (no ``[.., d_model]`` temporaries; tens of
            times faster on CPU, about 40 s to compile once per process); default: from 256 tokens on. Falls
            back to plain torch, with a warning, where compiling fails.

    >>> flow = information_flow(model, "The capital of France is")     # doctest: +SKIP
    >>> flow.attention.shape, flow.by_head(3).shape, flow.routes(-1).edges.head()   # doctest: +SKIP
    """
    if distance not in DISTANCES:
        raise FlowInputError(f"distance must be one of {DISTANCES}, got {distance!r}")
    check_flow_hooks(model)
    tokens = flow_tokens(model, text_or_trace).to(model.cfg.device)
    cfg = model.cfg
    n_layers, n_heads, n_pos = cfg.n_layers, cfg.n_heads, tokens.shape[1]
    if keep_heads is None:
        keep_heads = n_layers * n_pos * n_pos * n_heads * 4 <= HEADS_AUTO_BYTES
    use_fused = [distance == "l1" and (n_pos >= FUSED_FROM_TOKENS if fused is None else bool(fused))]
    W_O = output_weights(model)  # [layer, head, d_head, d_model]
    attention = torch.zeros(n_layers, n_pos, n_pos)
    residual_attention = torch.zeros(n_layers, n_pos)
    mlp = torch.zeros(n_layers, n_pos)
    residual_mlp = torch.zeros(n_layers, n_pos)
    heads = torch.zeros(n_layers, n_pos, n_pos, n_heads) if keep_heads else None
    bar = progress_bar(total=n_layers, desc="information flow", progress=progress)

    def on_layer(layer: int, t: dict) -> None:
        t = {k: v.float() for k, v in t.items()}
        values_out = head_values_out(t["v"], W_O[layer].float())
        check_decomposition(layer, t, values_out)
        args = (t["resid_pre"], t["resid_mid"], t["pattern"], values_out, distance)
        scale = t.get("out_scale")
        try:
            parts, resid = attention_contributions(*args, fused=use_fused[0], out_scale=scale)
        except Exception as error:  # torch.compile needs a C compiler; without one, the unfused blocks
            if not use_fused[0]:
                raise
            warnings.warn(f"fused L1 kernel unavailable ({type(error).__name__}: {error}); computing unfused")
            use_fused[0] = False
            parts, resid = attention_contributions(*args, out_scale=scale)
        attention[layer] = parts.sum(-1).cpu()
        residual_attention[layer] = resid.cpu()
        if heads is not None:
            heads[layer] = parts.cpu()
        m, r = mlp_contributions(t["resid_mid"], t["mlp_out"], t["resid_post"], distance)
        mlp[layer], residual_mlp[layer] = m.cpu(), r.cpu()
        bar.update(1)

    run_layerwise(model, tokens, on_layer)
    bar.close()
    ids = tokens[0].tolist()
    return InformationFlow(
        attention=attention,
        residual_attention=residual_attention,
        mlp=mlp,
        residual_mlp=residual_mlp,
        tokens=ids,
        token_strs=[model.tokenizer.decode([i]) for i in ids],
        distance=distance,
        heads=heads,
        model_name=getattr(model, "anchorlens_name", None) or getattr(cfg, "model_name", None),
    )
