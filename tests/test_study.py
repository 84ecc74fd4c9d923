"""Studies over many traces, against independent computations.

On the four shortest published traces (a tiny random model with SmolLM2's tokenizer as the white-box model, so
it runs in seconds): the heads are the top-k of the mean kurtosis computed directly from the per-trace files,
the reliability is the even/odd Pearson r computed here with numpy, every published metric and tag is in
``sentences`` as it is in the file, category means equal a pandas group-by. On the planted receiver organism
over several traces, the planted head comes first and the reliability is high; on its control (the same model
on traces without the marker word) neither holds.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

import anchorlens as al
from anchorlens.study import Study, StudyInputError, aggregate_folder
from conftest import REFERENCE
from test_receivers_organism import FILLER, MARKED

SHORTEST = ["correct_base_solution/problem_6998", "incorrect_base_solution/problem_2189",
            "incorrect_base_solution/problem_2236", "incorrect_base_solution/problem_330"]
TOP_K = 5


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The four shortest published traces, in the published layout under one folder."""
    root = tmp_path_factory.mktemp("published")
    for name in SHORTEST:
        shutil.copytree(REFERENCE / "deepseek-r1-distill-llama-8b" / name, root / name)
    return root


@pytest.fixture(scope="module")
def model(one_torch_thread):
    return al.random_model("llama", n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, seed=0)


@pytest.fixture(scope="module")
def run(published, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    lines: list[str] = []
    result = al.study(model, published, out_dir=out, views=("receivers",), importance="published", top_k=TOP_K,
                      say=lines.append)
    return result, out, lines


def saved_kurtosis(out, names):
    from anchorlens.io import load_arrays

    return np.stack([load_arrays(out / "traces" / n / "receivers.npz")[0]["kurtosis"].double().numpy() for n in names])


@pytest.mark.slow
def test_traces_are_found_in_sorted_order_and_keep_their_published_chunks(run, published, model):
    result, out, lines = run
    assert result.traces == sorted(SHORTEST) and not result.missing
    assert len(lines) == 1 + len(SHORTEST) and all("receivers: computed" in line for line in lines[1:])
    for name in SHORTEST:
        trace = al.Trace.load(out / "traces" / name / "trace.json")
        chunks = [r["chunk"] for r in json.loads((published / name / "chunks_labeled.json").read_text())]
        assert trace.sentence_texts() == chunks
        solution = json.loads((published / name / "base_solution.json").read_text())
        assert trace.token_ids == model.to_tokens(solution["prompt"] + solution["solution"])[0].tolist()


def test_heads_are_the_top_k_of_the_mean_kurtosis_over_traces(run):
    result, out, _ = run
    per_trace = saved_kurtosis(out, result.traces)
    np.testing.assert_array_equal(result.kurtosis.numpy(), per_trace)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="empty slice"):
        mean = np.nanmean(per_trace, axis=0)  # layer 0 is NaN in every trace
    mean[0] = np.nan  # layer 0 excluded
    order = np.argsort(-np.nan_to_num(mean, nan=-np.inf), axis=None)[:TOP_K]
    expected = [tuple(int(x) for x in np.unravel_index(i, mean.shape)) for i in order]
    assert result.receiver_heads == expected


def test_reliability_is_the_even_odd_pearson_r(run):
    result, out, _ = run
    per_trace = saved_kurtosis(out, result.traces)[:, 1:]  # layers 1 and up
    even, odd = per_trace[0::2].mean(0).ravel(), per_trace[1::2].mean(0).ravel()
    assert result.reliability == pytest.approx(np.corrcoef(even, odd)[0, 1], abs=1e-12)
    low, high = result.reliability_ci
    assert -1 <= low <= high <= 1


def test_every_published_metric_and_tag_is_in_sentences_as_in_the_file(run, published):
    result, _, _ = run
    sentences = result.sentences
    assert len(sentences) == sum(len(json.loads((published / n / "chunks_labeled.json").read_text())) for n in SHORTEST)
    for name in SHORTEST:
        rows = sentences[sentences.trace == name].reset_index(drop=True)
        records = json.loads((published / name / "chunks_labeled.json").read_text())
        for i, record in enumerate(records):
            row = rows.iloc[i]
            assert row.text == record["chunk"] and row.sentence == record["chunk_idx"] == i
            assert row.category == record["function_tags"][0]
            for key, value in record.items():
                if key != "chunk":
                    assert row[key] == value, (name, i, key)
    assert set(result.importance_columns) >= {"resampling_importance_accuracy", "counterfactual_importance_kl"}


def test_receiver_scores_use_the_study_heads_on_the_saved_vertical_scores(run, model):
    from anchorlens.receivers import sentence_attention, vertical_scores

    result, out, _ = run
    name = result.traces[1]
    trace = al.Trace.load(out / "traces" / name / "trace.json")
    vertical = vertical_scores(sentence_attention(model, trace).matrix).double()  # recomputed from the model
    expected = torch.stack([vertical[l, h] for l, h in result.receiver_heads]).mean(0).numpy()
    got = result.sentences[result.sentences.trace == name].receiver_score.to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)


def test_category_means_equal_a_group_by(run):
    result, _, _ = run
    metrics = ["counterfactual_importance_kl", "resampling_importance_accuracy", "receiver_score"]
    table = result.by_category(metrics, n_bootstrap=300, convergence=False, clip=False, weighting="sentence",
                               min_sentences=1, min_traces=1).set_index("category")  # the pooled mean
    grouped = result.sentences.groupby("category")
    pd.testing.assert_frame_equal(table[metrics], grouped[metrics].mean(), check_names=False)
    assert (table.n_sentences == grouped.size()).all()
    assert (table.n_traces == grouped.trace.nunique()).all()
    for m in metrics:
        finite = table[f"{m}_ci_low"].notna()
        assert (table[f"{m}_ci_low"][finite] <= table[m][finite] + 1e-12).all()
        assert (table[m][finite] <= table[f"{m}_ci_high"][finite] + 1e-12).all()


def test_view_correlations_pooled_and_per_trace(run):
    from anchorlens.views import view_correlations

    result, _, _ = run
    table = result.view_correlations(n_bootstrap=200)
    assert set(table.scope) == {"pooled", *SHORTEST}
    pooled = table[table.scope == "pooled"].drop(columns="scope").reset_index(drop=True)
    direct = view_correlations(result.sentences, ["receiver_score", "counterfactual_importance_kl"], n_bootstrap=200)
    row = pooled[(pooled.view_a == "receiver_score") & (pooled.view_b == "counterfactual_importance_kl")]
    assert row.spearman.item() == pytest.approx(direct.spearman.item())
    assert (pooled.view_a == "receiver_score").all()  # views against importance, not metric against metric


@pytest.mark.slow
def test_a_second_run_recomputes_nothing(run, published, model):
    result, out, _ = run
    before = {p: p.stat().st_mtime_ns for p in out.glob("traces/**/receivers.npz")}
    lines: list[str] = []
    again = al.study(model, published, out_dir=out, views=("receivers",), importance="published", top_k=TOP_K,
                     say=lines.append)
    assert all("receivers: reused" in line for line in lines[1:])
    assert {p: p.stat().st_mtime_ns for p in out.glob("traces/**/receivers.npz")} == before
    assert again.receiver_heads == result.receiver_heads


@pytest.mark.slow
def test_a_killed_study_resumes_where_it_stopped(run, published, model, tmp_path):
    """A study killed inside its third trace (receivers written, its key not yet) and before the fourth: the
    re-run reuses the first two traces, recomputes the third's receivers and computes the fourth."""
    result, out, _ = run
    folder = tmp_path / "killed"
    shutil.copytree(out, folder)
    names = result.traces
    (folder / "traces" / names[2] / "receivers.npz.key.json").unlink()
    shutil.rmtree(folder / "traces" / names[3])
    assert set(aggregate_folder(folder).missing) == {names[2], names[3]}
    lines: list[str] = []
    again = al.study(model, published, out_dir=folder, views=("receivers",), importance="published", top_k=TOP_K,
                     say=lines.append)
    assert [line.split("(")[-1] for line in lines[1:]] == ["receivers: reused)", "receivers: reused)",
                                                           "receivers: computed)", "receivers: computed)"]
    assert not again.missing and again.receiver_heads == result.receiver_heads
    pd.testing.assert_frame_equal(again.sentences, result.sentences)


@pytest.mark.slow
def test_shards_into_one_folder_give_the_same_study(run, published, model, tmp_path):
    result, _, _ = run
    half = al.study(model, published, out_dir=tmp_path, views=("receivers",), importance="published",
                    top_k=TOP_K, shard="0/2", progress=False)
    assert half.traces == sorted(SHORTEST)[0::2]
    assert set(half.missing) == set(sorted(SHORTEST)[1::2])
    assert all("not run yet" in why for why in half.missing.values())
    whole = al.study(model, published, out_dir=tmp_path, views=("receivers",), importance="published",
                     top_k=TOP_K, shard="1/2", progress=False)
    assert not whole.missing and whole.traces == result.traces
    torch.testing.assert_close(whole.kurtosis, result.kurtosis, equal_nan=True)
    assert whole.receiver_heads == result.receiver_heads and whole.reliability == result.reliability
    pd.testing.assert_frame_equal(whole.sentences, result.sentences)
    pd.testing.assert_frame_equal(aggregate_folder(tmp_path).sentences, result.sentences)
    assert aggregate_folder(tmp_path).receiver_heads == result.receiver_heads


@pytest.mark.slow
def test_command_aggregates_without_a_model(run, published, tmp_path, capsys):
    from anchorlens.cli import main

    result, out, _ = run
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    assert main(["study", str(published), "--views", "receivers", "--heads", str(TOP_K), "--aggregate",
                 "--out", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "loading" not in captured.err and "4 traces" in captured.out
    assert Study.load(folder).receiver_heads == result.receiver_heads
    assert (folder / "study.html").is_file() and (folder / "study_heads.csv").is_file()


@pytest.mark.slow
def test_study_round_trips_and_plots(run, tmp_path):
    result, _, _ = run
    loaded = Study.load(result.save(tmp_path))
    torch.testing.assert_close(loaded.kurtosis, result.kurtosis, equal_nan=True)
    assert loaded.receiver_heads == result.receiver_heads and loaded.reliability_ci == result.reliability_ci
    pd.testing.assert_frame_equal(loaded.sentences, result.sentences)
    heads = result.heads_dataframe()
    assert heads.receiver_rank.notna().sum() == TOP_K and len(heads) == 3 * 4
    assert result.plot() is not None
    assert "4 traces" in repr(result)
    page = result.write_page(tmp_path).read_text()
    for name in SHORTEST:  # links each trace's own report, which analyze wrote
        assert f"href='traces/{name}/report.html'" in page
        assert (Path(result.settings["out_dir"]) / "traces" / name / "report.html").is_file()
    assert f"<b>{result.reliability:.2f}</b>" in page and "data:image/png;base64," in page


@pytest.mark.slow
def test_command_on_two_published_traces(published, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    data = tmp_path / "data"
    for name in SHORTEST[1::2]:
        shutil.copytree(published / name, data / name)
    # this checkout's anchorlens, as a user runs the command
    done = subprocess.run([sys.executable, "-m", "anchorlens.cli", "study", str(data), "--views", "receivers", "--heads",
                           "5", "--out", str(tmp_path / "s")], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/2]" in done.stderr and "[2/2]" in done.stderr
    result = Study.load(tmp_path / "s")
    assert result.traces == sorted(SHORTEST[1::2]) and len(result.receiver_heads) == 5
    for file in ("study.html", "study.png", "study_by_category.csv", "study_heads.csv", "study_sentences.csv"):
        assert (tmp_path / "s" / file).is_file()


def test_a_trace_too_long_for_the_model_is_skipped_and_said(published, tmp_path):
    short = al.random_model("llama", n_layers=2, d_model=32, n_heads=2, n_ctx=1024, seed=1)
    lines: list[str] = []
    result = al.study(short, published, out_dir=tmp_path, views=("receivers",), importance="published", top_k=2,
                      say=lines.append)
    assert result.traces == ["incorrect_base_solution/problem_2189"]  # 815 tokens; the others have 1,700-2,000
    assert len(result.missing) == 3 and all("context holds 1024" in why for why in result.missing.values())
    assert any("skipped" in line for line in lines)


@pytest.mark.parametrize("bad, match", [
    ({"traces": "missing-folder"}, "is not a folder"),
    ({"traces": [object()]}, "Trace objects"),
    ({"shard": "2/2"}, "shard 2/2"),
    ({"shard": "a/b"}, "i/n"),
    ({"views": ("receivers", "vibes")}, "unknown view"),
    ({"importance": "guess"}, "importance must be"),
    ({"top_k": 0}, "top_k"),
])
def test_bad_input_is_a_clear_error(model, published, tmp_path, bad, match):
    options = {"traces": published, "out_dir": tmp_path, "views": ("receivers",)} | bad
    with pytest.raises(StudyInputError, match=match):
        al.study(model, options.pop("traces"), **options)


def test_published_importance_needs_published_folders(model, tmp_path):
    trace = al.Trace.from_text(model, "First we add. Then we check it. So it is four.")
    with pytest.raises(StudyInputError, match="published trace folders"):
        al.study(model, [trace], out_dir=tmp_path, importance="published")


def test_command_checks_its_input_before_loading_the_model(published, tmp_path, capsys):
    from anchorlens.cli import main

    problems = tmp_path / "problems.txt"
    problems.write_text("What is 2 + 2?\n")
    broken = tmp_path / "broken" / "problem_1"
    broken.mkdir(parents=True)
    (broken / "chunks_labeled.json").write_text("[]")
    cases = [([str(tmp_path / "nowhere")], "is not a folder"),
             ([str(published), "--shard", "5/2"], "shard 5/2"),
             ([str(published), "--heads", "0"], "--heads must be at least 1"),
             ([str(published), "--rollouts", "4"], "without --importance rollouts"),
             ([str(published), "--views", "categories", "--base-model", "x"], "add receivers to --views"),
             ([str(problems), "--views", "receivers"], "no published importance"),
             ([str(tmp_path / "broken")], "lacks problem.json, base_solution.json"),
             ([str(published), "--server", "http://127.0.0.1:9"], "only --importance rollouts makes"),
             ([str(published), "--importance", "rollouts", "--server-model", "m"], "without --server"),
             ([str(published), "--model", "no-such-model", "--out", str(tmp_path / "o.txt")], None)]
    (tmp_path / "o.txt").write_text("a file")
    for args, match in cases:
        assert main(["study", *args]) == 2
        message = capsys.readouterr().err
        assert "loading" not in message and (match is None or match in message), message


# --------------------------------------------------------------------------- the planted receiver organism


def organism_traces(model, marked: bool, n: int = 6):
    rng = random.Random(0)
    traces = []
    for i in range(n):
        filler = FILLER[:]
        rng.shuffle(filler)
        at = rng.randrange(0, 9)
        sentences = filler[:at] + ([MARKED] if marked else []) + filler[at:]
        traces.append(al.Trace.from_text(model, " ".join(sentences), prompt="Problem: compute it.\n",
                                         metadata={"name": f"t{i}"}))
    return traces


@pytest.fixture(scope="module")
def organism(one_torch_thread):
    return al.planted_receiver_model(layer=1, head=3)


@pytest.mark.slow
def test_organism_planted_head_comes_first_and_is_reliable(organism, model, tmp_path):
    result = al.study(organism, organism_traces(organism, marked=True), out_dir=tmp_path, views=("receivers",),
                      importance=None, top_k=3, base_model=model, progress=False)
    assert result.receiver_heads[0] == organism.planted_head
    assert result.reliability > 0.95 and result.reliability_ci[0] > 0.9
    assert "receiver_score" in result.sentences and "category" not in result.sentences
    marked = result.sentences[result.sentences.text == MARKED]
    best = result.sentences.loc[result.sentences.groupby("trace").receiver_score.idxmax()]
    assert (best.text == MARKED).all() and len(marked) == 6
    # against an unplanted model of the same shape on the same traces: one head far above every other
    comparison = result.base_comparison(threshold=3.0)
    assert comparison[f"share_above[{organism.anchorlens_name}]"] == pytest.approx(1 / 8)
    assert comparison[f"share_above[{model.anchorlens_name}]"] == 0.0
    assert 0 <= comparison["mann_whitney_p"] <= 1 and comparison["n_traces"] == 6


@pytest.mark.slow
def test_organism_control_without_the_marker(organism, tmp_path):
    result = al.study(organism, organism_traces(organism, marked=False), out_dir=tmp_path, views=("receivers",),
                      importance=None, top_k=3, progress=False)
    assert organism.planted_head not in result.receiver_heads  # nothing to receive: it is not a receiver
    assert float(result.mean_kurtosis.nan_to_num(-9).max()) < 1.0
    assert result.reliability_ci[0] < 0.5  # the halves do not reliably agree on any head


@pytest.mark.slow
def test_rollouts_and_flow_go_through_analyze(model, tmp_path):
    """importance="rollouts" runs analyze's resampling step on each trace; other views come as analyze saves them."""
    from anchorlens.pipeline import Analysis

    texts = ["We need 2 plus 2. Adding them gives 4. So the answer is \\boxed{4}.",
             "First take 3. Then add 1 to it. That makes 4. The answer is \\boxed{4}."]
    traces = [al.Trace.from_text(model, text, prompt="Q: What is 2 + 2?\nA: ", metadata={"name": f"q{i}"})
              for i, text in enumerate(texts)]
    lines: list[str] = []
    result = al.study(model, traces, out_dir=tmp_path, views=("receivers", "flow"), importance="rollouts", top_k=2,
                      n_rollouts=2, rollout_max_tokens=6, say=lines.append)
    assert result.traces == ["q0", "q1"] and "resampling: computed" in lines[1] and "flow: computed" in lines[1]
    assert "resampling_importance_accuracy" in result.importance_columns
    for name in result.traces:
        expected = Analysis.load(tmp_path / "traces" / name).to_dataframe()
        rows = result.sentences[result.sentences.trace == name].reset_index(drop=True)
        expected = expected.rename(columns={"receiver_score": "receiver_score_own_heads"})
        assert {"flow_to_answer", "resampling_importance_kl", "accuracy"} <= set(expected.columns)
        for column in expected.columns:  # every column of analyze's table, as analyze saved it
            pd.testing.assert_series_equal(rows[column], expected[column].astype(rows[column].dtype),
                                           check_names=False)


def test_a_file_of_problems_generates_one_trace_each(model, tmp_path):
    problems = tmp_path / "problems.json"
    problems.write_text(json.dumps(["What is 2 + 2?", {"problem": "What is 3 + 4?", "answer": "7"}]))
    lines: list[str] = []
    result = al.study(model, problems, out_dir=tmp_path / "out", views=("receivers",), importance=None, top_k=2,
                      max_new_tokens=24, say=lines.append)
    assert lines[1].startswith("[1/2] problem_000: ") and lines[2].startswith("[2/2] problem_001: ")
    for name in ("problem_000", "problem_001"):  # a random model's text: generated, or skipped as degenerate
        if name in result.traces:
            trace = al.Trace.load(tmp_path / "out" / "traces" / name / "trace.json")
            assert trace.metadata["problem"] in ("What is 2 + 2?", "What is 3 + 4?")
        else:
            assert "degenerate" in result.missing[name]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(StudyInputError, match="holds no problem"):
        al.study(model, tmp_path / "empty.txt", out_dir=tmp_path / "o2", importance=None)


@pytest.mark.slow
def test_a_problem_generates_its_trace_with_the_embedded_model(smol, tmp_path):
    problems = tmp_path / "problems.txt"
    problems.write_text("What is 6 times 7?\n")
    result = al.study(smol, problems, out_dir=tmp_path / "out", views=("receivers",), importance=None, top_k=3,
                      max_new_tokens=200, generation_seed=1, progress=False)
    assert result.traces == ["problem_000"] and not result.missing
    trace = al.Trace.load(tmp_path / "out" / "traces" / "problem_000" / "trace.json")
    assert trace.metadata["problem"] == "What is 6 times 7?"
    assert len(result.sentences) == trace.n_sentences and len(result.receiver_heads) == 3
