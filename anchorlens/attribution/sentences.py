"""``answer_attribution``: a chain of thought's answer-token logit attributed back to its sentences.

The graph is built on the trace's tokens before the answer token (``trace_attribution``), pruned, and kept with
its scores; each sentence gets the influence of the paths that start at its token embeddings and, apart, of the
features computed at its positions (which include what flows into them from earlier sentences).
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from anchorlens.attribution.graph import AttributionGraph
from anchorlens.results import Result


@dataclass
class SentenceAttribution(Result):
    """The answer token's logit attributed to each sentence through a pruned attribution graph.

    Attributes:
        token_influence: ``[sentence]`` influence of the paths that start at the sentence's token embeddings.
        feature_influence: ``[sentence]`` influence of the features at the sentence's positions (overlaps with
            earlier sentences' token paths).
        influence: their sum.
        sentences: the sentences' texts.
        graph: the pruned graph behind it.
        answer_position, answer_token, answer_text: the token explained (predicted at ``answer_position - 1``).
        answer_is_logit_node: whether it is among the graph's logit nodes; if not, the influence is on the top
            predictions, weighted by probability.
        transcoders, max_feature_nodes: how the graph was built; features_kept / features_dropped: active
            features in it and those ``max_feature_nodes`` left out.
        replacement, completeness: the pruned graph's scores (circuit-tracer's definitions).
    """

    token_influence: Float[Tensor, " sentence"]
    feature_influence: Float[Tensor, " sentence"]
    influence: Float[Tensor, " sentence"]
    sentences: list[str]
    graph: AttributionGraph
    answer_position: int
    answer_token: int
    answer_text: str
    answer_is_logit_node: bool
    transcoders: str | None
    max_feature_nodes: int | None
    features_kept: int
    features_dropped: int
    replacement: float
    completeness: float

    _nested = {"graph": "graph"}

    @property
    def info(self) -> dict:
        """Everything but the per-sentence numbers and the graph, as one dict (what the report's note says)."""
        skip = {"token_influence", "feature_influence", "influence", "sentences", "graph"}
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in skip}

    def to_dataframe(self):
        """One row per sentence: text, token influence, feature influence and their sum."""
        import pandas as pd

        return pd.DataFrame({"sentence": range(len(self.sentences)), "text": self.sentences,
                             "token_influence": self.token_influence.numpy(),
                             "feature_influence": self.feature_influence.numpy(),
                             "influence": self.influence.numpy()})

    def plot(self, ax=None):
        """Token and feature influence per sentence, side by side."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(self.sentences)), 3))
        x = range(len(self.sentences))
        ax.bar([i - 0.2 for i in x], self.token_influence.numpy(), width=0.4, label="token paths")
        ax.bar([i + 0.2 for i in x], self.feature_influence.numpy(), width=0.4, label="features at its positions")
        ax.set_xlabel("sentence")
        ax.set_ylabel(f"influence on {self.answer_text!r}")
        ax.legend(fontsize=8)
        return ax


def answer_attribution(model, transcoders, trace, answer_position: int, max_feature_nodes: int | None = None,
                       progress: bool = True) -> SentenceAttribution:
    """Attribute the logit of the trace's token at ``answer_position`` to its sentences (``trace_attribution``),
    keeping the pruned graph and its scores.

    >>> result = answer_attribution(model, transcoders, trace, answer_position=trace.n_tokens - 1)  # doctest: +SKIP
    >>> result.to_dataframe(), result.graph.plot()                                                     # doctest: +SKIP
    """
    import torch

    from anchorlens.attribution.attribute import trace_attribution

    graph, table = trace_attribution(model, transcoders, trace, answer_position=answer_position,
                                     max_feature_nodes=max_feature_nodes, progress=progress)
    pruned = graph.prune()
    features_kept, features_dropped = graph.n_features, len(graph.dropped_features)
    del graph  # at 1k tokens each dense adjacency is 3.3 GB: keep one
    replacement, completeness = pruned.scores()
    column = lambda name: torch.tensor(table[name].to_numpy(), dtype=torch.float32)  # noqa: E731
    answer = int(table.attrs["answer_token"])
    return SentenceAttribution(
        token_influence=column("token_influence"), feature_influence=column("feature_influence"),
        influence=column("influence"), sentences=list(table["text"]), graph=pruned,
        answer_position=answer_position, answer_token=answer, answer_text=model.tokenizer.decode([answer]),
        answer_is_logit_node=bool(table.attrs["answer_is_logit_node"]), transcoders=transcoders.scan,
        max_feature_nodes=max_feature_nodes, features_kept=int(features_kept),
        features_dropped=int(features_dropped), replacement=float(replacement), completeness=float(completeness))
