"""Ground truth: a model with a planted receiver head must be recovered by the whole pipeline.

``planted_receiver_model`` sets head (1, 3) of a random 3-layer GQA Llama to attend from every position
to the token " anchor". On traces where one sentence holds that word, receiver_heads must rank (1, 3)
first and receiver scores must put that sentence on top. A transposed or mis-normalised reduction, a
kurtosis along the wrong axis, or a wrong ranking would each break these tests.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from anchorlens import Trace
from anchorlens.receivers import ReceiverHeads, planted_receiver_model, receiver_heads, sentence_attention

FILLER = [
    "We start with the numbers given in the problem.",
    "Then we add them up carefully.",
    "The sum is twelve so far.",
    "Next we look at the other term.",
    "We multiply both sides by two.",
    "That gives twenty four in total.",
    "Now subtract the smaller value.",
    "The remainder is eighteen.",
    "We verify this by substitution.",
    "Everything is consistent here.",
    "So the result holds for now.",
    "Let us double check once more.",
    "Yes, the answer is eighteen.",
    "We write it down neatly.",
]
MARKED = "This is the anchor of the whole argument."


def organism_trace(model, marked_at: int) -> Trace:
    sentences = FILLER[:marked_at] + [MARKED] + FILLER[marked_at:]
    trace = Trace.from_text(model, " ".join(sentences), prompt="Problem: compute it.\n")
    assert trace.sentence_texts()[marked_at] == MARKED
    return trace


@pytest.fixture(scope="module")
def organism():
    return planted_receiver_model(layer=1, head=3)


@pytest.fixture(scope="module")
def organism_traces(organism):
    return [organism_trace(organism, at) for at in (2, 4, 6, 9)]


@pytest.mark.slow
def test_planted_head_attends_to_the_marked_sentence(organism, organism_traces):
    trace = organism_traces[1]
    matrix = sentence_attention(organism, trace).head(1, 3)
    later = matrix[5:, :]  # every sentence after the marked one (index 4)
    assert torch.all(later.argmax(-1) == 4)
    # Nearly all of a later token's attention is on the marked sentence's one marker token, and the
    # sentence mean divides it by the sentence's token count.
    n_marked = trace.token_spans[4][1] - trace.token_spans[4][0]
    torch.testing.assert_close(later[:, 4], torch.full_like(later[:, 4], 1.0 / n_marked), rtol=0.05, atol=0)


@pytest.mark.slow
def test_receiver_heads_recover_the_planted_head_and_sentence(organism, organism_traces):
    heads = receiver_heads(organism, organism_traces, top_k=3, progress=False)
    assert heads.heads[0] == (1, 3)
    assert list(heads)[0] == (1, 3) and heads[0] == (1, 3) and len(heads) == 3
    assert torch.isnan(heads.kurtosis[0]).all()  # layer 0 excluded
    for t, at in enumerate((2, 4, 6, 9)):
        scores = heads.scores(t)
        assert int(torch.nan_to_num(scores, nan=-1.0).argmax()) == at
        # with only the planted head, the marked sentence stands out by an order of magnitude
        planted = heads.scores(t, top_k=1)
        others = torch.cat([planted[:at], planted[at + 1 :]])
        assert planted[at] > 10 * torch.nan_to_num(others, nan=0.0).max()
    # The planted head is planted on every trace, so the halves agree on it.
    assert heads.reliability(n_splits=10).r > 0.5


def test_without_the_marker_no_head_stands_out(organism):
    plain = Trace.from_text(organism, " ".join(FILLER), prompt="Problem: compute it.\n")
    heads = receiver_heads(organism, [plain], top_k=3, progress=False)
    assert heads.kurtosis[1, 3] < 3.0  # the planted head has nothing to receive


def test_prompt_as_a_sentence(organism, organism_traces):
    trace = organism_traces[0]
    with_prompt = sentence_attention(organism, trace, include_prompt=True)
    without = sentence_attention(organism, trace)
    assert with_prompt.sentences[0] == "<prompt>" and with_prompt.n_sentences == without.n_sentences + 1
    assert with_prompt.token_spans[0] == (0, trace.prompt_token_end)
    torch.testing.assert_close(with_prompt.matrix[:, :, 1:, 1:], without.matrix)
    heads = receiver_heads(organism, [trace], top_k=1, include_prompt=True, progress=False)
    assert heads.heads == [(1, 3)]
    assert int(torch.nan_to_num(heads.scores(0), nan=-1.0).argmax()) == 2 + 1  # shifted by the prompt


def test_receiver_heads_results_round_trip(organism, organism_traces, tmp_path):
    heads = receiver_heads(organism, organism_traces[:2], top_k=2, progress=False)
    loaded = ReceiverHeads.load(heads.save(tmp_path / "heads.npz"))
    assert loaded.heads == heads.heads and loaded.sentences == heads.sentences
    for a, b in zip(loaded.vertical, heads.vertical):
        torch.testing.assert_close(a, b, equal_nan=True)
    frame = heads.to_dataframe()
    assert len(frame) == 3 * 4 and frame.loc[frame.receiver, ["layer", "head"]].values.tolist()[0] == [1, 3]
    assert list(heads.sentence_dataframe(0).columns) == ["sentence", "text", "receiver_score"]
    assert heads.plot() is not None and heads.plot_scores(0) is not None
    assert "(1, 3)" in repr(heads)
    with pytest.raises(Exception, match="does not exist"):
        heads.scores(5)


def test_sentence_attention_result_object(organism, organism_traces, tmp_path):
    from anchorlens.receivers import SentenceAttention

    result = sentence_attention(organism, organism_traces[0])
    loaded = SentenceAttention.load(result.save(tmp_path / "attention"))
    assert torch.equal(loaded.matrix, result.matrix) and loaded.sentences == result.sentences
    assert loaded.token_spans == result.token_spans and loaded.model_name == result.model_name
    n = result.n_sentences
    frame = result.to_dataframe()
    assert len(frame) == 3 * 4 * n * (n + 1) // 2  # lower triangle, diagonal included
    one = result.to_dataframe(layer=1, head=3)
    row = one[(one["query"] == 6) & (one["key"] == 2)]
    assert row.attention.item() == pytest.approx(result.matrix[1, 3, 6, 2].item())
    assert result.plot(1, 3) is not None
    assert result.head_kurtosis().shape == (3, 4) and result.vertical_scores().shape == (3, 4, n)
    assert "3 layers x 4 heads" in repr(result)


def test_asking_for_more_heads_than_have_a_kurtosis_warns_and_returns_those(organism, organism_traces):
    from anchorlens.receivers.heads import FewerHeadsWarning

    n_finite = int(torch.isfinite(receiver_heads(organism, organism_traces[:1], top_k=1, progress=False).kurtosis).sum())
    with pytest.warns(FewerHeadsWarning, match=f"only {n_finite}"):
        heads = receiver_heads(organism, organism_traces[:1], top_k=n_finite + 5, progress=False)
    assert len(heads.heads) == n_finite and heads.heads[0] == (1, 3)  # the planted head still first
