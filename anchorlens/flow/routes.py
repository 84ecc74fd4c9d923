"""Information flow routes: the graph of contributions above a threshold, traced back from one prediction.

The graph is the reference tool's (facebookresearch/llm-transparency-tool, ``routes/graph.py``): per layer
``l`` and position ``i`` three nodes, ``x`` (the residual entering layer ``l``; ``x`` at ``n_layers`` is
the final residual), ``a`` (after attention, ``resid_mid``) and ``m`` (the MLP). Edges:

- attention ``x(l, j) -> a(l, i)``: the contribution of source ``j`` to ``i`` (each (source, head) part
  thresholded and renormalised, then summed over heads, as the reference does);
- residual ``x(l, i) -> a(l, i)`` and ``a(l, i) -> x(l+1, i)``;
- MLP ``a(l, i) -> m(l, i) -> x(l+1, i)``, both with the MLP's contribution.

Every part at or below the threshold is dropped and the rest renormalised, so each node's kept incoming
weights sum to 1. The route into a prediction is every node and edge that reaches ``x(n_layers, position)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.flow.checks import check_threshold
from anchorlens.flow.contributions import threshold_and_renormalise
from anchorlens.results import Result

KINDS = ("x", "a", "m")
EDGE_KINDS = ("attention", "residual", "mlp")
EDGE_COLUMNS = ["source_layer", "source_position", "source_kind", "target_layer", "target_position", "target_kind", "kind", "weight"]


def pruned_layer(flow, layer: int, threshold: float | None):
    """One layer's ``(attention [target, source], heads [target, source, head] | None, residual_attention,
    mlp, residual_mlp)`` after thresholding and renormalising (raw contributions when ``threshold`` is None)."""
    heads = flow.heads[layer] if flow.heads is not None else None
    attention, resid_attn = flow.attention[layer], flow.residual_attention[layer]
    mlp, resid_mlp = flow.mlp[layer], flow.residual_mlp[layer]
    if threshold is None:
        return attention, heads, resid_attn, mlp, resid_mlp
    if heads is not None:  # the reference thresholds each (source, head) part, then sums over heads
        heads, resid_attn = threshold_and_renormalise(heads, resid_attn, threshold)
        attention = heads.sum(-1)
    else:
        attention, resid_attn = threshold_and_renormalise(attention, resid_attn, threshold)
    mlp, resid_mlp = threshold_and_renormalise(mlp[:, None], resid_mlp, threshold)
    return attention, heads, resid_attn, mlp[:, 0], resid_mlp


def token_influence(flow, position: int = -1, threshold: float | None = None) -> Float[Tensor, " pos"]:
    """Influence of each input token (``x(0, j)``) on the final residual at ``position``: the sum over all
    paths of the product of edge weights, computed layer by layer from the top (O(layers x tokens^2))."""
    position = flow.check_position(position)
    if threshold is not None:
        threshold = check_threshold(threshold)
    weight = torch.zeros(flow.n_tokens, dtype=torch.float64)
    weight[position] = 1.0
    for layer in reversed(range(flow.n_layers)):
        attention, _, resid_attn, mlp, resid_mlp = pruned_layer(flow, layer, threshold)
        at_mid = weight * (mlp + resid_mlp).double()  # both the MLP and the residual lead back to a(l, i)
        weight = at_mid * resid_attn.double() + at_mid @ torch.tril(attention).double()
    return weight.float()


@dataclass
class Routes(Result):
    """The route into one prediction: nodes, edges above the threshold, and per-layer head importance.

    Attributes:
        edges: ``[edge, 8]`` numbers: source (layer, position, kind), target (layer, position, kind), edge kind,
            weight; kinds index ``KINDS`` / ``EDGE_KINDS`` (``.to_dataframe()`` names them).
        head_importance: ``[layer, head]``: the kept per-head contributions summed over the route's
            attention edges (None when the flow has no per-head contributions).
        position: the prediction's position; ``threshold``: the pruning threshold.
    """

    edges: Float[Tensor, "edge 8"]
    head_importance: Float[Tensor, "layer head"] | None
    position: int
    threshold: float
    n_layers: int
    token_strs: list[str]

    def to_dataframe(self):
        """One row per edge, strongest first: source/target layer, position, kind; edge kind; weight."""
        import pandas as pd

        frame = pd.DataFrame(self.edges.numpy(), columns=EDGE_COLUMNS)
        for column in EDGE_COLUMNS[:-1]:
            frame[column] = frame[column].astype(int)
        for column in ("source_kind", "target_kind"):
            frame[column] = [KINDS[k] for k in frame[column]]
        frame["kind"] = [EDGE_KINDS[k] for k in frame["kind"]]
        return frame.sort_values("weight", ascending=False, kind="stable").reset_index(drop=True)

    @property
    def nodes(self):
        """The route's nodes ``(layer, position, kind)`` as a DataFrame."""
        import pandas as pd

        frame = self.to_dataframe()
        ends = [frame[[f"{end}_layer", f"{end}_position", f"{end}_kind"]].set_axis(["layer", "position", "kind"], axis=1) for end in ("source", "target")]
        return pd.concat(ends).drop_duplicates().sort_values(["layer", "position", "kind"]).reset_index(drop=True)

    def attention_edges(self, top_k: int | None = None):
        """Attention edges ``(layer, target, source, weight)``, strongest first (the candidates for knockout)."""
        frame = self.to_dataframe()
        frame = frame[frame["kind"] == "attention"]
        frame = frame.rename(columns={"target_layer": "layer", "target_position": "target", "source_position": "source"})
        frame = frame[["layer", "target", "source", "weight"]].reset_index(drop=True)
        return frame if top_k is None else frame.head(top_k)

    def plot(self, ax=None, max_width: float = 4.0):
        """Draw the route: tokens across, layers up (``x`` at ``l``, ``a`` at ``l + 0.5``, MLPs as squares)."""
        import matplotlib.pyplot as plt
        from matplotlib.collections import LineCollection

        n_tokens = len(self.token_strs)
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 0.6 * n_tokens + 1), max(4, 0.25 * self.n_layers + 1)))

        def place(layer, position, kind):
            if kind == 0:
                return position, layer
            if kind == 1:
                return position, layer + 0.5
            return position + 0.3, layer + 0.75

        colours = {0: "tab:blue", 1: "tab:grey", 2: "tab:orange"}
        for kind in range(3):
            rows = self.edges[self.edges[:, 6] == kind]
            if not len(rows):
                continue
            segments = [[place(*r[0:3].int().tolist()), place(*r[3:6].int().tolist())] for r in rows]
            widths = (rows[:, 7] * max_width).clamp(min=0.3).tolist()
            ax.add_collection(LineCollection(segments, linewidths=widths, colors=colours[kind], alpha=0.7, label=EDGE_KINDS[kind]))
        mlp_nodes = self.edges[self.edges[:, 5] == 2][:, 3:5]
        if len(mlp_nodes):
            ax.scatter(mlp_nodes[:, 1] + 0.3, mlp_nodes[:, 0] + 0.75, marker="s", s=12, c="tab:orange", zorder=3)
        ax.scatter([self.position], [self.n_layers], marker="*", s=120, c="tab:red", zorder=4)
        ax.set_xlim(-0.7, n_tokens - 0.3)
        ax.set_ylim(-0.5, self.n_layers + 0.5)
        ax.set_xticks(range(n_tokens), [repr(s)[1:-1] for s in self.token_strs], rotation=90, fontsize=7)
        ax.set_ylabel("layer")
        ax.set_title(f"information flow route into position {self.position} (threshold {self.threshold})")
        ax.legend(loc="upper left", fontsize=7)
        return ax


def build_routes(flow, position: int = -1, threshold: float = 0.04) -> Routes:
    """Trace the route into ``position``'s prediction: keep edges above ``threshold`` (renormalised), walking
    back from ``x(n_layers, position)`` to the input tokens."""
    position = flow.check_position(position)
    threshold = check_threshold(threshold)
    n_layers = flow.n_layers
    n_heads = flow.heads.shape[-1] if flow.heads is not None else None
    head_importance = torch.zeros(n_layers, n_heads) if n_heads else None
    edges: list[list[float]] = []
    reached_x = {position}
    for layer in reversed(range(n_layers)):
        attention, heads, resid_attn, mlp, resid_mlp = pruned_layer(flow, layer, threshold)
        reached_a = set()
        for i in sorted(reached_x):
            if resid_mlp[i] > 0:
                edges.append([layer, i, 1, layer + 1, i, 0, 1, float(resid_mlp[i])])
                reached_a.add(i)
            if mlp[i] > 0:
                edges.append([layer, i, 2, layer + 1, i, 0, 2, float(mlp[i])])
                edges.append([layer, i, 1, layer, i, 2, 2, float(mlp[i])])
                reached_a.add(i)
        reached_x = set()
        for i in sorted(reached_a):
            if resid_attn[i] > 0:
                edges.append([layer, i, 0, layer, i, 1, 1, float(resid_attn[i])])
                reached_x.add(i)
            for j in (attention[i, : i + 1] > 0).nonzero().flatten().tolist():
                edges.append([layer, j, 0, layer, i, 1, 0, float(attention[i, j])])
                reached_x.add(j)
                if head_importance is not None:
                    head_importance[layer] += heads[i, j]
    table = torch.tensor(edges, dtype=torch.float32).reshape(-1, 8)
    return Routes(table, head_importance, position, threshold, n_layers, list(flow.token_strs))
