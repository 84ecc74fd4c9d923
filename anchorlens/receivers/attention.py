"""``sentence_attention``: every head's sentence-by-sentence attention matrix from one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import AnchorlensError
from anchorlens.hooks.fused_attention import fused_attention, observe_queries_keys, resolve_attention
from anchorlens.hooks.sentence_pattern import BlockedPatternRecorder, PatternsRecorded, SentencePatternRecorder
from anchorlens.receivers.query_blocks import DEFAULT_BLOCK_TOKENS, blocked_sentence_attention
from anchorlens.receivers.reduce import SentenceReducer, Span
from anchorlens.receivers.scores import PROXIMITY_IGNORE, head_kurtosis, vertical_scores
from anchorlens.results import Result

PROMPT_LABEL = "<prompt>"


@dataclass
class SentenceAttention(Result):
    """Sentence-averaged attention of every head of a model on one trace.

    Attributes:
        matrix: ``[n_layers, n_heads, n_sentences, n_sentences]``; ``matrix[l, h, i, j]`` is the mean
            attention of sentence ``i``'s tokens to sentence ``j``'s tokens in head ``(l, h)``.
        sentences: the sentences' texts (``"<prompt>"`` first when the prompt counts as a sentence).
        token_spans: each sentence's token range ``[start, end)``.
        include_prompt: whether sentence 0 is the prompt.
        model_name: the model that produced it.
    """

    matrix: Float[Tensor, "layer head sentence sentence"]
    sentences: list[str]
    token_spans: list[Span]
    include_prompt: bool = False
    model_name: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_heads(self) -> int:
        return self.matrix.shape[1]

    @property
    def n_sentences(self) -> int:
        return self.matrix.shape[-1]

    def head(self, layer: int, head: int) -> Float[Tensor, "sentence sentence"]:
        """One head's ``[n_sentences, n_sentences]`` matrix."""
        return self.matrix[layer, head]

    def vertical_scores(
        self, proximity_ignore: int = PROXIMITY_IGNORE, depth_control: bool = False
    ) -> Float[Tensor, "layer head sentence"]:
        """Every head's vertical scores (see ``anchorlens.vertical_scores``)."""
        return vertical_scores(self.matrix, proximity_ignore, depth_control)

    def head_kurtosis(
        self, proximity_ignore: int = PROXIMITY_IGNORE, depth_control: bool = False, exclude_layers: Iterable[int] = (0,)
    ) -> Float[Tensor, "layer head"]:
        """Every head's kurtosis of vertical scores (see ``anchorlens.head_kurtosis``)."""
        return head_kurtosis(self.vertical_scores(proximity_ignore, depth_control), exclude_layers)

    def to_dataframe(self, layer: int | None = None, head: int | None = None):
        """Long format, one row per (layer, head, query sentence, key sentence) with ``j <= i``.

        Restrict to one layer and/or head with ``layer=`` / ``head=``.
        """
        import pandas as pd

        layers = range(self.n_layers) if layer is None else [layer]
        heads = range(self.n_heads) if head is None else [head]
        i, j = torch.tril_indices(self.n_sentences, self.n_sentences)
        frames = []
        for lay in layers:
            for hd in heads:
                values = self.matrix[lay, hd, i, j]
                frames.append(
                    pd.DataFrame({"layer": lay, "head": hd, "query": i.numpy(), "key": j.numpy(), "attention": values.numpy()})
                )
        return pd.concat(frames, ignore_index=True)

    def plot(self, layer: int | None = None, head: int | None = None, ax=None, **kwargs):
        """Heatmap of head ``(layer, head)``'s sentence attention (see ``plot_sentence_attention``); by default the
        head of highest kurtosis of vertical scores (the top receiver head on this trace)."""
        from anchorlens.receivers.plots import plot_sentence_attention

        if (layer is None) != (head is None):
            from anchorlens.errors import AnchorlensError

            raise AnchorlensError("pass both layer= and head=, or neither (the top receiver head is shown)")
        if layer is None:
            layer, head = self.top_head()
        return plot_sentence_attention(self, layer, head, ax=ax, **kwargs)

    def top_head(self) -> tuple[int, int]:
        """``(layer, head)`` of highest kurtosis of vertical scores; ``(0, 0)`` when no head has one (a 1-layer
        model, or too few sentences)."""
        kurtosis = torch.nan_to_num(self.head_kurtosis(), nan=float("-inf"))
        if not torch.isfinite(kurtosis).any():
            return 0, 0
        layer, head = divmod(int(kurtosis.argmax()), self.n_heads)
        return layer, head

    def __repr__(self) -> str:
        return (
            f"SentenceAttention({self.n_layers} layers x {self.n_heads} heads x {self.n_sentences} sentences, "
            f"model={self.model_name!r})"
        )


def trace_spans(trace, include_prompt: bool = False) -> tuple[list[Span], list[str]]:
    """The token spans and labels ``sentence_attention`` averages over, prompt first when included.

    >>> spans, labels = trace_spans(trace, include_prompt=True)   # doctest: +SKIP
    >>> labels[0], spans[0]                                        # doctest: +SKIP
    ('<prompt>', (0, 57))
    """
    spans = [tuple(span) for span in trace.token_spans]
    labels = trace.sentence_texts()
    if include_prompt:
        prompt_end = min(trace.prompt_token_end, spans[0][0])
        if prompt_end <= 0:
            raise AnchorlensError(
                "include_prompt=True but the trace has no prompt tokens before its first sentence: "
                "build the trace with a prompt (Trace.from_text(model, cot, prompt=...)) or leave include_prompt off"
            )
        spans = [(0, prompt_end)] + spans
        labels = [PROMPT_LABEL] + labels
    return spans, labels


@torch.inference_mode()
def sentence_attention(
    model,
    trace,
    include_prompt: bool = False,
    stop_early: bool = True,
    attention: str = "auto",
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
) -> SentenceAttention:
    """Sentence-averaged attention of every head of ``model`` on ``trace``, in one forward pass.

    With ``attention="sdpa"`` (the default where the model supports it) the forward runs fused, and each
    layer's pattern is rebuilt from its queries and keys ``block_tokens`` queries at a time and reduced
    to sentences block by block: memory ``O(heads x block_tokens x T)`` per layer instead of
    ``O(heads x T^2)``. With ``attention="eager"`` hooks on each layer's ``hook_pattern`` reduce the
    bridge's own token pattern as it is produced (one layer's pattern at a time). Both give the same
    matrix (tested to 1e-5).

    Args:
        model: a TransformerBridge.
        trace: an ``anchorlens.Trace`` built with this model's tokenizer.
        include_prompt: count the prompt (everything before the chain of thought, BOS included) as one
            more sentence, placed first.
        stop_early: end the forward pass once the last layer's pattern is in (the last attention
            output, MLP and unembedding are not needed).
        attention: ``"auto"`` (SDPA and blocked patterns when supported, else eager with a warning),
            ``"sdpa"`` (refuse an unsupported model) or ``"eager"``.
        block_tokens: query rows per block of the blocked computation (bounds its memory).

    >>> attention = sentence_attention(model, trace)   # doctest: +SKIP
    >>> attention.matrix.shape                         # [n_layers, n_heads, n_sentences, n_sentences]  # doctest: +SKIP
    >>> attention.plot(layer=12, head=3)               # doctest: +SKIP
    """
    if not hasattr(trace, "token_spans"):
        raise AnchorlensError(
            f"sentence_attention takes an anchorlens.Trace, got {type(trace).__name__}: "
            "build one with Trace.from_text(model, cot, prompt=...)"
        )
    spans, labels = trace_spans(trace, include_prompt)
    reducer = SentenceReducer(spans, trace.n_tokens)
    tokens = trace.tokens(model.cfg.device)
    layers = range(model.cfg.n_layers)
    if resolve_attention(model, attention) == "sdpa":
        def reduce(queries, keys, scale, allowed, sinks=None, softcap=None):
            return blocked_sentence_attention(queries, keys, scale, reducer, allowed, block_tokens, sinks=sinks, softcap=softcap)

        recorder = BlockedPatternRecorder(reduce, layers, stop_early=stop_early)
        with fused_attention(model), observe_queries_keys(model, recorder):
            try:
                model(tokens, return_type=None)
            except PatternsRecorded:
                pass
    else:
        recorder = SentencePatternRecorder(reducer, layers, stop_early=stop_early)
        try:
            model.run_with_hooks(tokens, fwd_hooks=recorder.fwd_hooks(), return_type=None)
        except PatternsRecorded:
            pass
    matrix = recorder.stacked()[:, 0].float().cpu()  # one sequence: drop the batch axis
    name = getattr(model, "anchorlens_name", None) or getattr(model.cfg, "model_name", None)
    return SentenceAttention(matrix, labels, spans, include_prompt, name)
