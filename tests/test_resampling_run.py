"""Resampling runs: prompts (docs/methods.md 1.2), seeds, resuming, kill -9, and end-to-end runs on SmolLM2.

Ground truth: a planted sampler whose answer is fixed once the "anchor" sentence is in the prefix
(a model organism of a thought anchor): accuracy and resampling importance are known exactly.
The kill-and-resume test kills a real run with SIGKILL, several times, and checks that the final
store holds exactly the rollouts of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from anchorlens import Trace
from anchorlens.errors import AnchorlensError
from anchorlens.generation import problem_prompt
from anchorlens.resampling.rollout import FORCED, RESAMPLE
from anchorlens.resampling.runner import (
    FORCED_SUFFIX,
    RunSettingsError,
    as_sampler,
    default_trace_id,
    first_chunk,
    resampling_importance,
    rollout_prompt,
    rollout_seed,
    run_rollouts,
)
from anchorlens.resampling.samplers import Completion, LocalSampler, Sampler
from anchorlens.resampling.store import RolloutStore, StoreError

COT = "Let me think about it. The key fact is that two plus two is four. So I will answer now. Done, the answer is 4."
ANCHOR = "The key fact is that two plus two is four."


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: 1 thread is faster on a busy 2-core CPU


@pytest.fixture(scope="module")
def trace(tiny_llama):
    return Trace.from_text(tiny_llama, COT, prompt="Q: What is 2 + 2?\nA: ", metadata={"problem": "What is 2 + 2?"})


def cheap_embed(texts):
    """A stand-in sentence embedder (the metrics' own tests cover MiniLM): texts of equal length match."""
    return torch.nn.functional.normalize(torch.tensor([[float(len(t)), 1.0] for t in texts]), dim=-1)


class PlantedSampler(Sampler):
    """A model organism of a thought anchor: once ANCHOR is in the prompt the answer is always 4.

    Without it, the answer is 4 for seeds divisible by 3 (resample) or by 2 (forced), else 5.
    """

    name = "planted"

    def stream(self, requests, params):
        for r in requests:
            anchored = ANCHOR in r.prompt
            if r.prompt.endswith(FORCED_SUFFIX):
                text = ("4" if anchored or r.seed % 2 == 0 else "5") + "} is my answer."
            else:
                answer = 4 if anchored or r.seed % 3 == 0 else 5
                text = f" Another step number {r.seed % 2}. So \\boxed{{{answer}}}."
            yield Completion(r, text, n_tokens=len(text.split()), finish_reason="stop")


# --------------------------------------------------------------------------- prompts and seeds


def test_trace_mode_prompts_continue_the_trace(trace):
    assert rollout_prompt(trace, 0) == trace.prompt
    assert rollout_prompt(trace, 1) == trace.prompt + "Let me think about it."  # the seam's space is the model's
    assert rollout_prompt(trace, 3, FORCED) == trace.prompt + COT[: COT.index("Done")].rstrip() + FORCED_SUFFIX


def test_reference_mode_reproduces_the_published_prompt(trace):
    expected = ("Solve this math problem step by step. You MUST put your final answer in \\boxed{}. "
                "Problem: What is 2 + 2? Solution: \n<think>\n")
    assert rollout_prompt(trace, 0, prompt_mode="reference") == expected
    assert rollout_prompt(trace, 2, prompt_mode="reference") == expected + "Let me think about it. " + ANCHOR
    assert rollout_prompt(trace, 1, FORCED, "reference").endswith(
        "it.\n</think>\n\nTherefore, the final answers is \\boxed{")
    no_problem = Trace(trace.prompt, trace.cot, trace.sentences, trace.token_ids, trace.token_spans, trace.prompt_token_end)
    with pytest.raises(RunSettingsError, match="problem"):
        rollout_prompt(no_problem, 1, prompt_mode="reference")
    with pytest.raises(RunSettingsError, match="prompt_mode"):
        rollout_prompt(trace, 1, prompt_mode="chat")
    with pytest.raises(RunSettingsError, match="outside"):
        rollout_prompt(trace, 4)


def test_seeds_are_stable_and_distinct():
    seeds = {rollout_seed("t", i, kind, n) for i in range(20) for kind in (RESAMPLE, FORCED) for n in range(100)}
    assert len(seeds) == 20 * 2 * 100
    assert all(0 <= s < 2**31 for s in seeds)
    assert rollout_seed("t", 3, RESAMPLE, 7) == rollout_seed("t", 3, RESAMPLE, 7)
    assert rollout_seed("t", 3, RESAMPLE, 7) != rollout_seed("u", 3, RESAMPLE, 7)


def test_first_chunk_follows_the_published_splitter():
    assert first_chunk(" So x = 3.5 here. Then more.") == "So x = 3.5 here."
    assert first_chunk("   ") == ""
    assert first_chunk("Ok. Then we add.") == "Ok. Then we add."  # chunks under 10 characters merge forward


# --------------------------------------------------------------------------- runs on a planted sampler


def expected_accuracy(trace_id, i, kind, n, anchored):
    if anchored:
        return 1.0
    divisor = 2 if kind == FORCED else 3
    return sum(rollout_seed(trace_id, i, kind, k) % divisor == 0 for k in range(n)) / n


def test_planted_anchor_is_found(trace, tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    result = resampling_importance(PlantedSampler(), trace, n_rollouts=12, store=store, reference_answer="4",
                                   trace_id="planted", embed=cheap_embed, progress=False)
    frame = result.to_dataframe()
    # Rollouts of sentence i continue the text before i: the anchor (sentence 1) is in the prefix from i = 2.
    acc = [expected_accuracy("planted", i, RESAMPLE, 12, anchored=i >= 2) for i in range(4)]
    assert frame.accuracy.tolist() == pytest.approx(acc)
    assert frame.resampling_importance_accuracy[1] == pytest.approx(1.0 - acc[1])  # the anchor matters
    assert frame.resampling_importance_accuracy[2] == pytest.approx(0.0)  # after it nothing does
    forced = [expected_accuracy("planted", i, FORCED, 12, anchored=i >= 2) for i in range(4)]
    assert frame.forced_importance_accuracy[1] == pytest.approx(forced[2] - forced[1])
    assert result.trace_id == "planted"
    rollouts = store.rollouts("planted")
    assert len(rollouts) == 4 * 12 * 2
    for r in rollouts:
        assert r.is_correct == (r.answer == "4")
        if r.kind == RESAMPLE:
            assert r.chunk_resampled == f"Another step number {r.seed % 2}."
        else:
            assert r.chunk_resampled == "" and r.answer in ("4", "5")
    assert store.to_dataframe("planted").sampler.unique().tolist() == ["planted"]


def test_runs_resume_and_grow(trace, tmp_path):
    path = tmp_path / "r.sqlite"
    first = run_rollouts(PlantedSampler(), trace, path, n_rollouts=3, sentences=[0, 2], reference_answer="4")
    assert (first.requested, first.already_done, first.generated, first.complete) == (12, 0, 12, True)
    again = run_rollouts(PlantedSampler(), trace, path, n_rollouts=3, sentences=[0, 2], reference_answer="4")
    assert (again.already_done, again.generated) == (12, 0)
    more = run_rollouts(PlantedSampler(), trace, path, n_rollouts=5, reference_answer="4", forced=False)
    assert (more.requested, more.already_done, more.generated) == (20, 6, 14)
    store = RolloutStore(path)
    assert store.trace_ids() == [default_trace_id(trace)]
    assert store.count(kind=RESAMPLE) == 20 and store.count(kind=FORCED) == 6
    assert more.to_dataframe().generated[0] == 14
    # the reference answer and the extractor change how rollouts are read, not the rollouts: nothing new
    judged = run_rollouts(PlantedSampler(), trace, path, n_rollouts=5, reference_answer="5", forced=False)
    assert (judged.already_done, judged.generated) == (20, 0)


def test_other_settings_into_one_store_keep_both_sets_apart(trace, tmp_path):
    path = tmp_path / "r.sqlite"
    kwargs = dict(trace_id="t", reference_answer="4", embed=cheap_embed, progress=False, n_bootstrap=0)
    cold = resampling_importance(HotSampler(), trace, n_rollouts=4, store=path, temperature=0.0, **kwargs)
    hot = resampling_importance(HotSampler(), trace, n_rollouts=4, store=path, temperature=1.0, **kwargs)
    store = RolloutStore(path)
    assert store.count("t") == 2 * 4 * 4 * 2 and len(store.settings("t")) == 4  # 2 settings x 2 kinds
    # each result sees only its own rollouts: all answers 4 when cold, all 5 when hot
    assert cold.accuracy.tolist() == [1.0] * 4 and hot.accuracy.tolist() == [0.0] * 4
    assert cold.n_rollouts.tolist() == hot.n_rollouts.tolist() == [4] * 4
    assert hot.run_info["generated"] == 32 and hot.run_info["settings"]["resample"]["temperature"] == 1.0
    assert set(cold.run_info["settings_ids"].values()).isdisjoint(hot.run_info["settings_ids"].values())
    # more rollouts at a known setting reuse the stored ones and add the rest; fewer read only the first ones
    more = run_rollouts(HotSampler(), trace, path, trace_id="t", n_rollouts=6, temperature=1.0, reference_answer="4")
    assert (more.already_done, more.generated) == (32, 16)
    again = resampling_importance(HotSampler(), trace, n_rollouts=4, store=path, temperature=0.0, **kwargs)
    assert again.n_rollouts.tolist() == [4] * 4 and again.accuracy.tolist() == [1.0] * 4
    assert (again.run_info["already_done"], again.run_info["generated"]) == (32, 0)
    # another max_tokens is another setting for resample rollouts (forced ones have their own budget: reused);
    # another reference answer is not a setting (re-read, not regenerated)
    longer = run_rollouts(HotSampler(), trace, path, trace_id="t", n_rollouts=4, temperature=0.0, max_tokens=99,
                          reference_answer="4")
    assert (longer.already_done, longer.generated) == (16, 16)
    judged = resampling_importance(HotSampler(), trace, n_rollouts=4, store=path, temperature=0.0,
                                   **{**kwargs, "reference_answer": "5"})
    assert judged.accuracy.tolist() == [0.0] * 4 and store.count("t") == 2 * 4 * 4 * 2 + 16 + 16


class HotSampler(Sampler):
    """Answers 4 at temperature 0 and 5 above it: which settings a metric read shows in its answers."""

    name = "hot"

    def stream(self, requests, params):
        answer = 4 if params.temperature == 0 else 5
        for r in requests:
            text = f"{answer}}}" if r.prompt.endswith(FORCED_SUFFIX) else f" Step. So \\boxed{{{answer}}}."
            yield Completion(r, text, n_tokens=3, finish_reason="stop")


class CutOffSampler(Sampler):
    """Every resample rollout is cut off mid-computation ("3 * 4 = 12, then"), except seeds divisible by 4,
    which box an answer before the cut (7) or finish (8 after "6 + 2 ="): the last-number fallback may read
    finished rollouts only."""

    name = "cutoff"

    def stream(self, requests, params):
        for r in requests:
            if r.prompt.endswith(FORCED_SUFFIX):
                yield Completion(r, "7}", n_tokens=2, finish_reason="stop")
            elif r.seed % 4 == 0:
                yield Completion(r, " So \\boxed{7}. Check: 3 * 4 = 12, then", n_tokens=params.max_tokens, finish_reason="length")
            elif r.seed % 4 == 1:
                yield Completion(r, " 6 + 2 = 8.", n_tokens=5, finish_reason="stop")
            else:
                yield Completion(r, " 3 * 4 = 12, then", n_tokens=params.max_tokens, finish_reason="length")


def test_a_cut_off_rollout_with_an_intermediate_number_has_no_answer(trace, tmp_path):
    store = RolloutStore(tmp_path / "r.sqlite")
    result = resampling_importance(CutOffSampler(), trace, n_rollouts=8, store=store, trace_id="c", reference_answer="7",
                                   extractor="boxed_or_last_number", embed=cheap_embed, progress=False, n_bootstrap=0)
    stored = store.rollouts("c", kind=RESAMPLE)
    by_seed = {r.seed % 4: r for r in stored}
    assert by_seed[2].finish_reason == "length" and by_seed[2].answer is None and by_seed[3].answer is None
    assert by_seed[0].finish_reason == "length" and by_seed[0].answer == "7"  # a complete boxed answer counts
    assert by_seed[1].finish_reason == "stop" and by_seed[1].answer == "8"  # the fallback reads finished text
    frame = result.to_dataframe()
    expected_cut = [sum(r.seed % 4 in (0, 2, 3) for r in stored if r.sentence_index == i) for i in range(4)]
    expected_answered = [sum(r.seed % 4 in (0, 1) for r in stored if r.sentence_index == i) for i in range(4)]
    assert frame.n_truncated.tolist() == expected_cut and frame.n_answered.tolist() == expected_answered
    assert frame.n_rollouts.tolist() == [8] * 4
    assert result.truncated_sentences() == [0, 1, 2, 3]
    message = result.truncation_message()
    assert "--rollout-tokens" in message and "max_tokens=" in message and "rollout_max_tokens=" in message
    assert result.truncated_sentences(threshold=0.99) == [] and result.truncation_message(threshold=0.99) is None
    # the store's NULL answers are what the SQL sees too
    assert store.to_dataframe("c").query("finish_reason == 'length' and kind == 'resample'").answer.notna().sum() == \
        sum(r.seed % 4 == 0 for r in stored)


def test_bad_run_settings_are_clear_errors(trace, tmp_path, tiny_llama):
    for kwargs, match in (({"n_rollouts": 0}, "n_rollouts"), ({"sentences": [9]}, "outside"),
                          ({"prompt_mode": "x"}, "prompt_mode"), ({"extractor": "nope"}, "extractor")):
        with pytest.raises(AnchorlensError, match=match):
            run_rollouts(PlantedSampler(), trace, tmp_path / "r.sqlite", **kwargs)
    with pytest.raises(RunSettingsError, match="cannot sample"):
        as_sampler(42)
    assert isinstance(as_sampler(tiny_llama), LocalSampler)


# --------------------------------------------------------------------------- kill -9 and resume

RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from anchorlens import Trace, random_model
    from anchorlens.resampling.runner import run_rollouts
    from anchorlens.resampling.samplers import LocalSampler

    model = random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0, check_attention_edits=False)
    trace = Trace.from_text(model, sys.argv[2], prompt="Q: What is 2 + 2?\\nA: ")
    run_rollouts(LocalSampler(model, batch_size=2, progress=False), trace, sys.argv[1], trace_id="kill",
                 n_rollouts=4, max_tokens=32, forced_max_tokens=4, reference_answer="4")
    print("RUN COMPLETE")
    """
)
TOTAL = 4 * 4 * 2  # sentences x rollouts x kinds


def _count(path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_and_resume_loses_and_duplicates_nothing(tmp_path, tiny_llama, trace):
    path = tmp_path / "killed.sqlite"
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    kills = []  # rollouts stored when each SIGKILL landed
    for _ in range(2):
        before = _count(path)
        process = subprocess.Popen([sys.executable, str(script), str(path), COT], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while process.poll() is None and _count(path) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)  # mid-run, possibly mid-write
            process.wait(timeout=60)
            kills.append(_count(path))
        else:
            break
    assert len(kills) == 2 and all(0 < k < TOTAL for k in kills), f"the kills did not land mid-run: {kills}"
    final = subprocess.run([sys.executable, str(script), str(path), COT], capture_output=True, text=True, timeout=600)
    assert "RUN COMPLETE" in final.stdout, final.stdout + final.stderr

    stored = RolloutStore(path).rollouts("kill")
    keys = [(r.sentence_index, r.kind, r.seed) for r in stored]
    expected = {(i, kind, rollout_seed("kill", i, kind, n)) for i in range(4) for kind in (RESAMPLE, FORCED) for n in range(4)}
    assert len(keys) == TOTAL and set(keys) == expected  # nothing lost, nothing twice, nothing extra
    # and the resumed rollouts are the very rollouts an uninterrupted run makes
    clean = tmp_path / "clean.sqlite"
    run_rollouts(LocalSampler(tiny_llama, batch_size=2, progress=False), trace, clean, trace_id="kill",
                 n_rollouts=4, max_tokens=32, forced_max_tokens=4, reference_answer="4")
    assert [(r.sentence_index, r.kind, r.seed, r.text) for r in RolloutStore(clean).rollouts("kill")] == [
        (r.sentence_index, r.kind, r.seed, r.text) for r in stored]


# --------------------------------------------------------------------------- SmolLM2 end to end

PROBLEM = "What is 3 + 4?"
SMOL_COT = "I need to add 3 and 4 together. Three plus four equals seven. So the final answer is \\boxed{7}."


@pytest.fixture(scope="module")
def smol_trace(smol):
    return Trace.from_text(smol, SMOL_COT, prompt=problem_prompt(smol, PROBLEM), metadata={"problem": PROBLEM})


def check_run(result, store, trace_id, n_sentences):
    frame = result.to_dataframe()
    assert len(frame) == n_sentences and frame.n_rollouts.tolist() == [2] * n_sentences
    assert frame.n_forced.tolist() == [2] * n_sentences
    # a rollout without an answer counts in no metric (32 tokens rarely reach \boxed{}): NaN where none answered
    answered = frame.n_answered > 0
    assert frame.different_trajectories_fraction[answered].between(0, 1).all()
    assert frame.different_trajectories_fraction[~answered].isna().all()
    rollouts = store.rollouts(trace_id)
    assert len(rollouts) == n_sentences * 2 * 2
    assert all(r.n_tokens >= 1 for r in rollouts) and any(r.text.strip() for r in rollouts if r.kind == RESAMPLE)
    assert any(r.answer for r in rollouts if r.kind == FORCED), "SmolLM2 should answer some forced prompts"
    assert all(r.is_correct is not None for r in rollouts)
    result.plot("accuracy")


@pytest.mark.slow
def test_smollm2_run_through_the_local_sampler(smol, smol_trace, tmp_path):
    store = RolloutStore(tmp_path / "local.sqlite")
    result = resampling_importance(smol, smol_trace, n_rollouts=2, store=store, reference_answer="7",
                                   max_tokens=32, forced_max_tokens=6, batch_size=2, progress=False)
    check_run(result, store, result.trace_id, smol_trace.n_sentences)
    assert store.to_dataframe().sampler.str.startswith("local:").all()


@pytest.mark.slow
def test_smollm2_run_through_a_transformers_serve_server(smol_trace, tmp_path, embedded_server):
    store = RolloutStore(tmp_path / "server.sqlite")
    result = resampling_importance(embedded_server.sampler(concurrency=2, progress=False), smol_trace, n_rollouts=2,
                                   store=store, reference_answer="7", max_tokens=24, forced_max_tokens=6,
                                   prompt_mode="reference", progress=False)
    check_run(result, store, result.trace_id, smol_trace.n_sentences)
    settings = store.trace_info(result.trace_id)["settings"].values()
    assert [s["prompt_mode"] for s in settings] == ["reference"] * 2
    assert all(s["sampler"]["sampler"] == "server" for s in settings)


def test_a_local_sampler_is_identified_by_model_dtype_and_weights(tiny_llama):
    """What the store keys local rollouts on: a model with the same name but other weights or dtype differs."""
    from anchorlens import random_model

    identity = LocalSampler(tiny_llama, progress=False).identity
    assert identity == LocalSampler(tiny_llama, progress=False).identity  # stable
    assert identity["model"] == tiny_llama.anchorlens_name and identity["dtype"] == "torch.float32"
    twin = random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0)
    assert LocalSampler(twin, progress=False).identity == identity  # same weights, same key
    with torch.no_grad():
        dict(twin.named_parameters())[sorted(n for n, _ in twin.named_parameters())[-1]].mul_(1.01)
    changed = LocalSampler(twin, progress=False).identity
    assert changed["model"] == identity["model"] and changed["weights"] != identity["weights"]
    with twin.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda t, hook: t)]):  # sampling under an intervention
        assert LocalSampler(twin, progress=False).identity["hooks"] == ["blocks.0.hook_out"]
    assert "hooks" not in LocalSampler(twin, progress=False).identity
    half = random_model("llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0, dtype=torch.bfloat16)
    assert LocalSampler(half, progress=False).identity["dtype"] == "torch.bfloat16"
