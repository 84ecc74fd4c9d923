"""The taxonomy classifier's in-context SmolLM2 sentence states, and its per-class probabilities.

Ground truth: a naive pooling (a Python loop over the tokenizer's character offsets) of the hidden states of
the whole, untruncated embedded model; causality and context are checked with planted edits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anchorlens.taxonomy.lm_states as lm_states
from anchorlens.errors import AnchorlensError
from anchorlens.taxonomy import SENTENCE_CATEGORIES, classify_sentences
from anchorlens.taxonomy.lm_states import (
    HEADER,
    SentenceStates,
    pool_by_sentence,
    sentence_char_spans,
    token_sentence_index,
)

SENTENCES = [
    "Okay, so I need to find 6 times 7.",
    "Let me recall that multiplication is repeated addition.",
    "6 * 7 = 42.",
    "Wait, let me double-check that.",
    "7 + 7 + 7 + 7 + 7 + 7 = 42, yes.",
    "So the answer is \\boxed{42}.",
]


def test_spans_cover_each_sentence_exactly():
    text, spans = sentence_char_spans(SENTENCES)
    assert [text[a:b] for a, b in spans] == SENTENCES
    assert text == " ".join(SENTENCES)


def test_token_index_and_pooling_match_a_loop():
    rng = np.random.default_rng(0)
    text, spans = sentence_char_spans(SENTENCES)
    cuts = np.sort(rng.choice(np.arange(1, len(text)), size=40, replace=False))
    edges = [0, *cuts.tolist(), len(text)]
    offsets = np.array(list(zip(edges[:-1], edges[1:])))
    index = token_sentence_index(offsets, spans)
    for (a, b), k in zip(offsets, index):  # naive: which span holds the token's middle
        middle = (a + b) / 2
        holders = [j for j, (s, e) in enumerate(spans) if s <= middle < e]
        assert k == (holders[0] if holders else -1)
    states = rng.normal(size=(len(offsets), 5)).astype(np.float32)
    pooled = pool_by_sentence(states, index, len(SENTENCES))
    for j in range(len(SENTENCES)):
        mine = states[index == j]
        if len(mine):
            np.testing.assert_allclose(pooled[j], mine.mean(0), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def states(one_torch_thread):
    return SentenceStates(layers=(3, 7))


@pytest.mark.slow
@torch.no_grad()  # a decorator, not set_grad_enabled(False): that leaked into every later test (training failed)
def test_states_equal_naive_pooling_of_the_whole_model(states):
    from transformers import AutoModelForCausalLM

    got = states(SENTENCES)
    full = AutoModelForCausalLM.from_pretrained(states.tokenizer.name_or_path, dtype=torch.float32).eval()
    text = HEADER + " ".join(SENTENCES)
    encoded = states.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    hidden = full(torch.tensor([encoded["input_ids"]]), output_hidden_states=True).hidden_states
    assert len(hidden) == 31  # embeddings + 30 layers: the feature model is cut, the naive one is not
    start = len(HEADER)
    for sentence, got_row3, got_row7 in zip(SENTENCES, got[3], got[7]):
        end = start + len(sentence)
        mine = [t for t, (a, b) in enumerate(encoded["offset_mapping"]) if start <= (a + b) / 2 < end]
        np.testing.assert_allclose(got_row3, hidden[3][0, mine].mean(0).numpy(), atol=1e-4)
        np.testing.assert_allclose(got_row7, hidden[7][0, mine].mean(0).numpy(), atol=1e-4)
        start = end + 1


@pytest.mark.slow
def test_states_are_causal_and_read_the_context(states):
    base = states(SENTENCES)[7]
    later_edited = states(SENTENCES[:3] + ["Hmm, I am not sure about this at all."] + SENTENCES[4:])[7]
    np.testing.assert_allclose(later_edited[:3], base[:3], atol=1e-5)  # earlier sentences see nothing later
    assert np.abs(later_edited[3] - base[3]).max() > 1e-2
    # The same sentence after a different context gets a different state (what MiniLM alone cannot see).
    context = ["Hmm, wait, I made an error before.", "Let me verify the earlier step."]
    other_context = states(context + SENTENCES[2:3])[7]
    assert np.abs(other_context[-1] - base[2]).max() > 1e-2


@pytest.mark.slow
def test_long_traces_run_in_windows_that_keep_context(states, monkeypatch):
    sentences = SENTENCES * 3
    single = states(sentences)[7]

    def cosines(max_tokens, context_tokens):
        monkeypatch.setattr(lm_states, "MAX_TOKENS", max_tokens)
        monkeypatch.setattr(lm_states, "CONTEXT_TOKENS", context_tokens)
        windowed = states(sentences)[7]
        return (windowed * single).sum(1) / np.linalg.norm(windowed, axis=1) / np.linalg.norm(single, axis=1)

    assert cosines(64, 48).min() > 0.97  # windows of 64 tokens, 48 of them context
    assert cosines(24, 2).min() < 0.95  # control: without context the windowed states are visibly different


def test_bad_input(states):
    with pytest.raises(AnchorlensError, match="no sentences"):
        states([])
    with pytest.raises(AnchorlensError, match="layers"):
        SentenceStates(layers=(0,))


@pytest.mark.slow
def test_probabilities_on_request(one_torch_thread):
    tags, proba = classify_sentences(SENTENCES, probabilities=True)
    assert proba.shape == (len(SENTENCES), len(SENTENCE_CATEGORIES))
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert tags == [SENTENCE_CATEGORIES[k] for k in proba.argmax(1)]
    assert tags == classify_sentences(SENTENCES)
