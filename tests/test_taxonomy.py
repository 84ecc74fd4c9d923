"""Sentence taxonomy: the shipped classifier against held-out published labels, features, the LLM labeller."""

from __future__ import annotations

import json

import numpy as np
import pytest

import anchorlens
from anchorlens.errors import AnchorlensError
from anchorlens.resampling.published_format import load_reference_trace
from anchorlens.taxonomy import SENTENCE_CATEGORIES, TaxonomyClassifier, classify_sentences, label_sentences_with_model
from anchorlens.taxonomy.classifier import DEFAULT_WEIGHTS
from anchorlens.taxonomy.features import LEXICAL_NAMES, lexical_features, sentence_features
from anchorlens.taxonomy.llm_labeller import labelling_prompt, parse_category

from conftest import REFERENCE


@pytest.fixture(scope="module")
def shipped():
    return TaxonomyClassifier.load()


def test_eight_categories():
    assert SENTENCE_CATEGORIES == (
        "problem_setup", "plan_generation", "fact_retrieval", "active_computation",
        "uncertainty_management", "result_consolidation", "self_checking", "final_answer_emission",
    )
    assert anchorlens.SENTENCE_CATEGORIES == SENTENCE_CATEGORIES


def test_shipped_weights_are_small_and_documented(shipped):
    assert DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    assert shipped.categories == SENTENCE_CATEGORIES
    info = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert info["held_out_problems"] and info["held_out"]["accuracy"] > 0
    assert (DEFAULT_WEIGHTS.parent / "taxonomy_report.md").exists()


@pytest.mark.slow  # runs the embedded SmolLM2's first layers over four published traces
def test_shipped_classifier_reproduces_its_held_out_scores(shipped):
    """The stated held-out numbers hold on the held-out published traces (problems it never saw)."""
    from sklearn.metrics import accuracy_score, f1_score

    info = shipped.info
    labels, predicted = [], []
    for problem in info["held_out_problems"]:
        for folder in sorted(REFERENCE.glob(f"*/*/{problem}")):
            trace = load_reference_trace(folder)
            labels += trace.categories
            predicted += classify_sentences(trace.sentences)
    assert len(labels) == info["held_out"]["n_sentences"]
    accuracy = accuracy_score(labels, predicted)
    macro_f1 = f1_score(labels, predicted, average="macro", labels=list(SENTENCE_CATEGORIES), zero_division=0)
    assert accuracy == pytest.approx(info["held_out"]["accuracy"], abs=0.01)
    assert macro_f1 == pytest.approx(info["held_out"]["macro_f1"], abs=0.01)
    assert accuracy > info["held_out"]["baseline_accuracy"]  # better than embedding + logistic regression
    # ... and than the previous classifier (MiniLM features only) on both scores, in the same evaluation
    assert accuracy > info["held_out"]["previous_accuracy"] and macro_f1 > info["held_out"]["previous_macro_f1"]
    assert info["leave_one_problem_out"]["accuracy"] > info["leave_one_problem_out"]["previous_accuracy"]
    assert info["leave_one_problem_out"]["macro_f1"] > info["leave_one_problem_out"]["previous_macro_f1"]


@pytest.mark.slow  # loads the SmolLM2 feature model
def test_obvious_sentences():
    tags = classify_sentences(
        [
            "Okay, so I need to find the area of a triangle with base 6 and height 4.",
            "Let me recall the formula for the area of a triangle: half base times height.",
            "So 1/2 * 6 * 4 = 12.",
            "Wait, did I use the right height?",
            "**Final Answer**\nThe area is \\boxed{12}.",
        ]
    )
    assert len(tags) == 5 and set(tags) <= set(SENTENCE_CATEGORIES)
    assert tags[2] == "active_computation"
    assert tags[3] == "uncertainty_management"
    assert tags[4] == "final_answer_emission"


@pytest.mark.slow  # loads the SmolLM2 feature model
def test_accepts_sentence_objects_and_rejects_bad_input():
    sentences = anchorlens.split_sentences("Let me add 2 and 3. That gives 5. So the answer is 5.")
    assert len(classify_sentences(sentences)) == len(sentences)
    with pytest.raises(AnchorlensError, match="list of sentences"):
        classify_sentences("one string")
    with pytest.raises(AnchorlensError, match="no sentences"):
        classify_sentences([])


def test_features_shape_and_cues():
    x = sentence_features(["Let me add 2 and 3.", "2 + 3 = 5.", "Wait, is that right?"])
    assert x.shape[0] == 3 and np.isfinite(x).all()
    cues = lexical_features(["Wait, is that right?", "2 + 3 = 5."])
    assert cues[0, LEXICAL_NAMES.index("starts_wait")] == 1 and cues[0, LEXICAL_NAMES.index("has_question")] == 1
    assert cues[1, LEXICAL_NAMES.index("digit_ratio")] > cues[0, LEXICAL_NAMES.index("digit_ratio")]


def test_parse_category():
    assert parse_category("3") == "fact_retrieval"
    assert parse_category("The category is self_checking.") == "self_checking"
    assert parse_category("plan generation") == "plan_generation"
    assert parse_category("I don't know") is None


def test_llm_labeller_with_callable_and_fallback():
    replies = iter(["8", "gibberish"])
    tags = label_sentences_with_model(lambda prompt: next(replies), ["x = 5.", "Wait, hmm."], progress=False)
    assert tags[0] == "final_answer_emission" and tags[1] in SENTENCE_CATEGORIES
    with pytest.raises(AnchorlensError, match="named no category"):
        label_sentences_with_model(lambda prompt: "?", ["x = 5."], fallback="error", progress=False)
    prompt = labelling_prompt(["First.", "Second."], 1, problem="What is 2+3?")
    assert "Problem: What is 2+3?" in prompt and "Sentence: Second." in prompt and "8. final_answer_emission" in prompt
    assert "Examples:" in prompt and prompt.count("\nCategory: ") == 16  # two worked examples per category
    assert "Examples:" not in labelling_prompt(["First.", "Second."], 1, examples=False)


@pytest.mark.slow
def test_llm_labeller_on_smollm2(smol):
    sentences = ["12 + 30 = 42.", "Wait, let me double-check that.", "So the answer is 42."]  # short: CPU forwards
    tags = label_sentences_with_model(smol, sentences, problem="What is 12 + 30?", context=1, progress=False)
    assert len(tags) == len(sentences)
    assert all(tag in SENTENCE_CATEGORIES for tag in tags)


@pytest.mark.slow
def test_llm_labeller_prefix_cache_equals_the_whole_prompt(smol, one_torch_thread):
    """The shared part of the prompt runs once (a KV cache): same tokens and next-token logits as one
    forward of the whole prompt, for each sentence in turn (the cache is cut back after each)."""
    import torch

    from anchorlens.taxonomy.llm_labeller import _bridge_prompt, _instructions, _PrefixLabeller, _sentence_part
    from anchorlens.trace import encode_text

    sentences = ["12 + 30 = 42.", "Wait, let me double-check that.", "So the answer is 42."]
    labeller = _PrefixLabeller(smol, _instructions(False))  # without the examples: a shorter prompt, same mechanism
    for i in (1, 2):
        own = _sentence_part(sentences, i, problem="What is 12 + 30?", context=2)
        prompt = labelling_prompt(sentences, i, problem="What is 12 + 30?", examples=False)
        whole = encode_text(smol, _bridge_prompt(smol, prompt))
        assert labeller.token_ids(own) == whole
        expected = smol(torch.tensor([whole]), return_type="logits")[0, -1]
        torch.testing.assert_close(labeller.logits(own), expected, atol=1e-4, rtol=1e-4)


def test_scores_by_problem_equal_sklearn_per_fold_and_pooled():
    """The cross-validation summary of the training scripts against sklearn: pooled accuracy and macro-F1 over
    all 8 categories, and the mean over folds of macro-F1 over the categories present in each fold."""
    from sklearn.metrics import accuracy_score, f1_score

    from anchorlens.taxonomy.training import score_by_problem

    rng = np.random.default_rng(3)
    folds = []
    for n, present in ((40, [0, 3, 4]), (25, [1, 3, 5, 7]), (60, list(range(8)))):
        y = rng.choice(present, n)
        folds.append((y, np.where(rng.random(n) < 0.6, y, rng.integers(0, 8, n))))
    got = score_by_problem(folds)
    y_all, p_all = np.concatenate([y for y, _ in folds]), np.concatenate([p for _, p in folds])
    assert got["accuracy"] == pytest.approx(accuracy_score(y_all, p_all))
    assert got["macro_f1"] == pytest.approx(f1_score(y_all, p_all, average="macro", labels=list(range(8)), zero_division=0))
    fold_f1 = [f1_score(y, p, average="macro", labels=sorted(set(y)), zero_division=0) for y, p in folds]
    assert got["fold_mean"]["macro_f1"] == pytest.approx(np.mean(fold_f1))
    assert got["fold_mean"]["accuracy"] == pytest.approx(np.mean([accuracy_score(y, p) for y, p in folds]))
    with pytest.raises(ValueError, match="at least one fold"):
        score_by_problem([])
