"""Matplotlib drawing of an attribution graph (for notebooks): nodes at (position, layer), strongest edges."""

from __future__ import annotations

import matplotlib.pyplot as plt


def plot_graph(graph, ax=None, max_nodes: int = 60, max_edges: int = 200):
    """Draw the pruned graph (pruning it at the defaults if it is not): x = token position, y = layer
    (tokens at the bottom, logits at the top); edge width ~ |weight|, blue positive, red negative."""
    pruned = graph if graph.node_mask is not None else graph.prune()
    nodes = pruned.nodes
    kept = nodes[nodes["kept"]].copy()
    non_fixed = kept[kept["kind"].isin(["feature", "error"])].nlargest(max_nodes, "influence")
    shown = kept[kept["kind"].isin(["token", "logit"])].index.union(non_fixed.index)
    y = {"token": -1}
    pos = {}
    logit_rank = 0
    for index in shown:
        row = nodes.loc[index]
        if row["kind"] == "logit":
            pos[index] = (graph.n_pos - 1 + 0.25 * logit_rank, graph.n_layers + 0.5)
            logit_rank += 1
        else:
            jitter = 0.12 * ((index * 7919) % 5 - 2) if row["kind"] != "token" else 0
            pos[index] = (row["position"] + jitter, y.get(row["kind"], row["layer"]))
    ax = ax or plt.subplots(figsize=(max(6, graph.n_pos * 1.2), 6))[1]
    A = pruned.adjacency
    edges = [(t, s, float(A[t, s])) for t, s in pruned.edge_mask.nonzero().tolist() if t in pos and s in pos]
    edges = sorted(edges, key=lambda e: -abs(e[2]))[:max_edges]
    top = max((abs(w) for *_, w in edges), default=1.0) or 1.0
    for t, s, w in edges:
        (x0, y0), (x1, y1) = pos[s], pos[t]
        ax.plot([x0, x1], [y0, y1], color="tab:blue" if w > 0 else "tab:red", alpha=0.6, lw=0.3 + 3 * abs(w) / top)
    colours = {"feature": "tab:orange", "error": "tab:gray", "token": "tab:green", "logit": "tab:purple"}
    for index, (x, yy) in pos.items():
        kind = nodes.loc[index, "kind"]
        ax.scatter([x], [yy], s=40, color=colours[kind], zorder=3, edgecolor="k", lw=0.3)
        if kind == "logit":
            ax.annotate(nodes.loc[index, "label"].replace("logit ", ""), (x, yy), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7, rotation=30)
    ax.set_xticks(range(graph.n_pos))
    ax.set_xticklabels([repr(t)[1:-1] for t in graph.token_strings] or range(graph.n_pos), rotation=45, ha="right")
    ax.set_ylabel("layer (tokens below, logits above)")
    ax.set_title(f"attribution graph: {int(pruned.node_mask.sum())} nodes, {int(pruned.edge_mask.sum())} edges kept")
    for kind, colour in colours.items():
        ax.scatter([], [], color=colour, label=kind)
    ax.legend(loc="upper left", fontsize=7)
    return ax
