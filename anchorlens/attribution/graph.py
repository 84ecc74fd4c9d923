"""The attribution graph: adjacency (row target, column source), influence, pruning, scores (circuit-tracer's).

Pure math on the adjacency: influence is the Neumann series of the row-normalised |A| started from the logit
probabilities; pruning keeps the nodes holding ``node_threshold`` of the cumulative influence, then the edges
holding ``edge_threshold`` of edge influence, then drops feature and error nodes left without outgoing edges
(features also without incoming ones) until nothing changes; tokens and logits are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from anchorlens.results import Result


def normalize_matrix(matrix: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    """|A| with each row divided by its sum (rows of zeros stay zero)."""
    normalized = matrix.abs()
    return normalized / normalized.sum(dim=1, keepdim=True).clamp(min=1e-10)


def neumann_influence(A: Float[Tensor, "n n"], weights: Float[Tensor, " n"], max_iter: int = 1000) -> Tensor:
    """weights @ (A + A^2 + ...): the graph is acyclic, so the series ends (A is nilpotent)."""
    current = weights @ A
    influence = current
    for _ in range(max_iter):
        if not current.any():
            return influence
        current = current @ A
        influence = influence + current
    raise RuntimeError(f"influence did not converge after {max_iter} steps: the adjacency has a cycle")


def nonzero_rows(adjacency: Float[Tensor, "n n"]) -> tuple[Int[Tensor, " row"], Float[Tensor, "row n"]]:
    """The rows that are not all zero and those rows row-normalised (``normalize_matrix`` restricted to them).
    Only features and targets have incoming edges: at 1,000 tokens the other 31,000 rows (errors, tokens) are
    zero, and working on the ~1,000 others avoids n x n temporaries (4 GB each at 32k nodes)."""
    rows = adjacency.any(dim=1).nonzero().squeeze(1)
    return rows, normalize_matrix(adjacency[rows])


def row_influence(rows: Int[Tensor, " row"], normalized: Float[Tensor, "row n"], weights: Float[Tensor, " n"],
                  max_iter: int = 1000) -> Float[Tensor, " n"]:
    """``neumann_influence`` of the matrix whose only non-zero rows are ``normalized`` (at ``rows``)."""
    current = weights[rows] @ normalized
    influence = current
    for _ in range(max_iter):
        if not current.any():
            return influence
        current = current[rows] @ normalized
        influence = influence + current
    raise RuntimeError(f"influence did not converge after {max_iter} steps: the adjacency has a cycle")


def partial_influence(rows: Float[Tensor, "row node"], row_node: Int[Tensor, " row"], logit_probs: Tensor,
                      max_iter: int = 128) -> Float[Tensor, " node"]:
    """Influence on the logits from the rows computed so far (circuit-tracer's ``compute_partial_influences``):
    ``rows[r]`` is the row of node ``row_node[r]``; the logits are the last ``len(logit_probs)`` nodes."""
    normalized = rows.abs()
    normalized = normalized / normalized.sum(dim=1, keepdim=True).clamp(min=1e-8)
    influence = torch.zeros(rows.shape[1])
    current = torch.zeros(rows.shape[1])
    current[-len(logit_probs) :] = logit_probs
    for _ in range(max_iter):
        current = current[row_node] @ normalized
        if not current.any():
            return influence
        influence = influence + current
    raise RuntimeError(f"partial influence did not converge after {max_iter} steps: the adjacency has a cycle")


def _threshold(scores: Tensor, fraction: float) -> Tensor:
    """The score above which ``fraction`` of the total is kept."""
    ordered = torch.sort(scores, descending=True).values
    cumulative = torch.cumsum(ordered, dim=0) / torch.sum(ordered)
    index = min(int(torch.searchsorted(cumulative, fraction).item()), len(cumulative) - 1)
    return ordered[index]


@dataclass
class AttributionGraph(Result):
    """Direct effects between features, errors, tokens and logits of one prompt (circuit-tracer's node order).

    ``adjacency[t, s]`` is the direct effect of source ``s`` on target ``t``; rows of errors and tokens are zero.
    After ``prune``, ``node_mask`` / ``edge_mask`` say what was kept and ``adjacency`` holds only kept edges.
    """

    adjacency: Float[Tensor, "node node"]
    tokens: Int[Tensor, " position"]
    active_features: Int[Tensor, "feature 3"]  # (layer, position, feature index)
    activations: Float[Tensor, " feature"]
    logit_token_ids: Int[Tensor, " logit"]
    logit_probabilities: Float[Tensor, " logit"]
    n_layers: int
    token_strings: list[str] = field(default_factory=list)
    logit_strings: list[str] = field(default_factory=list)
    scan: str | None = None
    model_name: str = ""
    node_mask: Bool[Tensor, " node"] | None = None
    edge_mask: Bool[Tensor, "node node"] | None = None
    cumulative_scores: Float[Tensor, " node"] | None = None
    # active features that ``max_feature_nodes`` left out (smallest estimated influence): (layer, position, feature)
    dropped_features: Int[Tensor, "dropped 3"] | None = None
    # the model's vocabulary size: logit ids from it on are custom targets (directions, not tokens), as in
    # circuit-tracer; None (graphs saved before targets existed) means every logit node is a token
    vocab_size: int | None = None

    # ----- sizes and node table
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.active_features)

    @property
    def n_logits(self) -> int:
        return len(self.logit_token_ids)

    @property
    def logit_tokens(self) -> list[str]:
        return self.logit_strings

    @property
    def logit_labels(self) -> list[str]:
        """Each target's label: the decoded token, or a custom target's label (e.g. ``logit( Paris)-logit( Rome)``)."""
        return self.logit_strings or [str(t) for t in self.logit_token_ids.tolist()]

    @property
    def logit_is_token(self) -> Bool[Tensor, " logit"]:
        """Whether each target node is a token's logit (False: a custom direction, id ``vocab_size + i``)."""
        if self.vocab_size is None:
            return torch.ones(self.n_logits, dtype=torch.bool)
        return self.logit_token_ids < self.vocab_size

    @property
    def error_slice(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

    @property
    def token_slice(self) -> slice:
        start = self.error_slice.stop
        return slice(start, start + self.n_pos)

    @property
    def logit_slice(self) -> slice:
        return slice(self.token_slice.stop, self.token_slice.stop + self.n_logits)

    @property
    def nodes(self) -> pd.DataFrame:
        """One row per node, in adjacency order: kind, layer, position, feature, token id (-1 for none), value
        (a feature's activation, a target's probability or weight), label."""
        rows = []
        for (layer, pos, feat), act in zip(self.active_features.tolist(), self.activations.tolist()):
            rows.append(("feature", layer, pos, feat, -1, act, f"L{layer} F{feat} @{pos}"))
        for layer in range(self.n_layers):
            for pos in range(self.n_pos):
                rows.append(("error", layer, pos, -1, -1, float("nan"), f"error L{layer} @{pos}"))
        for pos, tok in enumerate(self.tokens.tolist()):
            text = self.token_strings[pos] if self.token_strings else str(tok)
            rows.append(("token", -1, pos, -1, tok, float("nan"), f"{text!r} @{pos}"))
        is_token = self.logit_is_token.tolist()
        for i, (tok, p) in enumerate(zip(self.logit_token_ids.tolist(), self.logit_probabilities.tolist())):
            text = self.logit_labels[i]
            if is_token[i]:
                rows.append(("logit", self.n_layers, self.n_pos - 1, -1, tok, p, f"logit {text!r} p={p:.3f}"))
            else:  # a custom direction: no token id; its value is its weight
                rows.append(("logit", self.n_layers, self.n_pos - 1, -1, -1, p, f"target {text!r} w={p:.3g}"))
        frame = pd.DataFrame(rows, columns=["kind", "layer", "position", "feature", "token_id", "value", "label"])
        frame["influence"] = self.influence().tolist()
        if self.node_mask is not None:
            frame["kept"] = self.node_mask.tolist()
        return frame

    def to_dataframe(self) -> pd.DataFrame:
        """The node table (``nodes``)."""
        return self.nodes

    def edges(self) -> pd.DataFrame:
        """Nonzero edges: source, target (node indices), weight."""
        target, source = self.adjacency.nonzero(as_tuple=True)
        return pd.DataFrame({"source": source.tolist(), "target": target.tolist(),
                             "weight": self.adjacency[target, source].tolist()})

    # ----- influence, pruning, scores
    def logit_weights(self) -> Float[Tensor, " node"]:
        weights = torch.zeros(self.adjacency.shape[0])
        weights[self.logit_slice] = self.logit_probabilities.float()
        return weights

    def influence(self) -> Float[Tensor, " node"]:
        """Each node's total (direct and indirect) influence on the targets, weighted by their probabilities (a
        custom target's weight)."""
        return row_influence(*nonzero_rows(self.adjacency), self.logit_weights())

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> "AttributionGraph":
        """The graph with only the nodes and edges that carry most of the influence (circuit-tracer's prune_graph)."""
        for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        node_mask, edge_mask, cumulative = prune_masks(self.adjacency, self.logit_weights(), self.n_features,
                                                       self.n_pos, self.n_logits, node_threshold, edge_threshold)
        # masked_fill, not adjacency * edge_mask: that makes a float copy of the mask first (3.3 GB at 1k tokens)
        return replace(self, adjacency=self.adjacency.masked_fill(~edge_mask, 0.0), node_mask=node_mask,
                       edge_mask=edge_mask,
                       cumulative_scores=cumulative)

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score), circuit-tracer's ``compute_graph_scores`` on this adjacency.

        Replacement: the share of token-to-logit influence that does not pass through error nodes.
        Completeness: influence-weighted share of each node's inputs that do not come from error nodes.
        """
        return graph_scores(self.adjacency, self.logit_weights(), self.error_slice, self.token_slice)

    def feature_interventions(self, nodes, value: float | None = None, scale: float = 0.0) -> list[tuple]:
        """Interventions ``(layer, position, feature, value)`` on feature nodes (indices into the adjacency, as in
        ``nodes``), for ``feature_intervention``: each set to ``value``, or to ``scale`` times its activation in
        this graph (0: switched off, the default; 2: doubled)."""
        out = []
        for node in [nodes] if isinstance(nodes, int) else list(nodes):
            node = int(node)
            if not 0 <= node < self.n_features:
                raise ValueError(f"node {node} is not a feature node (those are 0..{self.n_features - 1})")
            layer, position, feature = self.active_features[node].tolist()
            out.append((layer, position, feature, float(self.activations[node]) * scale if value is None else value))
        return out

    # ----- views
    def target_index(self, target: int | str) -> int:
        """The position among the target nodes of ``target``: a token id (or custom id) or a label."""
        keys = self.logit_token_ids.tolist() if isinstance(target, int) else self.logit_labels
        if target not in keys:
            raise ValueError(f"{target!r} is not a logit node (target) of this graph (those are {keys})")
        return keys.index(target)

    def sentence_attribution(self, token_spans: list[tuple[int, int]],
                             logit_token: int | str | None = None) -> pd.DataFrame:
        """Influence on the logits summed per span of positions (token-embedding and feature nodes); spans index
        the graph's positions (position 0 is the special token put in front). With ``logit_token`` (a token id
        among the logit nodes, or a target's label) the influence on that target alone, else on all targets
        weighted by probability (custom targets: their weights)."""
        if logit_token is None:
            influence = self.influence()
        else:
            weights = torch.zeros(self.adjacency.shape[0])
            weights[self.logit_slice.start + self.target_index(logit_token)] = 1.0
            influence = row_influence(*nonzero_rows(self.adjacency), weights)
        token_inf = influence[self.token_slice]
        feat_pos = self.active_features[:, 1] if self.n_features else torch.zeros(0, dtype=torch.long)
        feat_inf = influence[: self.n_features]
        rows = []
        for i, (start, stop) in enumerate(token_spans):
            in_span = (feat_pos >= start) & (feat_pos < stop)
            rows.append({"sentence": i, "start": start, "stop": stop,
                         "token_influence": float(token_inf[start:stop].sum()),
                         "feature_influence": float(feat_inf[in_span].sum())})
        frame = pd.DataFrame(rows)
        frame["influence"] = frame["token_influence"] + frame["feature_influence"]
        return frame

    def plot(self, ax=None, max_nodes: int = 60):
        """Draw the (pruned, if pruned) graph: x = position, y = layer; edges blue (+) / red (-)."""
        from anchorlens.attribution.graph_plot import plot_graph

        return plot_graph(self, ax=ax, max_nodes=max_nodes)

    def to_json(self, path: str | Path, slug: str = "graph", node_threshold: float = 0.8,
                edge_threshold: float = 0.98) -> Path:
        """circuit-tracer's graph JSON for its frontend (metadata, qParams, nodes, links)."""
        from anchorlens.attribution.graph_json import write_graph_json

        return write_graph_json(self, path, slug=slug, node_threshold=node_threshold, edge_threshold=edge_threshold)

    # ----- files


def prune_masks(adjacency: Tensor, logit_weights: Tensor, n_features: int, n_tokens: int, n_logits: int,
                node_threshold: float, edge_threshold: float):
    """(node mask, edge mask, cumulative influence of each node): circuit-tracer's ``prune_graph``."""
    # Only the non-zero rows (features, targets) are computed on: the others have no edges to score, and their
    # zeros change no threshold (they sort last, after the cumulative share is reached).
    rows, normalized = nonzero_rows(adjacency)
    node_influence = row_influence(rows, normalized, logit_weights)
    node_mask = node_influence >= _threshold(node_influence, node_threshold)
    node_mask[-n_logits - n_tokens :] = True
    pruned = adjacency[rows]
    pruned[~node_mask[rows]] = 0
    pruned[:, ~node_mask] = 0
    normalized = normalize_matrix(pruned)
    edge_scores = normalized * (row_influence(rows, normalized, logit_weights) + logit_weights)[rows, None]
    row_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)  # edge_mask[rows]
    del pruned, normalized, edge_scores
    is_feature_row = rows < n_features

    def drop_dangling():
        node_mask[: -n_logits - n_tokens] &= row_mask[:, : -n_logits - n_tokens].any(0)  # needs an outgoing edge
        has_input = torch.zeros(n_features, dtype=torch.bool)
        has_input[rows[is_feature_row]] = row_mask[is_feature_row].any(1)
        node_mask[:n_features] &= has_input  # features need an incoming edge

    previous = node_mask.clone()
    drop_dangling()
    while not torch.equal(node_mask, previous):
        previous = node_mask.clone()
        row_mask[~node_mask[rows]] = False
        row_mask[:, ~node_mask] = False
        drop_dangling()
    edge_mask = torch.zeros(adjacency.shape, dtype=torch.bool)
    edge_mask[rows] = row_mask
    ordered, order = torch.sort(node_influence, descending=True)
    cumulative = torch.zeros_like(node_influence)
    cumulative[order] = torch.cumsum(ordered, dim=0) / torch.sum(ordered)
    return node_mask, edge_mask, cumulative


def graph_scores(adjacency: Tensor, logit_weights: Tensor, errors: slice, tokens: slice) -> tuple[float, float]:
    """circuit-tracer's ``compute_graph_scores``: (replacement, completeness)."""
    rows, normalized = nonzero_rows(adjacency)  # a zero row has no input from errors: non_error 1
    influence = row_influence(rows, normalized, logit_weights)
    token_influence = influence[tokens].sum()
    error_influence = influence[errors].sum()
    replacement = token_influence / (token_influence + error_influence)
    non_error = torch.ones(adjacency.shape[0])
    non_error[rows] = 1 - normalized[:, errors].sum(dim=-1)
    output_influence = influence + logit_weights
    completeness = (non_error * output_influence).sum() / output_influence.sum()
    return float(replacement), float(completeness)
