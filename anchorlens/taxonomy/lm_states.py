"""Contextual sentence features for the taxonomy classifier: the embedded SmolLM2's residual stream.

A sentence's category depends on what came before it (a computation inside a verification is
self_checking), so the classifier also reads a language model's hidden state *in context*: the whole chain
of thought goes through the first layers of the embedded SmolLM2-135M-Instruct in one causal forward, and
each sentence is described by the mean of its tokens' residual stream after layer ``layer``.

The feature model is always the embedded SmolLM2 (the classifier was trained on its states), whatever model
produced or analyses the trace. Only the layers up to the deepest one read are run (no LM head).

>>> states = SentenceStates(layers=(20,))                                       # doctest: +SKIP
>>> states(["Let me add 2 and 3.", "2 + 3 = 5."])[20].shape                      # doctest: +SKIP
(2, 576)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

from anchorlens.errors import AnchorlensError

#: What the token stream looks like, exactly as in training: a fixed header (the first tokens of a sequence
#: act as an attention sink, so no sentence should be first), then the sentences joined by one space.
HEADER = "Solution:\n"
SEPARATOR = " "
#: Tokens per forward; longer traces are run in windows that each keep ``CONTEXT_TOKENS`` of what precedes.
MAX_TOKENS = 8192
CONTEXT_TOKENS = 2048


def sentence_char_spans(sentences: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The joined text and each sentence's ``[start, end)`` character span in it.

    >>> sentence_char_spans(["Ab.", "Cd."])
    ('Ab. Cd.', [(0, 3), (4, 7)])
    """
    text, spans = "", []
    for k, s in enumerate(sentences):
        if k:
            text += SEPARATOR
        spans.append((len(text), len(text) + len(s)))
        text += s
    return text, spans


def token_sentence_index(
    offsets: Int[np.ndarray, "token 2"], spans: Sequence[tuple[int, int]]
) -> Int[np.ndarray, "token"]:
    """Which sentence each token belongs to (by the middle of its characters); -1 for none (separators).

    >>> token_sentence_index(np.array([[0, 2], [2, 3], [3, 4], [4, 7]]), [(0, 3), (4, 7)]).tolist()
    [0, 0, -1, 1]
    """
    middle = (offsets[:, 0] + offsets[:, 1]) / 2
    starts = np.array([a for a, _ in spans])
    ends = np.array([b for _, b in spans])
    k = np.searchsorted(starts, middle, side="right") - 1
    inside = (k >= 0) & (middle < ends[np.clip(k, 0, None)]) & (offsets[:, 1] > offsets[:, 0])
    return np.where(inside, k, -1)


def pool_by_sentence(
    states: Float[np.ndarray, "token d"], index: Int[np.ndarray, "token"], n_sentences: int
) -> Float[np.ndarray, "sentence d"]:
    """Mean of the token states of each sentence; a sentence with no token of its own (possible when a token
    straddles two sentences) takes the state of the last token that starts before its end.

    >>> pool_by_sentence(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2).tolist()
    [[2.0], [5.0]]
    """
    d = states.shape[1]
    sums = np.zeros((n_sentences, d), dtype=np.float64)
    counts = np.zeros(n_sentences)
    keep = index >= 0
    np.add.at(sums, index[keep], states[keep])
    np.add.at(counts, index[keep], 1)
    for k in np.flatnonzero(counts == 0):
        before = np.flatnonzero((index >= 0) & (index < k))
        sums[k] = states[before[-1]] if len(before) else states[0]
        counts[k] = 1
    return (sums / counts[:, None]).astype(np.float32)


class SentenceStates:
    """The embedded SmolLM2's residual stream after each of ``layers``, pooled per sentence of one trace.

    Calling it on the sentences of ONE chain of thought (in order) returns ``{layer: [sentence, d_model]}``.
    """

    def __init__(self, layers: Sequence[int] = (20,), device: str = "cpu", model_dir=None):
        from anchorlens.models import embedded_model_dir, load_backbone

        if not layers or min(layers) < 1:
            raise AnchorlensError(f"layers must be positive layer numbers, got {tuple(layers)}")
        self.layers = tuple(sorted(set(int(k) for k in layers)))
        # Run one layer past the deepest one read: the model's last recorded state may be after its final norm.
        self.tokenizer, self.model = load_backbone(model_dir or embedded_model_dir(), self.layers[-1] + 1, device)
        self.device = device

    @torch.no_grad()
    def __call__(self, sentences: Sequence[str]) -> dict[int, Float[np.ndarray, "sentence d"]]:
        sentences = list(sentences)
        if not sentences:
            raise AnchorlensError("no sentences: pass the sentences of a trace, in order")
        text, spans = sentence_char_spans(sentences)
        text, spans = HEADER + text, [(a + len(HEADER), b + len(HEADER)) for a, b in spans]
        encoded = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids = np.asarray(encoded["input_ids"])
        index = token_sentence_index(np.asarray(encoded["offset_mapping"]), spans)
        n_header = int((np.asarray(encoded["offset_mapping"])[:, 1] <= len(HEADER)).sum())
        states = self._states(ids, n_header)
        return {layer: pool_by_sentence(states[layer], index, len(sentences)) for layer in self.layers}

    def _states(self, ids: Int[np.ndarray, "token"], n_header: int = 0) -> dict[int, Float[np.ndarray, "token d"]]:
        """Residual stream per token. Traces past ``MAX_TOKENS`` run in windows: each repeats the header (its
        first ``n_header`` tokens) and the ``CONTEXT_TOKENS`` before the window's new tokens."""
        out = {layer: [] for layer in self.layers}
        start = 0
        while start < len(ids):
            if start == 0:
                window, keep_from = ids[:MAX_TOKENS], 0
            else:
                left = max(n_header, start - CONTEXT_TOKENS)
                new = MAX_TOKENS - n_header - (start - left)
                window = np.concatenate([ids[:n_header], ids[left : start + new]])
                keep_from = n_header + start - left
            hidden = self.model(input_ids=torch.tensor(window, device=self.device)[None], output_hidden_states=True)
            for layer in self.layers:
                out[layer].append(hidden.hidden_states[layer][0, keep_from:].detach().float().cpu().numpy())
            start += len(window) - keep_from
        return {layer: np.concatenate(parts) for layer, parts in out.items()}
