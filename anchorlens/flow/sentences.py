"""Information flow between the sentences of a chain of thought: a fourth view next to receiver heads,
suppression and resampling.

- ``matrix[target sentence, source sentence]``: mean over layers and over the target sentence's tokens of the
  contributions its tokens take from the source sentence's tokens (summed over those), before thresholding;
- ``to_answer[sentence]``: how much the sentence's tokens feed the residual at the final position (the
  token influence of ``InformationFlow.token_influence``: every path through every layer, summed).

``sentence_flow`` computes both without any ``[tokens, tokens]`` array (``anchorlens.flow.stream``:
query blocks, and the token influence as a backward pass over layers rerun from residual checkpoints), so
paper-length traces fit in about a plain forward's memory; ``information_flow`` keeps the full token-level
result for short texts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.spans import membership_matrix
from anchorlens.flow.checks import FlowFallbackWarning
from anchorlens.flow.information_flow import FlowInputError, information_flow
from anchorlens.results import Result


def span_matrix(spans: list[tuple[int, int]], n_tokens: int) -> Float[Tensor, "sentence token"]:
    """``[sentence, token]`` indicator of each sentence's half-open token span."""
    return membership_matrix(spans, n_tokens, normalise=False).T.contiguous()


def sentence_flow_matrix(attention: Float[Tensor, "layer target source"], spans) -> Float[Tensor, "target source"]:
    """Mean over layers and target tokens of the contribution taken from each source sentence's tokens."""
    members = span_matrix(spans, attention.shape[-1])
    causal = torch.tril(attention.mean(0))  # future sources carry only the eps floor
    summed = members @ causal @ members.T  # [target sentence, source sentence], summed over both token sets
    return summed / members.sum(1, keepdim=True)


@dataclass
class SentenceFlow(Result):
    """Sentence-level information flow of one trace (see the module docstring)."""

    matrix: Float[Tensor, "target source"]
    to_answer: Float[Tensor, " sentence"]
    sentences: list[str]
    token_spans: list[tuple[int, int]]
    distance: str = "l1"

    def to_dataframe(self):
        """One row per sentence: its text, how much it feeds the answer, how much later sentences draw on it."""
        import pandas as pd

        later = torch.tril(self.matrix, diagonal=-1)  # [target, source] with target after source
        return pd.DataFrame(
            {
                "sentence": range(len(self.sentences)),
                "text": self.sentences,
                "flow_to_answer": self.to_answer.numpy(),
                "flow_to_later": later.sum(0).numpy(),  # summed over the later sentences that draw on it
            }
        )

    def plot(self, ax=None):
        """The sentence x sentence matrix (lower triangle) and the flow to the answer as a bar on the right."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 5))
        shown = self.matrix.clone().masked_fill(~torch.tril(torch.ones_like(self.matrix, dtype=torch.bool)), float("nan"))
        image = ax.imshow(shown.numpy(), cmap="magma")
        ax.set_xlabel("source sentence")
        ax.set_ylabel("target sentence")
        ax.set_title(f"sentence information flow ({self.distance})")
        ax.figure.colorbar(image, ax=ax)
        return ax


def sentence_flow(
    model, trace, distance: str = "l1", flow=None, position: int = -1, block_tokens: int | None = None,
    checkpoint_every: int | None = None, progress: bool = True,
) -> SentenceFlow:
    """Information flow of a ``Trace`` aggregated to its sentences (``flow``: one already computed on it).

    ``position``: the token whose final residual ``to_answer`` traces back (default the last; negative
    counts from the end). Without ``flow``, on a model that runs fused attention (L1 or L2),
    nothing of size ``[tokens, tokens]`` is kept (``anchorlens.flow.stream``: ``block_tokens``
    target rows at a time, layers rerun from a checkpoint every ``checkpoint_every`` layers); otherwise
    the token-level ``information_flow`` is computed whole (quadratic memory: short texts).

    >>> sentences = sentence_flow(model, trace, distance="l2")   # doctest: +SKIP
    >>> sentences.to_answer, sentences.matrix                      # doctest: +SKIP
    """
    from anchorlens.hooks.architecture import streamed_flow_refusal
    from anchorlens.hooks.fused_attention import resolve_attention
    from anchorlens.flow.contributions import DISTANCES

    if not hasattr(trace, "token_spans"):
        raise FlowInputError(f"sentence_flow needs a Trace (sentences mapped onto tokens), got {type(trace).__name__}")
    if trace.n_sentences == 0:
        raise FlowInputError("the trace has no sentences: nothing to aggregate")
    if distance not in DISTANCES:
        raise FlowInputError(f"distance must be one of {DISTANCES}, got {distance!r}")
    streamable = flow is None and resolve_attention(model, "auto") == "sdpa"
    refusal = streamed_flow_refusal(model) if streamable else None
    if refusal is not None:
        warnings.warn(f"sentence flow from the token-level flow (memory quadratic in the trace length): {refusal}",
                      FlowFallbackWarning, stacklevel=2)
        streamable = False
    if streamable:
        from anchorlens.flow.stream import DEFAULT_BLOCK_TOKENS, streamed_sentence_flow

        tokens = trace.tokens(model.cfg.device)
        n_tokens = tokens.shape[-1]
        members = span_matrix(trace.token_spans, n_tokens)
        matrix, influence = streamed_sentence_flow(
            model, tokens, members, check_position(position, n_tokens), block_tokens or DEFAULT_BLOCK_TOKENS, checkpoint_every,
            distance, progress=progress,
        )
        return SentenceFlow(matrix, members @ influence, trace.sentence_texts(), list(trace.token_spans), distance)
    if flow is None:
        flow = information_flow(model, trace, distance=distance, keep_heads=False, progress=progress)
    members = span_matrix(trace.token_spans, flow.n_tokens)
    influence = flow.token_influence(position)
    return SentenceFlow(
        matrix=sentence_flow_matrix(flow.attention, trace.token_spans),
        to_answer=members @ influence,
        sentences=trace.sentence_texts(),
        token_spans=list(trace.token_spans),
        distance=flow.distance,
    )


def check_position(position: int, n_tokens: int) -> int:
    """``position`` as a non-negative index (negative counts from the end); clear error if out of range."""
    pos = int(position)
    if not -n_tokens <= pos < n_tokens:
        raise FlowInputError(f"position {position} is out of range for {n_tokens} tokens (0..{n_tokens - 1}, or negative from the end)")
    return pos % n_tokens
