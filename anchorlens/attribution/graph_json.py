"""circuit-tracer's graph JSON for its frontend: metadata, qParams, nodes, links (``frontend/graph_models.py``)."""

from __future__ import annotations

import json
from pathlib import Path


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def graph_json(graph, slug: str = "graph", node_threshold: float = 0.8, edge_threshold: float = 0.98) -> dict:
    """The pruned graph as circuit-tracer's ``create_graph_files`` writes it (same node ids and fields)."""
    pruned = graph if graph.node_mask is not None else graph.prune(node_threshold, edge_threshold)
    n_feat, n_layers, n_pos = graph.n_features, graph.n_layers, graph.n_pos
    cumulative = pruned.cumulative_scores.tolist()
    nodes = {}
    for index in pruned.node_mask.nonzero().squeeze(1).tolist():
        influence = cumulative[index]
        if index < n_feat:
            layer, pos, feat = graph.active_features[index].tolist()
            nodes[index] = dict(node_id=f"{layer}_{feat}_{pos}", feature=_cantor(layer, feat), layer=str(layer),
                                ctx_idx=pos, feature_type="cross layer transcoder", jsNodeId=f"{layer}_{feat}-0",
                                influence=influence, activation=float(graph.activations[index]))
        elif index < pruned.token_slice.start:
            layer, pos = divmod(index - n_feat, n_pos)
            nodes[index] = dict(node_id=f"0_{layer}_{pos}", feature=-1, layer=str(layer), ctx_idx=pos,
                                feature_type="mlp reconstruction error", jsNodeId=f"{layer}_{pos}-0", influence=influence)
        elif index < pruned.logit_slice.start:
            pos = index - pruned.token_slice.start
            tok = int(graph.tokens[pos])
            nodes[index] = dict(node_id=f"E_{tok}_{pos}", feature=pos, layer="E", ctx_idx=pos,
                                feature_type="embedding", jsNodeId=f"E_{tok}-{pos}", influence=influence)
        else:
            k = index - pruned.logit_slice.start
            tok, p = int(graph.logit_token_ids[k]), float(graph.logit_probabilities[k])
            text = graph.logit_strings[k] if graph.logit_strings else str(tok)
            layer = str(n_layers + 1)
            nodes[index] = dict(node_id=f"{layer}_{tok}_{n_pos - 1}", feature=tok, layer=layer, ctx_idx=n_pos - 1,
                                feature_type="logit", token_prob=p, is_target_logit=k == 0, jsNodeId=f"L_{tok}-{n_pos - 1}",
                                clerp=f'Output "{text}" (p={p:.3f})')
    defaults = dict(token_prob=0.0, is_target_logit=False, run_idx=0, reverse_ctx_idx=0, clerp="", influence=None,
                    activation=None)
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    links = [{"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": float(graph.adjacency[t, s])}
             for s, t in zip(sources.tolist(), targets.tolist()) if s in nodes and t in nodes]
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    used = [defaults | node for node in nodes.values()
            if node["node_id"] in connected or node["feature_type"] in ("embedding", "logit")]
    return {
        "metadata": {"slug": slug, "scan": graph.scan or "anchorlens", "transcoder_list": [],
                     "prompt_tokens": list(graph.token_strings), "prompt": "".join(graph.token_strings),
                     "node_threshold": node_threshold, "schema_version": 1},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": used,
        "links": links,
    }


def write_graph_json(graph, path, slug: str = "graph", node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Path:
    """Write ``graph_json`` to ``path`` (a ``.json`` file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(graph_json(graph, slug, node_threshold, edge_threshold), indent=1))
    return path
