"""The published Thought Anchors data (data/thought-anchors) reproduced by anchorlens.

- different_trajectories_fraction and overdeterminedness recomputed from chunks_resampled.json and the
  original sentences agree with the published chunks_labeled.json within 0.02 for >= 95% of sentences.
  The published values count only rollouts that produced an answer, which the file does not mark, so
  exact agreement everywhere is impossible. The published files hold 0.0 for the last sentence of each
  trace (the reference code returns early there), and for the 277 sentences (of two traces' tails) that
  have no rollouts in chunks_resampled.json; anchorlens computes the first and reports NaN ("not
  measured") for the second, so both are left out of the comparison and checked to be 0.0 there.
- Embedding the ~114,000 distinct strings takes most of an hour here, so: overdeterminedness (no
  embedding) is checked on all 20 traces; different_trajectories_fraction is checked live with MiniLM on
  two small traces, and on all 20 traces from tests/data/reference_similarities.npz (cosines cached by
  scripts/build_reference_similarities.py with the same embedder, 49 minutes here), after re-embedding a
  random sample of its entries live to show the cache matches the embedder.
- chunks_labeled.json round-trips through ImportanceResult.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from anchorlens.resampling.metrics import METRIC_COLUMNS, different_trajectories_fraction, overdeterminedness
from anchorlens.resampling.published_format import (
    ReferenceFormatError,
    export_chunks_labeled,
    export_chunks_resampled,
    load_chunks_labeled,
    load_chunks_resampled,
    load_reference_trace,
    recompute_trajectory_metrics,
    reference_trace_dirs,
)
from anchorlens.resampling.rollout import Rollout
from anchorlens.resampling.similarity import cosine_similarity, default_embedder

from conftest import REFERENCE

TOLERANCE = 0.02
SIMILARITIES = Path(__file__).parent / "data" / "reference_similarities.npz"
SMALL_TRACES = ("incorrect_base_solution/problem_2189", "incorrect_base_solution/problem_330")


def all_traces():
    return [load_reference_trace(d) for d in reference_trace_dirs(REFERENCE)]


def key(trace) -> str:
    return f"{trace.folder.parent.name}/{trace.folder.name}"


def test_twenty_published_traces_are_found():
    traces = all_traces()
    assert len(traces) == 20
    assert all(t.resampled is not None and len(t.resampled) == len(t.sentences) for t in traces)


def compared(trace) -> list[int]:
    """Sentences whose published values can be recomputed: not the last, and with rollouts."""
    return [i for i in range(len(trace.sentences) - 1) if trace.resampled[i]]


def test_published_placeholders_are_zero():
    skipped = 0
    for trace in all_traces():
        for i in set(range(len(trace.sentences))) - set(compared(trace)):
            assert float(trace.importance.different_trajectories_fraction[i]) == 0.0
            assert float(trace.importance.overdeterminedness[i]) == 0.0
            skipped += 1
        assert np.isnan(overdeterminedness([])) and np.isnan(different_trajectories_fraction("x", []))
    assert skipped == 295  # 20 last sentences + 277 without rollouts, 2 of them last sentences


def test_overdeterminedness_matches_published_on_all_traces():
    close = total = 0
    for trace in all_traces():
        for i in compared(trace):
            ours = overdeterminedness(trace.resampled[i])
            close += abs(ours - float(trace.importance.overdeterminedness[i])) <= TOLERANCE
            total += 1
    assert total == 2929 - 295
    assert close / total >= 0.95, f"only {close}/{total} within {TOLERANCE}"


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_TRACES)
def test_different_trajectories_fraction_matches_published_live(name):
    trace = load_reference_trace(REFERENCE / "deepseek-r1-distill-llama-8b" / name)
    df = recompute_trajectory_metrics(trace, embed=default_embedder()).iloc[compared(trace)]
    within = ((df.dtf - df.published_dtf).abs() <= TOLERANCE).mean()
    assert within >= 0.95, df[(df.dtf - df.published_dtf).abs() > TOLERANCE]
    within_od = ((df.overdeterminedness - df.published_overdeterminedness).abs() <= TOLERANCE).mean()
    assert within_od >= 0.95


@pytest.fixture(scope="module")
def cached_similarities():
    if not SIMILARITIES.exists():
        pytest.skip(f"{SIMILARITIES.name} not built; run scripts/build_reference_similarities.py")
    with np.load(SIMILARITIES) as data:
        return {k: data[k] for k in data.files}


def cached_traces(cached_similarities):
    traces = [t for t in all_traces() if key(t) in cached_similarities]
    assert len(traces) == 20, "the cache lacks traces: finish it with scripts/build_reference_similarities.py"
    return traces


@pytest.mark.slow
def test_similarity_cache_matches_live_embedder(cached_similarities):
    """Re-embed 40 random (sentence, rollout) pairs live: the cache must hold the same cosines."""
    rng = random.Random(0)
    traces = cached_traces(cached_similarities)
    pairs = []
    for _ in range(40):
        trace = rng.choice(traces)
        i = rng.choice(compared(trace))
        j = rng.randrange(len(trace.resampled[i]))
        pairs.append((trace, i, j))
    embed = default_embedder()
    for trace, i, j in pairs:
        table = cached_similarities[key(trace)]
        sha = hashlib.sha256((trace.folder / "chunks_resampled.json").read_bytes()).hexdigest()
        assert str(cached_similarities[key(trace) + "__sha256"]) == sha, "data changed: rebuild the cache"
        live = float(cosine_similarity(embed([trace.sentences[i]]), embed([trace.resampled[i][j]])))
        assert table[i, j] / 32000 == pytest.approx(live, abs=2e-3)


def test_different_trajectories_fraction_matches_published_on_cached_traces(cached_similarities):
    close = total = 0
    for trace in cached_traces(cached_similarities):
        table = cached_similarities[key(trace)].astype(np.float64) / 32000
        for i in compared(trace):
            n = len(trace.resampled[i])
            # the same count as different_trajectories_fraction: share of cosines below 0.8
            ours = float((table[i, :n] < 0.8).mean())
            close += abs(ours - float(trace.importance.different_trajectories_fraction[i])) <= TOLERANCE
            total += 1
    assert close / total >= 0.95, f"only {close}/{total} within {TOLERANCE}"


def test_chunks_labeled_round_trip(tmp_path):
    folder = REFERENCE / "deepseek-r1-distill-llama-8b" / "incorrect_base_solution" / "problem_2236"
    original = json.loads((folder / "chunks_labeled.json").read_text())
    result = load_chunks_labeled(folder / "chunks_labeled.json")
    assert result.categories[0] == original[0]["function_tags"][0]
    df = result.to_dataframe()
    assert list(df.columns[: 2 + len(METRIC_COLUMNS)]) == ["chunk", "chunk_idx", *METRIC_COLUMNS]
    assert df.accuracy.tolist() == pytest.approx([r["accuracy"] for r in original])
    written = json.loads(export_chunks_labeled(result, tmp_path / "chunks_labeled.json").read_text())
    assert written == original  # same records, same key order, same numbers


def test_chunks_resampled_round_trip(tmp_path):
    rollouts = [Rollout("t", i, "resample", s, f"text {i}{s}", f"chunk {i}.{s}", "1", True) for i in range(3) for s in range(2)]
    rollouts.append(Rollout("t", 0, "forced", 9, "1", "", "1", True))  # forced rollouts are not resampled chunks
    path = export_chunks_resampled(rollouts, tmp_path / "chunks_resampled.json")
    assert load_chunks_resampled(path) == [[f"chunk {i}.0", f"chunk {i}.1"] for i in range(3)]


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(ReferenceFormatError, match="does not exist"):
        load_chunks_labeled(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"0": "not a list"}))
    with pytest.raises(ReferenceFormatError, match="not a list of strings"):
        load_chunks_resampled(tmp_path / "bad.json")
    with pytest.raises(ReferenceFormatError, match="JSON list"):
        load_chunks_labeled(tmp_path / "bad.json")
    with pytest.raises(ReferenceFormatError, match="chunks_labeled.json"):
        load_reference_trace(tmp_path)
