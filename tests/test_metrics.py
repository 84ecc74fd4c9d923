"""Resampling importance metrics (docs/methods.md 1.3) on constructed rollouts whose answers are known.

The "model organism" here is a planted set of rollouts: we decide which sentence flips the answer, which
replacement sentences are paraphrases, and which later sentences depend on which, then check that the
metrics find exactly that. Similarity uses the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import math
from collections import Counter

import matplotlib
import numpy as np
import pytest
import torch
from scipy.stats import entropy

matplotlib.use("Agg")

import anchorlens  # noqa: E402
from anchorlens.errors import AnchorlensError  # noqa: E402
from anchorlens.resampling.metrics import (  # noqa: E402
    METRIC_COLUMNS,
    ImportanceResult,
    RolloutMismatchError,
    answer_counts,
    bootstrap_samples,
    canonical_answers,
    kl_divergence,
    rollout_accuracy,
    sentence_importance,
)
from anchorlens.answers import answer_classes, check_answer  # noqa: E402
from anchorlens.resampling.rollout import Rollout  # noqa: E402
from anchorlens.resampling.similarity import cosine_similarity, default_embedder  # noqa: E402

SENTENCES = [
    "We need the sum of the two numbers.",
    "Let me add 12 and 30 to get 42.",
    "So the answer is 42.",
]
OTHER = "Wait, maybe I should multiply them instead."  # a replacement unlike any original sentence


def roll(i, answer, correct, chunk, text=None, kind="resample", seed=0, trace="t"):
    return Rollout(trace, i, kind, seed, text if text is not None else chunk, chunk, answer, correct)


@pytest.fixture(scope="module")
def embed():
    return default_embedder()


def planted_rollouts():
    """Sentence 1 is the anchor: kept, the answer is 42; replaced by OTHER, the answer becomes 360."""
    rs = []
    # i = 0: always regenerates sentence 0 verbatim; 60% correct.
    rs += [roll(0, "42", True, SENTENCES[0], seed=k) for k in range(6)]
    rs += [roll(0, "360", False, SENTENCES[0], seed=10 + k) for k in range(4)]
    # i = 1: half the rollouts keep the addition (correct), half switch to multiplying (wrong); one no answer.
    rs += [roll(1, "42", True, SENTENCES[1], seed=k) for k in range(5)]
    rs += [roll(1, "360", False, OTHER, seed=10 + k) for k in range(5)]
    rs += [roll(1, None, None, OTHER, seed=99)]
    # i = 2: sentence 1 is in the prefix: always correct.
    rs += [roll(2, "42", True, SENTENCES[2], seed=k) for k in range(10)]
    # forced answers: 0 -> 20% correct, 1 -> 50%, 2 -> 100%
    rs += [roll(0, "42" if k < 2 else "7", k < 2, "", kind="forced", seed=k) for k in range(10)]
    rs += [roll(1, "42" if k < 5 else "7", k < 5, "", kind="forced", seed=k) for k in range(10)]
    rs += [roll(2, "42", True, "", kind="forced", seed=k) for k in range(10)]
    return rs


def smoothed(counts: Counter, support, alpha):
    n = sum(counts.values())
    return np.array([(counts.get(a, 0) + alpha) / (n + alpha * len(support)) for a in support])


@pytest.mark.parametrize("alpha", [1e-9, 1.0])
def test_kl_matches_scipy_on_smoothed_distributions(alpha):
    p, q = Counter({"42": 6, "360": 4}), Counter({"42": 9, "7": 1})
    support = sorted(set(p) | set(q))
    expected = entropy(smoothed(p, support, alpha), smoothed(q, support, alpha))
    assert kl_divergence(p, q, alpha) == pytest.approx(expected, rel=1e-9)


def test_kl_edge_cases():
    assert kl_divergence(Counter(a=3), Counter(a=5)) == 0.0  # same distribution
    assert kl_divergence(Counter(), Counter(a=1)) == 0.0  # nothing to compare
    # disjoint support with alpha 1e-9: ~log(1e9), the huge values seen in the published data
    assert kl_divergence(Counter(a=1), Counter(b=1)) == pytest.approx(math.log(1e9), rel=1e-3)


def test_answer_counts_normalise_and_drop_missing():
    counts = answer_counts([r"\dfrac{1}{2}", r"\frac{1}{2}", " \\frac{1}{2} ", None, ""])
    assert counts == Counter({r"\frac{1}{2}": 3})


def test_accuracy_ignores_unanswered_rollouts():
    rs = [roll(0, "1", True, "x"), roll(0, None, None, "x"), roll(0, "2", False, "x"), roll(0, "3", None, "x")]
    assert rollout_accuracy(rs) == 0.5
    assert math.isnan(rollout_accuracy([]))


@pytest.mark.slow
def test_planted_anchor_is_found(embed):
    result = sentence_importance(planted_rollouts(), SENTENCES, embed=embed, progress=False)
    acc = result.accuracy.tolist()
    assert acc == pytest.approx([0.6, 0.5, 1.0])
    # resampling importance: acc[i+1] - acc[i]
    assert result.resampling_importance_accuracy[:2].tolist() == pytest.approx([-0.1, 0.5])
    # sentence 1 is the one whose replacement changes trajectories (5 of 10 answered rollouts)
    assert result.different_trajectories_fraction.tolist() == pytest.approx([0.0, 0.5, 0.0])
    # counterfactual: sentence 0 is never replaced -> 0; sentence 1's dissimilar rollouts are all wrong
    assert result.counterfactual_importance_accuracy[0] == 0.0
    assert result.counterfactual_importance_accuracy[1] == pytest.approx(0.0 - 1.0)
    # KL(dissimilar_1 = all "360" || rollouts_2 + similar_1 = all "42") is log(1e9)-sized
    assert result.counterfactual_importance_kl[1] > 15
    assert int(torch.argmax(result.counterfactual_importance_kl[:2])) == 1
    # forced: 0.5 - 0.2, 1.0 - 0.5
    assert result.forced_importance_accuracy[:2].tolist() == pytest.approx([0.3, 0.5])
    expected_kl = kl_divergence(Counter({"42": 5, "7": 5}), Counter({"42": 10}))
    assert result.forced_importance_kl[1] == pytest.approx(expected_kl)
    # the last sentence has no i+1: undefined, NaN (exported as 0.0 like the published files)
    for name in ("resampling_importance_accuracy", "counterfactual_importance_kl", "forced_importance_accuracy"):
        assert math.isnan(float(result.metric(name)[-1]))
    assert result.n_rollouts.tolist() == [10, 11, 10]
    assert result.n_answered.tolist() == [10, 10, 10]


def test_overdeterminedness_counts_repeats():
    assert anchorlens.overdeterminedness(["a", "a", "a", "b"]) == 0.5
    assert anchorlens.overdeterminedness(["a", "b"]) == 0.0
    assert math.isnan(anchorlens.overdeterminedness([]))


def test_different_trajectories_fraction_with_minilm(embed):
    original = "Let me compute the area of the triangle."
    paraphrase = "Let me compute the triangle's area."
    assert float(cosine_similarity(embed([original]), embed([paraphrase]))) >= 0.8
    frac = anchorlens.different_trajectories_fraction(original, [original, paraphrase, OTHER, "Hmm, 7 is prime."])
    assert frac == 0.5
    # a lower threshold counts fewer changes, a threshold above 1 counts everything as changed
    assert anchorlens.different_trajectories_fraction(original, [OTHER], threshold=-1.0) == 0.0
    assert anchorlens.different_trajectories_fraction(original, [original], threshold=1.01) == 1.0


def test_counterfactual_matrix_finds_planted_dependency(embed):
    """Sentence 2 appears later only when sentence 0 is kept: M[0, 2] = 1; sentence 1 is independent."""
    s = ["First, find the radius of the circle.", "The weather is pleasant today.", "The radius is 5, so the area is 25 pi."]
    other = "Instead, let me guess the answer directly."
    rs = []
    rs += [roll(0, "1", True, s[0], text=f"{s[0]} {s[1]} {s[2]}", seed=k) for k in range(4)]  # kept
    rs += [roll(0, "2", False, other, text=f"{other} {s[1]} I think it is 2.", seed=10 + k) for k in range(4)]
    rs += [roll(1, "1", True, s[1], text=f"{s[1]} {s[2]}", seed=k) for k in range(4)]
    rs += [roll(2, "1", True, s[2], text=s[2], seed=k) for k in range(4)]
    result = sentence_importance(rs, s, embed=embed, progress=False)
    m = result.counterfactual_matrix
    assert m[0, 2] == pytest.approx(1.0)
    assert m[0, 1] == pytest.approx(0.0)  # sentence 1 appears either way
    assert m[1, 2] == pytest.approx(0.0)  # resampling 1 never changes it: no counterfactual
    assert torch.isnan(m[2]).all() and torch.isnan(m[1, 0])  # only j > i is defined


def test_result_dataframe_save_load_plot(tmp_path, embed):
    result = sentence_importance(
        planted_rollouts(), SENTENCES, embed=embed, progress=False,
        categories=["problem_setup", "active_computation", "final_answer_emission"],
    )
    df = result.to_dataframe()
    assert list(df.columns[: 2 + len(METRIC_COLUMNS)]) == ["chunk", "chunk_idx", *METRIC_COLUMNS]
    assert len(df) == 3 and df["category"].tolist()[1] == "active_computation"
    assert df.n_rollouts.tolist() == [10, 11, 10] and df.n_truncated.tolist() == [0, 0, 0]
    for name in METRIC_COLUMNS:  # every metric has its interval, around its value where both exist
        low, high, value = df[f"{name}_ci_low"], df[f"{name}_ci_high"], df[name]
        both = value.notna() & low.notna()
        assert ((low[both] <= value[both] + 1e-9) & (value[both] <= high[both] + 1e-9)).all(), name
        assert (value.isna() == low.isna()).all(), name
    path = result.save(tmp_path / "importance")
    back = ImportanceResult.load(path)
    assert back.sentences == result.sentences and back.categories == result.categories
    assert str(back.top_sentence()) == str(result.top_sentence()) and back.answer_equivalence is True
    assert back.to_dataframe().equals(df)
    for name in METRIC_COLUMNS:
        assert torch.allclose(back.metric(name), result.metric(name), equal_nan=True)
    assert torch.allclose(back.counterfactual_matrix, result.counterfactual_matrix, equal_nan=True)
    ax = result.plot("counterfactual_importance_accuracy")
    assert len(ax.patches) == 3 and ax.get_ylabel() == "counterfactual_importance_accuracy"
    assert result.plot_matrix() is not None


def test_plot_draws_importance_with_its_interval_and_counts_apart(embed):
    """``plot`` draws one importance metric with its bootstrap interval as error bars and refuses a count;
    ``plot_counts`` draws the four counts."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    result = sentence_importance(planted_rollouts(), SENTENCES, embed=embed, n_bootstrap=50)
    frame = result.to_dataframe()
    for name in ("resampling_importance_accuracy", "counterfactual_importance_kl"):
        ax = result.plot(name)
        assert ax.get_ylabel() == name and len(ax.patches) == len(SENTENCES)
        np.testing.assert_allclose([p.get_height() for p in ax.patches], frame[name].fillna(0.0))
        (bars,) = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
        segments = np.array([seg for seg in bars.lines[2][0].get_segments()])  # [sentence, (low, high), (x, y)]
        shown = frame[name].notna() & frame[f"{name}_ci_low"].notna()
        np.testing.assert_allclose(segments[:, 0, 1], frame[f"{name}_ci_low"][shown])
        np.testing.assert_allclose(segments[:, 1, 1], frame[f"{name}_ci_high"][shown])
        plt.close("all")
    for count in ("n_rollouts", "n_answered", "n_forced", "n_truncated"):
        with pytest.raises(AnchorlensError, match="unknown metric"):
            result.plot(count)
    ax = result.plot_counts()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["n_rollouts", "n_answered", "n_forced",
                                                                   "n_truncated"]
    heights = np.array([p.get_height() for p in ax.patches]).reshape(4, len(SENTENCES))
    np.testing.assert_allclose(heights[0], frame["n_rollouts"])
    np.testing.assert_allclose(heights[2], frame["n_forced"])
    plt.close("all")


def test_bad_input_raises_clear_errors(embed):
    with pytest.raises(RolloutMismatchError, match="one trace"):
        sentence_importance([roll(0, "1", True, "x", trace="a"), roll(0, "1", True, "x", trace="b")], ["x"], embed=embed)
    with pytest.raises(RolloutMismatchError, match="3 sentences"):
        sentence_importance([roll(5, "1", True, "x")], SENTENCES, embed=embed)
    with pytest.raises(AnchorlensError, match="empty"):
        sentence_importance([], [], embed=embed)
    with pytest.raises(AnchorlensError, match="list of strings"):
        anchorlens.different_trajectories_fraction("a", "not a list")
    with pytest.raises(AnchorlensError, match="unknown metric"):
        sentence_importance(planted_rollouts(), SENTENCES, embed=embed, compute_matrix=False).plot("nope")


# --------------------------------------------------------------------------- answers as equivalence classes

SPELLINGS = ["42", "6*7", r"\frac{84}{2}", "42.0"]


def spelled_rollouts(kind="resample"):
    """Sentence 0: four spellings of 42; sentence 1: four plain 42s. Every rollout keeps its sentence."""
    rs = [roll(0, a, True, SENTENCES[0], kind=kind, seed=k) for k, a in enumerate(SPELLINGS)]
    return rs + [roll(1, "42", True, SENTENCES[1], kind=kind, seed=k) for k in range(4)]


def test_equivalent_spellings_give_zero_kl(embed):
    assert all(check_answer(a, "42") for a in SPELLINGS)
    rollouts = spelled_rollouts() + spelled_rollouts("forced")
    published = sentence_importance(rollouts, SENTENCES[:2], embed=embed, progress=False, answer_equivalence=False,
                                    n_bootstrap=0, compute_matrix=False)
    string_level = kl_divergence(Counter(dict.fromkeys(["42", "6*7", r"\frac{84}{2}", "42.0"], 1)), Counter({"42": 4}))
    assert string_level > 15  # the published computation: four answers against one
    assert published.resampling_importance_kl[0] == pytest.approx(string_level)
    assert published.forced_importance_kl[0] == pytest.approx(string_level)
    result = sentence_importance(rollouts, SENTENCES[:2], embed=embed, progress=False, compute_matrix=False)
    assert result.resampling_importance_kl[0] == 0.0 and result.forced_importance_kl[0] == 0.0
    assert float(result.intervals["resampling_importance_kl"][1, 0]) == 0.0  # every bootstrap draw agrees
    assert result.accuracy.tolist() == published.accuracy.tolist() == [1.0, 1.0]  # accuracy was check_answer already


def test_counterfactual_kl_uses_answer_classes_too(embed):
    """Dissimilar replacements answering 6*7 against kept rollouts answering 42: no change in the answer."""
    rs = [roll(0, "6*7", True, OTHER, seed=k) for k in range(4)] + [roll(1, "42", True, SENTENCES[1], seed=k) for k in range(4)]
    assert sentence_importance(rs, SENTENCES[:2], embed=embed, progress=False, n_bootstrap=0,
                               answer_equivalence=False).counterfactual_importance_kl[0] > 15
    assert sentence_importance(rs, SENTENCES[:2], embed=embed, progress=False, n_bootstrap=0).counterfactual_importance_kl[0] == 0.0


def test_answer_classes_are_well_defined_where_check_answer_is_not_transitive():
    """1.0 ~ 1.0000009 and 1.0000009 ~ 1.0000018 (within check_answer's 1e-6), but 1.0 !~ 1.0000018.

    An answer joins the class of the first representative it equals (most frequent first), never a class
    through a chain: so the grouping depends only on the counts, not on the order rollouts came in.
    """
    a, b, c = "1.0", "1.0000009", "1.0000018"
    assert check_answer(a, b) and check_answer(b, c) and not check_answer(a, c)
    assert answer_classes([a, a, a, b, b, c]) == {a: a, b: a, c: c}  # c is not equal to the representative a
    assert answer_classes([b, b, b, a, c]) == {b: b, a: b, c: b}  # b represents; both neighbours join it
    assert answer_classes([c, b, a, b, a, a]) == answer_classes([a, a, a, b, b, c])  # order-free
    assert answer_classes([a, b, b], reference=a) == {a: a, b: a}  # the reference answer is visited first
    assert answer_classes(["yes", "Yes", None, "", "no"]) == {"yes": "yes", "no": "no"}
    rs = [roll(0, x, None, "x", seed=k) for k, x in enumerate([b, b, a, c, None])]
    assert [r.answer for r in canonical_answers(rs)] == [b, b, b, b, None]


# --------------------------------------------------------------------------- bootstrap intervals


def test_the_identity_draw_reproduces_every_point_value(embed):
    """The bootstrap recomputes each metric by its own (vectorised) code: on the rollouts as they are it must
    give the point values, for the planted trace and the spelled one (both kinds, similar and dissimilar)."""
    for rollouts, sentences in ((planted_rollouts(), SENTENCES), (spelled_rollouts() + spelled_rollouts("forced"), SENTENCES[:2])):
        rollouts = canonical_answers(rollouts)
        result = sentence_importance(rollouts, sentences, embed=embed, progress=False, n_bootstrap=0, compute_matrix=False)
        resample = [[r for r in rollouts if r.kind == "resample" and r.sentence_index == i and r.answer] for i in range(len(sentences))]
        forced = [[r for r in rollouts if r.kind == "forced" and r.sentence_index == i] for i in range(len(sentences))]
        similar = [
            (anchorlens.resampling.metrics.similarity_to(sentences[i], [r.chunk_resampled for r in g], embed) >= 0.8).numpy()
            for i, g in enumerate(resample)
        ]
        point = bootstrap_samples(resample, forced, similar, 1e-9, None)
        for name in METRIC_COLUMNS:
            np.testing.assert_allclose(point[name][0], result.metric(name).numpy(), rtol=1e-12, err_msg=name)


def synthetic(seed, n=10, jump_at=5, p_before=0.2, p_after=0.9, m=100):
    """A trace whose rollouts answer right with p_before before sentence jump_at and p_after from it on:
    resampling_importance_accuracy is p_after - p_before at sentence jump_at - 1 and 0 elsewhere."""
    rng = np.random.default_rng(seed)
    rs = []
    for i in range(n):
        p = p_after if i >= jump_at else p_before
        for k in range(m):
            ok = bool(rng.random() < p)
            rs.append(roll(i, "42" if ok else "41", ok, f"s{i}", seed=k))
    return rs, [f"s{i}" for i in range(n)]


def same_embed(texts):
    return torch.ones(len(texts), 1)


def importance(rollouts, sentences, seed):
    return sentence_importance(rollouts, sentences, embed=same_embed, compute_matrix=False, progress=False,
                               bootstrap_seed=seed)


@pytest.mark.slow
def test_intervals_cover_a_planted_jump_and_exclude_zero():
    """20 synthetic traces (10 sentences, 100 rollouts each), accuracy 0.2 -> 0.9 at sentence 5.

    Measured on 100 such traces: the 95% interval covers the planted 0.7 in 94 and excludes 0 in all 100.
    Asserting coverage in >= 15 of 20 fails with probability 0.0009 at a true coverage of 0.94.
    """
    covered = 0
    for seed in range(20):
        result = importance(*synthetic(seed), seed)
        low, high = result.intervals["resampling_importance_accuracy"][:, 4].tolist()
        covered += low <= 0.7 <= high
        assert low > 0, f"trace {seed}: the interval [{low}, {high}] of a 0.7 jump includes 0"
        top = result.top_sentence("resampling_importance_accuracy")
        assert top.index == 4 and top.stands_out and top.ci_low == low and top.ci_high == high
        assert str(top).startswith("the thought anchor by resampling_importance_accuracy: sentence 4, +0.")
    assert covered >= 15


@pytest.mark.slow
def test_without_a_jump_intervals_include_zero_and_nothing_stands_out():
    """The same traces with accuracy 0.5 everywhere. Measured on 100 traces: 95.8% of the per-sentence
    intervals include 0, and the top never stood out from the runner-up (0 of 100; the top-vs-runner-up
    interval is paired over the same draws). Asserted: >= 85% include 0 (7 standard errors below the measured
    rate) and at most 2 of 20 traces stand out (probability 0.001 at a 1% false-positive rate)."""
    include = total = stood_out = 0
    for seed in range(20):
        result = importance(*synthetic(1000 + seed, p_before=0.5, p_after=0.5), seed)
        low, high = result.intervals["resampling_importance_accuracy"][:, :-1].numpy()
        include += int(((low <= 0) & (high >= 0)).sum())
        total += len(low)
        top = result.top_sentence("resampling_importance_accuracy")
        stood_out += bool(top.stands_out)
        if not top.stands_out:
            assert str(top).startswith("no sentence stands out from the runner-up")
    assert include >= 0.85 * total and stood_out <= 2


def test_intervals_are_seeded_and_can_be_turned_off():
    rollouts, sentences = synthetic(0, n=4, m=30)
    a, b = importance(rollouts, sentences, 3), importance(rollouts, sentences, 3)
    assert torch.equal(a.intervals["accuracy"], b.intervals["accuracy"])
    assert not torch.equal(a.intervals["accuracy"], importance(rollouts, sentences, 4).intervals["accuracy"])
    off = sentence_importance(rollouts, sentences, embed=same_embed, compute_matrix=False, progress=False, n_bootstrap=0)
    assert off.intervals == {} and "accuracy_ci_low" not in off.to_dataframe()
    assert off.top_sentence().stands_out is None
    with pytest.raises(AnchorlensError, match="n_bootstrap"):
        sentence_importance(rollouts, sentences, embed=same_embed, n_bootstrap=-1)


def test_vectorised_kl_and_draws_match_the_plain_code():
    """kl_rows (all draws at once) against kl_divergence row by row, and one bootstrap draw against the
    metrics recomputed from the rollouts that draw picked."""
    from anchorlens.resampling.bootstrap import kl_rows

    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 4, size=(50, 6)).astype(float), rng.integers(0, 4, size=(50, 6)).astype(float)
    p[0], q[1] = 0, 0  # an empty side gives 0
    for alpha in (1e-9, 1.0):
        expected = [kl_divergence(Counter({k: c for k, c in enumerate(a) if c}), Counter({k: c for k, c in enumerate(b) if c}), alpha)
                    for a, b in zip(p, q)]
        np.testing.assert_allclose(kl_rows(p, q, alpha), expected, rtol=1e-9, atol=1e-12)
    rollouts, sentences = synthetic(7, n=3, m=12)
    groups = [[r for r in rollouts if r.sentence_index == i] for i in range(3)]
    draws = bootstrap_samples(groups, [[], [], []], [np.ones(12, bool)] * 3, 1e-9, 5, seed=11)
    first = np.random.default_rng(11).integers(0, 12, size=(5, 12))  # sentence 0's draws come first from the seed
    chosen = [groups[0][j] for j in first[0]]
    assert draws["accuracy"][0, 0] == pytest.approx(rollout_accuracy(chosen))


def test_the_old_confidence_keyword_still_works_for_one_release():
    """``confidence`` was renamed ``level`` (issue 30): the old keyword, and the old attribute of the result and
    of its top sentence, still work with a DeprecationWarning naming the new one, and give the same intervals."""
    rollouts, sentences = synthetic(0, n=4, jump_at=2, m=30)
    options = dict(embed=same_embed, compute_matrix=False, progress=False, n_bootstrap=200)
    new = sentence_importance(rollouts, sentences, level=0.8, **options)
    with pytest.warns(DeprecationWarning, match=r"sentence_importance\(confidence=\.\.\.\) is deprecated, use level="):
        old = sentence_importance(rollouts, sentences, confidence=0.8, **options)
    assert old.level == new.level == 0.8
    for name, bounds in new.intervals.items():
        torch.testing.assert_close(old.intervals[name], bounds, rtol=0, atol=0, equal_nan=True)
    wide = sentence_importance(rollouts, sentences, **options).intervals["resampling_importance_accuracy"][:, 1]
    narrow = new.intervals["resampling_importance_accuracy"][:, 1]
    assert wide[0] < narrow[0] and narrow[1] < wide[1]  # 95% (the default) is wider than 80%
    top = new.top_sentence("resampling_importance_accuracy")
    assert top.level == 0.8 and "(80% interval)" in str(top)
    with pytest.warns(DeprecationWarning, match=r"ImportanceResult\.confidence is deprecated, use \.level"):
        assert new.confidence == 0.8
    with pytest.warns(DeprecationWarning, match=r"TopSentence\.confidence is deprecated, use \.level"):
        assert top.confidence == 0.8
    with pytest.raises(AnchorlensError, match="level must lie in"):
        sentence_importance(rollouts, sentences, level=95, **options)
