"""The taxonomy's training side: the shipped weights against the training script's own reference, the script
on a tiny budget, and the few-shot examples of the language-model labeller."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from anchorlens.resampling.published_format import load_reference_trace
from anchorlens.taxonomy import SENTENCE_CATEGORIES, TaxonomyClassifier, classify_sentences
from anchorlens.taxonomy.classifier import DEFAULT_WEIGHTS
from anchorlens.taxonomy.llm_labeller import FEW_SHOT_EXAMPLES

from conftest import REFERENCE, REPO


def test_shipped_weights_load_offline_from_the_package():
    clf = TaxonomyClassifier.load()  # no path: the package's own file
    assert DEFAULT_WEIGHTS.parent.name == "data" and DEFAULT_WEIGHTS.parent.parent.name == "anchorlens"
    assert clf.lm_layers == tuple(clf.info["hyperparameters"]["lm_layers"])
    assert clf.linear.weight.shape[0] == len(SENTENCE_CATEGORIES)


@pytest.mark.slow  # the embedded SmolLM2's first layers over 12 sentences
def test_predictions_on_held_out_sentences_match_the_training_reference(one_torch_thread):
    """The package's features (MiniLM, cues, SmolLM2 states computed now) give the probabilities that the
    training script computed from its cached features for the first sentences of a held-out trace."""
    clf = TaxonomyClassifier.load()
    reference = clf.info["reference"]
    assert reference["trace"].split("/")[1] in clf.info["held_out_problems"]
    sentences = load_reference_trace(REFERENCE / "deepseek-r1-distill-llama-8b" / reference["trace"]).sentences
    tags, proba = classify_sentences(sentences[: reference["n_sentences"]], probabilities=True)
    np.testing.assert_allclose(proba, np.array(reference["proba"]), atol=1e-4)  # 5e-7 when written
    assert tags == reference["tags"]


@pytest.mark.slow  # trains on 8 truncated traces: ~1 minute, mostly loading MiniLM and SmolLM2
def test_training_script_on_a_tiny_budget(tmp_path):
    data = tmp_path / "data"
    for kind in ("correct_base_solution", "incorrect_base_solution"):
        for problem in ("problem_330", "problem_1591", "problem_2189", "problem_6998"):
            source = REFERENCE / "deepseek-r1-distill-llama-8b" / kind / problem
            out = data / kind / problem
            out.mkdir(parents=True)
            records = sorted(json.loads((source / "chunks_labeled.json").read_text()), key=lambda r: r["chunk_idx"])
            (out / "chunks_labeled.json").write_text(json.dumps(records[:14]))
            (out / "problem.json").write_text((source / "problem.json").read_text())
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_taxonomy.py"), "--data", str(data), "--out", str(out),
         "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    clf = TaxonomyClassifier.load(out / "taxonomy_classifier.npz")
    assert clf.info["held_out"]["n_sentences"] == 2 * 2 * 14 and len(clf.info["trained_on"]) == 4
    assert set(clf.lm_layers) <= {15, 20}
    report = (out / "taxonomy_report.md").read_text()
    assert "## Scores" in report and "layer-20 classifier" in report and "Confusion" in report


def test_few_shot_examples_come_from_training_problems_with_their_labels():
    held_out = TaxonomyClassifier.load().info["held_out_problems"]
    counts = {c: 0 for c in SENTENCE_CATEGORIES}
    for category, text, source in FEW_SHOT_EXAMPLES:
        problem, kind, index = source.split()
        assert f"problem_{problem}" not in held_out
        folder = REFERENCE / "deepseek-r1-distill-llama-8b" / f"{kind}_base_solution" / f"problem_{problem}"
        trace = load_reference_trace(folder)
        assert trace.sentences[int(index)] == text and trace.categories[int(index)] == category
        counts[category] += 1
    assert set(counts.values()) == {2}
