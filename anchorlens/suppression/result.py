"""``SuppressionMatrix``: the sentence-to-sentence causal matrix and the per-token KL behind it."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from anchorlens.suppression.matrix import log_kl, row_centre
from anchorlens.results import Result


@dataclass
class SuppressionMatrix(Result):
    """Which earlier sentences each later sentence depends on (Thought Anchors' attention suppression).

    Attributes:
        kl: ``[target i, suppressed j]``: mean over the tokens of ``i`` of ``KL(P_base || P_suppressed)`` when
            sentence ``j``'s keys are hidden. NaN where ``j >= i`` (suppression cannot reach backwards, and
            the diagonal compares a sentence with its own removal).
        token_kl: ``[suppressed j, token t]``: the KL of the distribution *for* token ``t`` (from the logits at
            ``t - 1``); 0 before sentence ``j`` (nothing changes there), NaN for token 0.
        token_spans: each sentence's half-open token range.
        sentences: the sentences' texts.
        layers, heads: where keys were hidden (heads None = all).
        temperature: softmax temperature of the compared distributions.
        method: ``"fast"`` or ``"naive"``.

    >>> result = suppression_matrix(model, trace)          # doctest: +SKIP
    >>> result.log_kl[5, 0], result.edges(top_k=3)         # doctest: +SKIP
    """

    kl: Float[Tensor, "target suppressed"]
    token_kl: Float[Tensor, "suppressed token"]
    token_spans: list[tuple[int, int]]
    sentences: list[str]
    layers: list[int]
    heads: list[int] | None
    temperature: float
    method: str
    model_name: str | None = None

    @property
    def n_sentences(self) -> int:
        return len(self.sentences)

    @property
    def log_kl(self) -> Float[Tensor, "target suppressed"]:
        """``log(KL + 1e-9)``, the published scale."""
        return log_kl(self.kl)

    def centred(self, log: bool = True) -> Float[Tensor, "target suppressed"]:
        """Row-centred matrix (each target's mean over its earlier sentences subtracted), as the paper plots."""
        return row_centre(self.log_kl if log else self.kl)

    def edges(self, top_k: int | None = None):
        """Edges ``suppressed -> target`` (``j < i``) sorted by KL, strongest first, as a DataFrame."""
        frame = self.to_dataframe().sort_values("kl", ascending=False, kind="stable").reset_index(drop=True)
        return frame if top_k is None else frame.head(top_k)

    def to_dataframe(self):
        """One row per pair ``j < i``: target, suppressed, kl, log_kl, and the two sentences' texts."""
        import pandas as pd

        log = self.log_kl
        rows = [
            {
                "target": i,
                "suppressed": j,
                "kl": float(self.kl[i, j]),
                "log_kl": float(log[i, j]),
                "target_text": self.sentences[i],
                "suppressed_text": self.sentences[j],
            }
            for i in range(self.n_sentences)
            for j in range(i)
        ]
        return pd.DataFrame(rows, columns=["target", "suppressed", "kl", "log_kl", "target_text", "suppressed_text"])

    def plot(self, ax=None, log: bool = True, centre: bool = True, labels: bool = True, **kwargs):
        """Heatmap of the matrix (upper triangle and diagonal blank); see ``plots.plot_suppression_matrix``."""
        from anchorlens.suppression.plots import plot_suppression_matrix

        return plot_suppression_matrix(self, ax=ax, log=log, centre=centre, labels=labels, **kwargs)

    def plot_graph(self, top_k: int = 10, ax=None, **kwargs):
        """The ``top_k`` strongest edges drawn as a sentence graph; see ``plots.plot_sentence_graph``."""
        from anchorlens.suppression.plots import plot_sentence_graph

        return plot_sentence_graph(self, top_k=top_k, ax=ax, **kwargs)

    # ------------------------------------------------------------------ I/O

    def __repr__(self) -> str:
        heads = "all heads" if self.heads is None else f"heads {self.heads}"
        return (
            f"SuppressionMatrix({self.n_sentences} sentences, {len(self.layers)} layers, {heads}, "
            f"T={self.temperature}, method={self.method!r})"
        )
