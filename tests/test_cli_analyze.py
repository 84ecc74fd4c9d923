"""The main job, ``anchorlens analyze``, run as a user runs it: a separate process on the embedded model.

It must write every output, agree with its own rollout store, resume a run killed with SIGKILL without
losing or repeating a rollout or recomputing finished steps, and refuse bad input with a clear message.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anchorlens import Analysis
from anchorlens.cli import SAMPLE_ANSWER, SAMPLE_PROBLEM
from conftest import kill_after_rollouts, run_anchorlens

pytestmark = pytest.mark.slow

OUTPUTS = ["trace.json", "receivers.npz", "suppression.npz", "importance.npz", "rollouts.sqlite", "sentences.csv",
           "report.html", "report.json", "importance.png", "receiver_kurtosis.png", "suppression.png", "flow.npz",
           "view_correlations.csv"]


SAMPLE_ROLLOUTS = ["--rollouts", "2", "--rollout-tokens", "16"]  # the sample_analysis fixture's settings
STEP_NAMES = ("trace", "categories", "receivers", "suppression", "resampling", "flow", "attribution")


def _rollouts(out: Path) -> pd.DataFrame:
    with sqlite3.connect(out / "rollouts.sqlite") as db:
        return pd.read_sql("SELECT sentence_index, kind, seed, text, answer, is_correct FROM rollouts", db)


def test_sample_analysis_writes_every_output(sample_analysis):
    out = sample_analysis
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, f"{name} missing or empty"
    trace = json.loads((out / "trace.json").read_text())
    n = len(trace["sentences"])
    assert n >= 3 and trace["metadata"]["problem"] == SAMPLE_PROBLEM
    stdout = (out / "stdout.txt").read_text()
    assert all(s["text"] in stdout for s in trace["sentences"]), "the command lists every sentence"
    assert str((out / "report.html").resolve()) in stdout
    # 16 tokens cut most rollouts off: they have no answer, the command warns, and names no anchor it cannot see
    assert "cut off)" in stdout and "--rollout-tokens" in (out / "stderr.txt").read_text()
    assert any(line in stdout for line in ("the thought anchor by resampling_importance_accuracy",
                                           "no sentence stands out from the runner-up",
                                           "no sentence has a resampling_importance_accuracy"))
    steps = ["trace", "categories", "receivers", "suppression", "resampling", "flow", "report"]
    timing = stdout.split("seconds per step: ")[1].splitlines()[0]
    assert [part.split()[0] for part in timing.split(", ")] == steps

    frame = pd.read_csv(out / "sentences.csv")
    assert frame["text"].tolist() == [s["text"] for s in trace["sentences"]]
    report = json.loads((out / "report.json").read_text())
    assert report["answer"] == SAMPLE_ANSWER
    assert len(report["categories"]) == n and all(report["categories"])
    assert np.asarray(report["suppression_kl"], dtype=float).shape == (n, n)
    assert len(report["receiver_heads"]) == 16
    assert frame["flow_to_answer"].notna().all() and "Rank correlations between views" in report["notes"]["summary"]

    # Analysis.load reads the folder back, without a model, into the same table.
    loaded = Analysis.load(out).to_dataframe()
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=False, check_exact=False, rtol=1e-5)

    # The accuracy column is what the rollout store holds: correct answers over answered rollouts.
    rollouts = _rollouts(out)
    resampled = rollouts[rollouts["kind"] == "resample"]
    assert resampled.groupby("sentence_index").size().tolist() == [2] * n
    assert not rollouts.duplicated(["sentence_index", "kind", "seed"]).any()
    answered = resampled[resampled["answer"].fillna("") != ""]
    expected = answered.groupby("sentence_index")["is_correct"].mean().reindex(range(n))
    assert np.allclose(frame["accuracy"], expected, equal_nan=True)


def test_a_killed_run_resumes_without_losing_or_repeating_work(tmp_path):
    out = tmp_path / "report"
    args = ["analyze", "--problem", "What is 6 + 7?", "--seed", "0", "--max-new-tokens", "80",
            "--rollouts", "3", "--rollout-tokens", "24", "--skip", "receivers", "--out", str(out)]
    kill_after_rollouts(*args, out=out, at_least=4)
    before = _rollouts(out)
    trace_bytes = (out / "trace.json").read_bytes()
    suppression_mtime = (out / "suppression.npz").stat().st_mtime_ns
    assert not (out / "report.html").exists()

    done = run_anchorlens(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "trace.json").read_bytes() == trace_bytes, "the same chain of thought is kept"
    assert (out / "suppression.npz").stat().st_mtime_ns == suppression_mtime, "a finished step is not redone"
    after = _rollouts(out)
    n = len(json.loads(trace_bytes)["sentences"])
    for kind in ("resample", "forced"):
        assert after[after["kind"] == kind].groupby("sentence_index").size().tolist() == [3] * n
    assert not after.duplicated(["sentence_index", "kind", "seed"]).any()
    kept = before.merge(after, on=["sentence_index", "kind", "seed"], suffixes=("", "_after"))
    assert len(kept) == len(before), "no rollout written before the kill is lost"
    assert (kept["text"] == kept["text_after"]).all(), "rollouts written before the kill are not redone"
    assert (out / "report.html").exists()


def test_bad_input_gets_a_clear_error(tmp_path):
    missing = run_anchorlens("analyze", "--trace", str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "a"))
    assert missing.returncode == 2
    assert "no trace file" in missing.stderr and "loading" not in missing.stderr, "fails before loading a model"

    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    refused = run_anchorlens("analyze", "--trace", str(empty), "--out", str(tmp_path / "b"))
    assert refused.returncode == 2
    assert "anchorlens: error:" in refused.stderr and "empty" in refused.stderr
    assert "Traceback" not in refused.stderr

    unknown = run_anchorlens("analyze", "--model", "no-such-org/no-such-model", "--out", str(tmp_path / "c"))
    assert unknown.returncode == 2
    assert "smollm2-135m-instruct" in unknown.stderr, "the error names the model that works offline"


def test_a_short_trace_gets_a_report_with_notes_instead_of_an_error(smol, tmp_path):
    from anchorlens import Trace, analyze

    trace = Trace.from_text(smol, "We need 6 times 7. 6 * 7 = 42. So the answer is \\boxed{42}.")
    analysis = analyze(smol, tmp_path, trace=trace, steps=("categories", "receivers", "suppression"), progress=False)
    assert analysis.receiver_heads == [] and analysis.suppression_kl.shape == (3, 3)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "Too short for receiver heads" in report["notes"]["receiver"]
    assert report["answer"] == "42", "the trace's own boxed answer is the reference when none is given"


def test_rollouts_from_a_server(embedded_server, tmp_path):
    """`--server` sends every rollout to a real OpenAI-compatible server (transformers serve, embedded model)."""
    cot = tmp_path / "cot.txt"
    cot.write_text("We need 6 times 7. 6 * 7 = 42. So the answer is \\boxed{42}.")
    out = tmp_path / "report"
    no_problem = run_anchorlens("analyze", "--trace", str(cot), "--rollouts", "2", "--out", str(tmp_path / "p"))
    assert no_problem.returncode == 2 and "--problem" in no_problem.stderr, "rollouts need the problem"
    assert not (tmp_path / "p" / "suppression.npz").exists(), "refused before the other analyses ran"

    done = run_anchorlens("analyze", "--trace", str(cot), "--problem", "What is 6 times 7?",
                          "--server", embedded_server.base_url,
                          "--server-model", embedded_server.model, "--rollouts", "2", "--rollout-tokens", "12",
                          "--skip", "receivers", "--skip", "suppression", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(out / "rollouts.sqlite") as db:
        samplers = {row[0] for row in db.execute("SELECT DISTINCT sampler FROM rollouts")}
    assert samplers == {f"server:{embedded_server.base_url}:{embedded_server.model}"}
    assert (out / "report.html").exists()

    wrong = run_anchorlens("analyze", "--trace", str(cot), "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "loading" not in wrong.stderr, "a wrong URL fails before the model loads"
    assert "anchorlens: error:" in wrong.stderr and "Traceback" not in wrong.stderr


def dash_writer(folder: Path) -> Path:
    """A model organism of broken decoding: a small Llama that writes '-' after anything (what transformers 5.24
    made of SmolLM2 through a bridge: 'To----...'). Residual dimension 0 is a large constant (embeddings set it,
    no layer writes to it) and only '-' reads it; other tokens read the rest weakly, so attention still matters."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from anchorlens.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(3)
    hf = LlamaForCausalLM(config)
    (dash,) = tokenizer.encode("-", add_special_tokens=False)
    with torch.no_grad():
        hf.model.embed_tokens.weight[:, 0] = 20.0
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        hf.lm_head.weight[:, 0] = 0
        hf.lm_head.weight[dash, 0] = 100.0
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_degenerate_generated_trace_is_an_error_with_advice(tmp_path):
    folder = dash_writer(tmp_path / "dash-model")
    done = run_anchorlens("analyze", "--model", str(folder), "--problem", "What is 6 times 7?", "--max-new-tokens",
                          "40", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "degenerate" in done.stderr and "'-'" in done.stderr and "--seed" in done.stderr
    assert "transformers" in done.stderr and "tested" in done.stderr, "names the installed and tested versions"
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "report.html").exists(), "no report of garbage"


def test_a_rerun_with_new_heads_recomputes_receivers_only(sample_analysis, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(sample_analysis, out)
    files = ["trace.json", "categories.json", "suppression.npz", "importance.npz", "flow.npz", "rollouts.sqlite"]
    before = {name: (out / name).read_bytes() for name in files}
    again = run_anchorlens("analyze", "--heads", "4", *SAMPLE_ROLLOUTS, "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    said = [line for line in again.stderr.splitlines() if line.split(": ")[0] in STEP_NAMES]
    assert said == ["trace: reused", "categories: reused", "receivers: recomputed (heads 16 -> 4)",
                    "suppression: reused", "resampling: reused", "flow: reused"]
    assert {name: (out / name).read_bytes() for name in files} == before, "reused steps leave their files as they were"
    assert len(json.loads((out / "report.json").read_text())["receiver_heads"]) == 4


def test_a_rerun_with_a_new_seed_generates_a_new_trace(sample_analysis, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(sample_analysis, out)
    old = json.loads((out / "trace.json").read_text())
    skips = ["--skip", "categories", "--skip", "suppression", "--skip", "resampling", "--skip", "flow"]
    again = run_anchorlens("analyze", "--seed", "2", *skips, "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trace: regenerated (seed 1 -> 2)" in again.stderr
    assert "receivers: recomputed (a new trace)" in again.stderr
    new = json.loads((out / "trace.json").read_text())
    assert new["metadata"]["generation"]["seed"] == 2 and new["cot"] != old["cot"]
    assert Analysis.load(out).suppression_kl is None, "the old trace's suppression is not shown as the new one's"
