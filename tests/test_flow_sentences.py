"""Sentence-level information flow of a Trace, and its place in ``analyze`` next to the other views."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from anchorlens import Analysis, Trace, analyze
from anchorlens.flow import FlowInputError, SentenceFlow, information_flow, sentence_flow
from anchorlens.flow.organism import planted_route_model

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
    pair = correlations[(correlations.view_a == "suppression_out_kl") & (correlations.view_b == "flow_to_answer")]
    assert len(pair) == 1 and pair.ci_low.iloc[0] <= pair.spearman.iloc[0] <= pair.ci_high.iloc[0]
    assert (tmp_path / "out" / "view_correlations.csv").exists()
    assert "Rank correlations between views" in (tmp_path / "out" / "report.html").read_text()
    again = Analysis.load(tmp_path / "out")
    torch.testing.assert_close(again.flow_to_answer, analysis.flow_to_answer)
    assert "attribution_to_answer" not in frame and not (tmp_path / "out" / "attribution.npz").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    np.testing.assert_allclose(report["flow_matrix"], analysis.flow_matrix.numpy(), rtol=1e-6)
    assert report["attribution_graph"] is None
    print(analysis.seconds)


ANSWERED = "We need 6 times 7. 6 * 7 = 42. Let me check: 6 * 7 is 42. So the answer is \\boxed{42}."


@pytest.fixture(scope="module")
def transcoder_dir(tmp_path_factory):
    """Seeded transcoders for SmolLM2 (a circuit-tracer comparison case), saved as a folder a user would pass."""
    from attribution_cases import CASES, case_transcoders

    return case_transcoders(CASES["smollm2_relu"], 30, 576).save(tmp_path_factory.mktemp("tc") / "smollm2_relu")


@pytest.mark.slow
def test_analyze_attribution_step_with_transcoders_is_saved_reused_and_reported(smol, tmp_path, transcoder_dir,
                                                                                one_torch_thread):
    from anchorlens.report.html import page_payload
    from anchorlens.report import ReportData

    trace = Trace.from_text(smol, ANSWERED)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="needs transcoders"):
        analyze(smol, out, trace=trace, steps=("attribution",), progress=False)
    analysis = analyze(smol, out, trace=trace, steps=(), transcoders=transcoder_dir, attribution_features=96,
                       progress=False)
    info = analysis.attribution_info
    # the answer's first token, in the last occurrence of "42" (inside \boxed{})
    position = info["answer_position"]
    assert smol.tokenizer.decode(trace.token_ids[position:]).lstrip().startswith("42}")
    assert info["features_kept"] == 96 and info["features_dropped"] > 0
    frame = analysis.to_dataframe()
    values = frame["attribution_to_answer"]
    assert values.notna().all() and (values >= 0).all() and values.sum() > 0
    last = trace.token_spans[-1]
    assert last[0] < position < last[1], "the answer sits in the last sentence"
    graph = analysis.attribution_graph
    assert graph.node_mask is not None and graph.n_features == 96 and len(graph.tokens) == position
    saved = {name: (out / name).stat().st_mtime_ns for name in ("attribution.npz",)}
    report = ReportData.load(out / "report.json")
    assert report.attribution_graph is not None and "answer token" in report.notes["attribution"]
    assert page_payload(report)["attribution"]["nodes"], "the report draws the graph"
    assert "attribution_to_answer" in report.metric_names()

    again = analyze(smol, out, trace=trace, steps=(), transcoders=transcoder_dir, attribution_features=96,
                    progress=False)
    assert {name: (out / name).stat().st_mtime_ns for name in saved} == saved, "resumed: the saved files reused"
    torch.testing.assert_close(again.attribution_to_answer, analysis.attribution_to_answer)
    loaded = Analysis.load(out)
    torch.testing.assert_close(loaded.attribution_to_answer, analysis.attribution_to_answer)
    assert loaded.attribution_info == analysis.attribution_info
    print(analysis.seconds, info)


@pytest.mark.slow
def test_the_command_takes_transcoders(tmp_path, transcoder_dir):
    from conftest import run_anchorlens

    missing = run_anchorlens("analyze", "--transcoders", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "no transcoder folder" in missing.stderr
    text = tmp_path / "cot.txt"
    text.write_text(ANSWERED)
    skips = [arg for step in ("categories", "receivers", "suppression", "resampling", "flow") for arg in ("--skip", step)]
    done = run_anchorlens("analyze", "--trace", str(text), *skips, "--transcoders", str(transcoder_dir),
                          "--attribution-features", "64", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "out" / "sentences.csv")
    assert frame["attribution_to_answer"].notna().all()
    assert "attribution" in done.stdout  # the seconds per step
