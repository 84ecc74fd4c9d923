"""``suppression_matrix``: hide each sentence from the attention and measure what later sentences lose."""

from __future__ import annotations

from typing import Sequence

import torch

from anchorlens.hooks.fused_attention import fused_attention
from anchorlens.suppression.matrix import DEFAULT_TEMPERATURE, sentence_matrix, shift_to_tokens
from anchorlens.suppression.result import SuppressionMatrix
from anchorlens.suppression.runner import (
    DEFAULT_MAX_WASTE,
    METHODS,
    Baseline,
    fast_position_kl,
    naive_position_kl,
    run_baseline,
)
from anchorlens.suppression.validation import (
    SuppressionInputError,
    check_temperature,
    check_trace,
    resolve_heads,
    resolve_layers,
    resolve_sentences,
)


def suppression_matrix(
    model,
    trace,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    method: str = "fast",
    batch_positions: int | None = None,
    max_waste: float = DEFAULT_MAX_WASTE,
    max_batch: int | None = None,
    progress: bool = True,
    sentences: Sequence[int] | None = None,
    attention: str = "auto",
) -> SuppressionMatrix:
    """The sentence-to-sentence causal matrix of a trace (Thought Anchors' attention suppression).

    For every sentence ``j`` the pre-softmax attention scores of ``j``'s key positions are set to the dtype's
    minimum (all queries; the chosen ``layers`` and ``heads``, all by default), and each later sentence ``i``
    scores ``S[i, j]`` = mean over its tokens of ``KL(P_base || P_suppressed)`` at ``temperature``, over the full
    vocabulary. See ``SuppressionMatrix`` for the layout.

    Args:
        model: a TransformerBridge (``load_model``, ``random_model``).
        trace: a ``Trace`` tokenized for this model, with at least two sentences.
        layers: layers to suppress in (int or list; None: all).
        heads: query heads to suppress in every chosen layer (None: all).
        temperature: softmax temperature of both distributions (0.6 as published).
        method: ``"fast"`` (reuses the baseline's keys and values for the unchanged prefix, batches
            consecutive sentences) or ``"naive"`` (one full forward per sentence). Equal up to float rounding.
        batch_positions: fast method: at most this many (rows x positions) per forward; bounds memory
            (the suppressed logits of a batch take ``batch_positions x vocabulary`` floats). None: 4096
            on a CPU; on a CUDA device as many as half its free memory holds (``default_batch_positions``).
        max_waste: fast method: share of a batch's work that may be recomputed needlessly for batching.
        max_batch: fast method: at most this many sentences per forward. None: 1 on a CPU (batching
            only adds recomputation there), otherwise bounded by ``batch_positions`` and ``max_waste``.
        progress: show a tqdm bar.
        sentences: suppress only these sentences (None: all); the other columns of ``kl`` and rows of
            ``token_kl`` are NaN. Costs scale with the number suppressed.
        attention: ``"auto"`` (fused SDPA attention with suppression as a mask on the suppressed key
            columns where the model supports it, else eager with a warning), ``"sdpa"`` or ``"eager"``
            (``hook_attn_scores`` hooks). Equal to float rounding (tested: per-token KL within 1e-4).

    >>> model = load_model()                                                    # doctest: +SKIP
    >>> trace = Trace.from_text(model, "My friend is Zorblat. It rains. His name is Zorblat.")  # doctest: +SKIP
    >>> result = suppression_matrix(model, trace)                               # doctest: +SKIP
    >>> result.kl[2].nan_to_num(-1).argmax()                                   # doctest: +SKIP
    tensor(0)
    """
    check_trace(model, trace)
    layer_list = resolve_layers(model, layers)
    head_list = resolve_heads(model, heads)
    temperature = check_temperature(temperature)
    check_method(method)
    suppressed = resolve_sentences(trace, sentences)
    tokens = trace.tokens(model.cfg.device)
    with fused_attention(model, attention):
        baseline = run_baseline(model, tokens, temperature, keep_cache=method == "fast")
        token_kl = suppressed_token_kl(
            model, tokens, baseline, trace.token_spans, layer_list, head_list, method,
            batch_positions, max_waste, max_batch, progress, suppressed,
        )
    return SuppressionMatrix(
        kl=sentence_matrix(token_kl, trace.token_spans),
        token_kl=token_kl,
        token_spans=[tuple(span) for span in trace.token_spans],
        sentences=trace.sentence_texts(),
        layers=layer_list,
        heads=head_list,
        temperature=temperature,
        method=method,
        model_name=trace.model_name,
    )


def suppressed_token_kl(
    model,
    tokens: torch.Tensor,
    baseline: Baseline,
    spans,
    layers: list[int],
    heads: list[int] | None,
    method: str = "fast",
    batch_positions: int | None = None,
    max_waste: float = DEFAULT_MAX_WASTE,
    max_batch: int | None = None,
    progress: bool = True,
    suppressed: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-token KL ``[sentence, token]`` by either method (already shifted); NaN rows for unsuppressed sentences."""
    suppressed = list(range(len(spans))) if suppressed is None else list(suppressed)
    if method == "fast":
        by_position = fast_position_kl(
            model, tokens, baseline, spans, suppressed, layers, heads, batch_positions, max_waste, max_batch, progress
        )
    else:
        by_position = naive_position_kl(model, tokens, baseline, spans, suppressed, layers, heads, progress)
    out = torch.full((len(spans), tokens.shape[1]), float("nan"))
    out[suppressed] = shift_to_tokens(by_position)
    return out


def check_method(method: str) -> None:
    """Refuse an unknown method name (``"fast"`` or ``"naive"``)."""
    if method not in METHODS:
        raise SuppressionInputError(f"unknown method {method!r}: choose 'fast' (default) or 'naive'")
