"""Thought Branches methods against ground truth: a planted sampler with known behaviour (closed-form resilience,
persistence, abandonment, Counterfactual++, transplant curve; a planted on-policy candidate) and independent
implementations of the scores written here from their definitions (docs/branches.md)."""

from __future__ import annotations

import inspect
import math
from functools import cache

import numpy as np
import pandas as pd
import pytest

import anchorlens as al
from anchorlens.branches import PlantedSampler, chain_disruption, resilience, transplant_resampling
from anchorlens.branches.keyed import BranchSettingsError
from anchorlens.branches.scores import chain_score
from anchorlens.resampling.store import RolloutStore

CONTENT = "The train leaves the station at noon."
COT = "We need to plan the trip. " + CONTENT + " Then we count the stops. So it is 42."
PROMPT = "Question: when does the train leave? Put the answer in a box.\n"


@cache
def trace():
    model = al.random_model("llama", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, seed=0)
    return al.Trace.from_text(model, COT, prompt=PROMPT)


def inside(value, low, high):
    return low <= value <= high


def bernoulli_kl(p, q):
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


@pytest.mark.parametrize("p, cap", [(0.6, 4), (0.3, 3)])
@pytest.mark.slow  # loads MiniLM; several seconds
def test_planted_resilience_and_counterfactual_pp_match_closed_form(tmp_path, p, cap):
    sampler = PlantedSampler(CONTENT, p, q_present=0.9, q_absent=0.2)
    result = resilience(sampler, trace(), [1], n_rollouts=300, max_iterations=cap, store=tmp_path / "r.sqlite",
                        reference_answer="42", progress=False)
    row = result.to_dataframe().iloc[0]
    closed = {"resilience": sum(p**k for k in range(1, cap + 1)), "persistence": p**cap,
              "abandonment": 1 - p**cap, "counterfactual_pp_accuracy": 0.9 - 0.2,
              "counterfactual_pp_kl": bernoulli_kl(0.2, 0.9)}
    for name, value in closed.items():
        low, high = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
        assert inside(value, low, high), (name, value, low, high)
    assert row["persistence_rate"] + row["abandonment_rate"] == pytest.approx(1)
    assert row["counterfactual_pp_accuracy"] > 0  # kept minus abandoned: the sign opposite to Thought Anchors'


def _independent_scores(chains, threshold, cap):
    """From the definition: count iterations whose best cosine reached the threshold, stopping at the first that
    did not; persisted = every one of ``cap`` iterations matched."""
    out = []
    for chain in chains:
        score, ran = 0, 0
        for cosine in chain["best_cosine"]:
            ran += 1
            if not (cosine >= threshold):  # NaN (no sentence at all) is no match
                break
            score += 1
        out.append((ran, score, score == cap))
    return out


@pytest.mark.slow  # loads MiniLM; several seconds
def test_scores_equal_an_independent_implementation_on_fixed_rollouts(tmp_path):
    sampler = PlantedSampler(CONTENT, 0.5, q_present=0.7, q_absent=0.4)
    result = resilience(sampler, trace(), [0, 1, 3], n_rollouts=40, max_iterations=3, store=tmp_path / "r.sqlite",
                        reference_answer="42", n_bootstrap=0, progress=False)
    chains = result.chains_dataframe()
    assert {True, False} <= set(chains.persisted) and (chains.score == 0).any() and (chains.score == 3).any()
    frame = result.to_dataframe().set_index("sentence")
    store = RolloutStore(tmp_path / "r.sqlite")
    for i in (0, 1, 3):
        mine = [c for c in result.chains if c["sentence"] == i]
        expected = _independent_scores(mine, 0.6, 3)
        assert [(c["iterations"], c["score"], c["persisted"]) for c in mine] == expected
        assert frame.loc[i, "resilience"] == pytest.approx(np.mean([e[1] for e in expected]))
        assert frame.loc[i, "persistence_rate"] == pytest.approx(np.mean([e[2] for e in expected]))
        abandoned = [c for c, e in zip(mine, expected) if not e[2]]
        acc_abandoned = np.mean([c["final_answer"] == "42" for c in abandoned]) if abandoned else float("nan")
        if i + 1 < trace().n_sentences:  # kept: the plain rollouts of the next sentence, read from the store
            kept = [r for r in store.rollouts(f"{result.trace_id}", sentence_index=i + 1, kind="resample")]
            assert len(kept) == 40
            acc_kept = np.mean([r.answer == "42" for r in kept])
            assert frame.loc[i, "counterfactual_pp_accuracy"] == pytest.approx(acc_kept - acc_abandoned, nan_ok=True)
            counts = [sum(c["final_answer"] == a for c in abandoned) for a in ("42", "41")]
            kept_counts = [sum(r.answer == a for r in kept) for a in ("42", "41")]
            support = [k for k in range(2) if counts[k] or kept_counts[k]]
            alpha = 1e-9
            pa = [(counts[k] + alpha) / (sum(counts) + alpha * len(support)) for k in support]
            pk = [(kept_counts[k] + alpha) / (sum(kept_counts) + alpha * len(support)) for k in support]
            kl = max(0.0, sum(a * math.log(a / b) for a, b in zip(pa, pk))) if abandoned else float("nan")
            assert frame.loc[i, "counterfactual_pp_kl"] == pytest.approx(kl, nan_ok=True)
        else:  # the last sentence: nothing keeps it
            assert math.isnan(frame.loc[i, "counterfactual_pp_accuracy"])


def test_chain_score_cap_and_no_match():
    from anchorlens.branches.scores import ChainScore

    assert chain_score([False], 20) == ChainScore(1, 0, False, True)
    assert chain_score([True, True, True], 3).persisted
    assert chain_score([True, False], 3).score == 1
    with pytest.raises(ValueError):
        chain_score([True, False, True], 3)


@pytest.mark.slow  # loads MiniLM; several seconds
def test_a_second_call_samples_nothing(tmp_path):
    sampler = PlantedSampler(CONTENT, 0.6)
    first = resilience(sampler, trace(), [1], n_rollouts=20, max_iterations=5, store=tmp_path / "r.sqlite",
                       reference_answer="42", progress=False)
    calls = sampler.calls
    again = resilience(sampler, trace(), [1], n_rollouts=20, max_iterations=5, store=tmp_path / "r.sqlite",
                       reference_answer="42", progress=False)
    assert sampler.calls == calls and again.run_info["generated"] == 0
    assert again.rows == first.rows and again.chains == first.chains


@pytest.mark.slow  # loads MiniLM; several seconds
def test_planted_candidate_is_found_on_policy(tmp_path):
    trigger = "I should double-check this."
    follow = "Wait, let me verify the whole computation again."
    sampler = PlantedSampler(CONTENT, 0.5, openers=("Let me write the numbers down.", "Okay, moving on.", trigger),
                             triggers={trigger: follow})
    result = chain_disruption(sampler, trace(), 1, "Wait, let me check the computation again.", n_candidates=6,
                              n_continuations=2, n_rollouts=100, store=tmp_path / "r.sqlite", reference_answer="42",
                              progress=False)
    assert result.found and result.replacement.strip() == trigger and result.next_sentence == follow
    frame = result.to_dataframe().set_index("policy")
    # closed form: on-policy replaces sentence 1 (the content), which comes back with p = 0.5, so accuracy is
    # 0.5 * 0.9 + 0.5 * 0.2 against 0.9 when it is kept; off-policy keeps it: no change
    for policy, change in (("on", 0.5 * 0.9 + 0.5 * 0.2 - 0.9), ("off", 0.0)):
        low, high = frame.loc[policy, "accuracy_change_ci_low"], frame.loc[policy, "accuracy_change_ci_high"]
        assert inside(change, low, high), (policy, change, low, high)


@pytest.mark.slow  # loads MiniLM; several seconds
def test_search_that_cannot_succeed_reports_no_on_policy_effect(tmp_path):
    sampler = PlantedSampler(CONTENT, 0.5)
    result = chain_disruption(sampler, trace(), 1, "Completely unrelated: the sky is green.", n_candidates=3,
                              n_continuations=2, max_iterations=2, n_rollouts=5, store=tmp_path / "r.sqlite",
                              reference_answer="42", progress=False)
    assert not result.found and len(result.search) == 2
    assert math.isnan(result.to_dataframe().set_index("policy").loc["on", "accuracy_change"])


@pytest.mark.slow  # loads MiniLM; several seconds
def test_transplant_curve_matches_closed_form(tmp_path):
    sampler = PlantedSampler(CONTENT, 0.0, q_present=0.9, q_absent=0.2)
    curve = transplant_resampling(sampler, trace(), "Another question, no hint.\n", n_rollouts=200,
                                  reference_answer="42", cue_answer="41", store=tmp_path / "r.sqlite", progress=False)
    frame = curve.to_dataframe()
    assert list(frame.sentences_transplanted) == [0, 1, 2, 3, 4]
    for row in frame.itertuples():
        expected = 0.9 if row.sentences_transplanted >= 2 else 0.2  # the content is sentence 1
        assert inside(expected, row.accuracy_ci_low, row.accuracy_ci_high), row
        assert row.cue_rate == pytest.approx(1 - row.accuracy)


def test_bad_settings_are_refused_before_sampling(tmp_path):
    sampler = PlantedSampler(CONTENT, 0.5)
    with pytest.raises(BranchSettingsError, match="outside"):
        resilience(sampler, trace(), [9], store=tmp_path / "r.sqlite")
    with pytest.raises(BranchSettingsError, match="last"):
        chain_disruption(sampler, trace(), 3, "Wait.", store=tmp_path / "r.sqlite")
    with pytest.raises(BranchSettingsError, match="cosine"):
        resilience(sampler, trace(), [1], similarity_threshold=2, store=tmp_path / "r.sqlite")
    with pytest.raises(BranchSettingsError, match="level must lie in"):
        transplant_resampling(sampler, trace(), PROMPT, level=95, store=tmp_path / "r.sqlite")
    with pytest.raises(BranchSettingsError, match="max_tokens"):
        chain_disruption(sampler, trace(), 1, "Wait.", max_tokens=0, store=tmp_path / "r.sqlite")
    assert sampler.calls == 0


CALLS = {resilience: ([1],), chain_disruption: (1, "Wait, let me check."), transplant_resampling: (PROMPT,)}


def test_the_shared_options_are_keyword_arguments_of_every_branch_method(tmp_path):
    """The options the three methods share (``BranchOptions``) are in each signature with their defaults (what
    ``help`` shows); a misspelt one is a TypeError before any sampling, as for any function."""
    from dataclasses import fields

    from anchorlens.branches.run import BranchOptions

    sampler = PlantedSampler(CONTENT, 0.5)
    for method, args in CALLS.items():
        parameters = inspect.signature(method).parameters
        for option in fields(BranchOptions):
            assert parameters[option.name].default == option.default, (method.__name__, option.name)
            assert parameters[option.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert "options" not in parameters and parameters["n_rollouts"].default > 1
        with pytest.raises(TypeError, match="unexpected keyword argument 'n_boostrap'"):
            method(sampler, trace(), *args, n_boostrap=10, store=tmp_path / "r.sqlite")
    assert sampler.calls == 0


def test_the_old_confidence_keyword_still_works_for_one_release(tmp_path):
    """``confidence`` was renamed ``level`` (issue 30): the old keyword still works, with a DeprecationWarning
    naming the new one, and gives the same intervals (at 80% narrower than at the default 95%)."""
    sampler = PlantedSampler(CONTENT, 0.0, q_present=0.9, q_absent=0.2)
    options = dict(positions=[0, 3], n_rollouts=40, reference_answer="42", cue_answer="41", n_bootstrap=300,
                   store=tmp_path / "r.sqlite", progress=False)
    new = transplant_resampling(sampler, trace(), PROMPT, level=0.8, **options)
    deprecated = r"transplant_resampling\(confidence=\.\.\.\) is deprecated, use level="
    with pytest.warns(DeprecationWarning, match=deprecated):
        old = transplant_resampling(sampler, trace(), PROMPT, confidence=0.8, **options)
    assert old.level == new.level == 0.8 and old.run_info["generated"] == 0
    pd.testing.assert_frame_equal(old.to_dataframe(), new.to_dataframe())
    wide, narrow = transplant_resampling(sampler, trace(), PROMPT, **options).to_dataframe(), new.to_dataframe()
    assert (wide.accuracy_ci_low <= narrow.accuracy_ci_low).all()
    assert (narrow.accuracy_ci_high <= wide.accuracy_ci_high).all()
    assert (wide.accuracy_ci_high - wide.accuracy_ci_low > narrow.accuracy_ci_high - narrow.accuracy_ci_low).all()
    with pytest.raises(TypeError, match="both"):
        transplant_resampling(sampler, trace(), PROMPT, confidence=0.8, level=0.8, **options)


@pytest.mark.slow  # loads MiniLM
def test_analyze_resilience_step_is_keyed_and_reused(tmp_path):
    sampler = PlantedSampler(CONTENT, 0.6)
    model = al.random_model("llama", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, seed=0)
    lines = []
    run = lambda **kw: al.analyze(model, tmp_path, trace=trace(), sampler=sampler, steps=("resampling",),  # noqa: E731
                                  n_rollouts=10, reference_answer="42", say=lines.append, progress=False, **kw)
    first = run(resilience_top=2)
    frame = first.to_dataframe()
    measured = frame.index[frame["resilience"].notna()].tolist()
    kl = frame["counterfactual_importance_kl"].to_numpy()
    assert measured == sorted(np.argsort(-np.nan_to_num(kl, nan=-np.inf), kind="stable")[:2].tolist())
    assert "resilience" in (tmp_path / "sentences_columns.md").read_text()
    calls, lines[:] = sampler.calls, []
    run(resilience_top=2)
    assert lines == ["trace: reused", "resampling: reused", "resilience: reused"] and sampler.calls == calls
    lines[:] = []
    run(resilience_top=2, resilience_iterations=3)
    assert "resilience: recomputed (max_iterations 20 -> 3)" in lines
    loaded = al.Analysis.load(tmp_path)
    assert loaded.resilience.settings["max_iterations"] == 3
    with pytest.raises(al.AnchorlensError, match="resampling"):
        al.analyze(model, tmp_path / "other", trace=trace(), sampler=sampler, steps=("categories",), resilience_top=1)


@pytest.mark.slow  # loads MiniLM and the taxonomy classifier
def test_a_study_aggregates_resilience_by_category(tmp_path):
    from anchorlens.study.collect import trace_dir

    sampler = PlantedSampler(CONTENT, 0.6)
    model = al.random_model("llama", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, seed=0)
    other = al.Trace.from_text(model, "First we list the stops. " + CONTENT + " So the answer is 42.", prompt=PROMPT,
                               metadata={"name": "other"})
    named = al.Trace.from_text(model, COT, prompt=PROMPT, metadata={"name": "train"})
    options = dict(views=("categories",), importance="rollouts", n_rollouts=6, sampler=sampler, n_bootstrap=50,
                   progress=False)
    al.study(model, [named, other], out_dir=tmp_path, **options)
    for t in (named, other):  # the resilience step on each trace's folder, sharing the study's rollouts
        al.analyze(model, trace_dir(tmp_path, t.metadata["name"]), trace=t, sampler=sampler,
                   steps=("categories", "resampling"), n_rollouts=6, extractor="boxed", resilience_top=2,
                   progress=False)
    result = al.study(model, [named, other], out_dir=tmp_path, **options)
    assert result.sentences["resilience"].notna().sum() == 4
    # the pooled mean over sentences (the reference figure's filters and minimum counts would drop these 2 traces)
    table = result.by_category(["resilience", "counterfactual_pp_accuracy"], convergence=False, clip=False,
                               weighting="sentence", min_sentences=1, min_traces=1)
    assert {"resilience", "counterfactual_pp_accuracy"} <= set(table.columns)
    measured = result.sentences.dropna(subset=["resilience"]).groupby("category")["resilience"].mean()
    assert np.allclose(table.set_index("category").loc[measured.index, "resilience"], measured)
