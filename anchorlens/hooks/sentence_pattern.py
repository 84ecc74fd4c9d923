"""Hooks that reduce each layer's attention pattern to sentences while the forward pass produces it.

A full cache of token patterns costs ``n_layers x n_heads x n_tokens^2`` floats (17 GB for SmolLM2 at
4k tokens); these hooks keep only ``n_heads x n_sentences^2`` per layer. Each hook returns ``None``, so the
model's computation is untouched, and holds no reference to the pattern, which is freed as soon as the
attention layer is done with it.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from anchorlens.errors import UnsupportedArchitectureError


class PatternsRecorded(Exception):
    """Raised by the last recording hook when ``stop_early`` is on: every pattern is in, skip the rest.

    The rest being the last layer's value mixing, its MLP and the unembedding (about a fifth of a
    small model's forward), whose outputs the sentence matrices do not need.
    """


class SentencePatternRecorder:
    """Forward hooks at ``blocks.{l}.attn.hook_pattern`` that store sentence-averaged attention per layer.

    ``reducer`` maps a pattern ``[batch, head, query, key]`` to ``[batch, head, sentence, sentence]``
    (an ``anchorlens.receivers.reduce.SentenceReducer``).

    >>> recorder = SentencePatternRecorder(SentenceReducer(trace.token_spans, trace.n_tokens), range(30))  # doctest: +SKIP
    >>> model.run_with_hooks(trace.tokens(), fwd_hooks=recorder.fwd_hooks())                             # doctest: +SKIP
    >>> recorder.stacked().shape   # [layer, batch, head, sentence, sentence]                             # doctest: +SKIP
    """

    def __init__(self, reducer, layers: Sequence[int], stop_early: bool = False):
        self.reducer = reducer
        self.layers = list(layers)
        self.stop_early = stop_early
        self.results: dict[int, Tensor] = {}

    def fwd_hooks(self) -> list[tuple[str, object]]:
        """``(hook name, function)`` pairs for ``model.run_with_hooks`` / ``model.hooks``."""
        return [(get_act_name("pattern", layer), partial(self._record, layer=layer)) for layer in self.layers]

    def _record(self, pattern: Float[Tensor, "batch head query key"], hook, layer: int) -> None:
        self.results[layer] = self.reducer(pattern)
        if self.stop_early and len(self.results) == len(self.layers):
            raise PatternsRecorded

    def stacked(self) -> Float[Tensor, "layer batch head sentence sentence"]:
        """The recorded matrices in the order of ``layers``."""
        missing = [layer for layer in self.layers if layer not in self.results]
        if missing:
            raise UnsupportedArchitectureError(
                f"no attention pattern was recorded for layers {missing}: the model did not fire "
                "hook_pattern there (run the forward pass with these hooks first)"
            )
        return torch.stack([self.results[layer] for layer in self.layers])


class BlockedPatternRecorder(SentencePatternRecorder):
    """The fused-attention counterpart of ``SentencePatternRecorder``: an ``observe_queries_keys`` observer.

    ``reduce`` maps ``(queries, keys, scale, allowed, **features)`` of a layer to ``[batch, head, sentence, sentence]``
    (``anchorlens.receivers.query_blocks.blocked_sentence_attention`` with its reducer bound), so the pattern
    is rebuilt a block of queries at a time instead of being materialised by the attention bridge.

    >>> recorder = BlockedPatternRecorder(reduce, range(30))                                        # doctest: +SKIP
    >>> with fused_attention(model), observe_queries_keys(model, recorder): model(tokens)            # doctest: +SKIP
    """

    def fwd_hooks(self) -> list[tuple[str, object]]:
        raise TypeError("BlockedPatternRecorder is an observe_queries_keys observer, not a set of hooks")

    def __call__(self, layer: int, queries: Tensor, keys: Tensor, scale: float, allowed: Tensor | None,
                 **features) -> None:
        if layer not in self.layers:
            return
        self.results[layer] = self.reducer(queries, keys, scale, allowed, **features)  # features: sinks, softcap
        if self.stop_early and len(self.results) == len(self.layers):
            raise PatternsRecorded
