"""Sentence-level information flow of a Trace, and its place in ``analyze`` next to the other views."""

from __future__ import annotations

import pytest
import torch

from anchorlens import Analysis, Trace, analyze
from anchorlens.tracing import FlowInputError, SentenceFlow, information_flow, sentence_flow
from anchorlens.tracing.flow_organism import planted_route_model

COT = "We start here. This is the anchor of it. Then more words follow. So we end"


def test_sentence_flow_sums_token_flow_and_finds_the_planted_sentence(one_torch_thread, tmp_path):
    model = planted_route_model(planted=True)
    trace = Trace.from_text(model, COT, check_length=False)
    flow = information_flow(model, trace)
    sentences = sentence_flow(model, trace, flow=flow)
    # naive aggregation, token by token
    for t, (ts, te) in enumerate(trace.token_spans):
        for s, (ss, se) in enumerate(trace.token_spans):
            expected = sum(float(flow.attention[:, i, j].mean()) for i in range(ts, te) for j in range(ss, min(se, i + 1))) / (te - ts)
            assert abs(float(sentences.matrix[t, s]) - expected) < 1e-5
    influence = flow.token_influence(-1)
    for s, (start, end) in enumerate(trace.token_spans):
        assert abs(float(sentences.to_answer[s]) - float(influence[start:end].sum())) < 1e-6
    # the sentence holding the marker that the planted head copies feeds the last token most, by far
    assert int(sentences.to_answer.argmax()) == 1 and sentences.to_answer[1] > 0.6, sentences.to_answer
    control_model = planted_route_model(planted=False)
    control = sentence_flow(control_model, Trace.from_text(control_model, COT, check_length=False))
    assert control.to_answer[1] < 0.4, control.to_answer
    loaded = SentenceFlow.load(sentences.save(tmp_path / "s"))
    torch.testing.assert_close(loaded.matrix, sentences.matrix)
    frame = sentences.to_dataframe()
    assert list(frame.columns) == ["sentence", "text", "flow_to_answer", "flow_to_later"]
    later = [float(sentences.matrix[s + 1 :, s].sum()) for s in range(trace.n_sentences)]
    assert frame["flow_to_later"].tolist() == pytest.approx(later) and later[-1] == 0 and later[0] > 0


def test_sentence_flow_needs_a_trace(tiny_llama):
    with pytest.raises(FlowInputError, match="needs a Trace"):
        sentence_flow(tiny_llama, "just a string")


@pytest.mark.slow
def test_analyze_adds_the_flow_view_and_rank_correlations(smol, tmp_path, one_torch_thread):
    trace = Trace.from_text(smol, "We need 6 times 7. 6 * 7 = 42. Let me check: 6 * 7 is 42. So the answer is \\boxed{42}.")
    analysis = analyze(smol, tmp_path / "out", trace=trace, steps=("receivers", "suppression", "flow"), progress=False)
    frame = analysis.to_dataframe()
    assert "flow_to_answer" in frame and frame["flow_to_answer"].notna().all()
    correlations = analysis.view_correlations()
    assert {"suppression_out_kl", "flow_to_answer"} <= set(correlations.columns)
    assert (tmp_path / "out" / "view_correlations.csv").exists()
    assert "Rank correlations between views" in (tmp_path / "out" / "report.html").read_text()
    again = Analysis.load(tmp_path / "out")
    torch.testing.assert_close(again.flow_to_answer, analysis.flow_to_answer)
    print(analysis.seconds)
