"""Importance by category on the 20 published R1-Distill-Llama-8B traces, against the reference's definition.

``reference_table`` below is written here from the definition (the Thought Anchors figure: ``plots.py`` of
interp-reasoning/thought-anchors, read, not copied), with plain pandas on the published ``chunks_labeled.json``
files, never through anchorlens: the convergence filter, clipping at zero, trace means then the mean over traces
and its standard error, the minimum counts, and the position debiasing with scikit-learn's polynomial regression
as the reference fits it. ``Study.by_category`` must equal it for every category, with and without the filter,
pooled or by trace, and debiased. The study reads the published files without a model.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import anchorlens as al
from anchorlens.study import Study, StudyInputError
from conftest import REFERENCE, REPO

METRICS = ["resampling_importance_accuracy", "resampling_importance_kl", "counterfactual_importance_accuracy",
           "counterfactual_importance_kl", "forced_importance_accuracy", "forced_importance_kl"]
# the numbers: the reference figure on these 20 traces, counterfactual_importance_kl
PAPER_FIGURE = {"plan_generation": 1.51, "uncertainty_management": 0.84, "fact_retrieval": 0.84,
                "active_computation": 0.77, "result_consolidation": 0.45}
COMPUTED_NOT_SHOWN = {"problem_setup": 1.55, "self_checking": 0.27, "final_answer_emission": 0.02}


def published_chunks() -> pd.DataFrame:
    """Every published chunk of every trace: trace, index, normalised position, first tag, accuracy, metrics."""
    rows = []
    for path in sorted(REFERENCE.rglob("chunks_labeled.json")):
        chunks = sorted(json.loads(path.read_text()), key=lambda c: c["chunk_idx"])
        for chunk in chunks:
            rows.append({"trace": str(path.parent.relative_to(REFERENCE)), "idx": chunk["chunk_idx"],
                         "n": len(chunks), "tag": chunk["function_tags"][0], "accuracy": chunk["accuracy"],
                         **{m: chunk[m] for m in METRICS}})
    frame = pd.DataFrame(rows)
    frame["position"] = frame.idx / (frame.n - 1)
    return frame


def reference_table(converged_filter=True, clip=True, by_trace=True, debias=False) -> pd.DataFrame:
    frame = published_chunks()
    if converged_filter:
        kept = []
        for _, trace in frame.groupby("trace"):
            acc = trace.sort_values("idx").accuracy.to_list()
            cut = len(acc)
            for i in range(len(acc) - 5):  # runs of 4 starting at 0 .. n-6, as the reference searches
                if all(a > 0.99 for a in acc[i:i + 4]) or all(a < 0.01 for a in acc[i:i + 4]):
                    cut = i
                    break
            kept.append(trace[trace.idx < cut])
        frame = pd.concat(kept)
    if clip:
        frame[METRICS] = frame[METRICS].where(frame[METRICS] > 0, 0.0)
    if debias:
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures

        # the reference's polynomial regression, on positions mapped to [-1, 1] (the same least-squares problem;
        # on raw positions in [0, 1] degree 10 loses precision: see test_debiasing_is_the_least_squares_fit)
        scaled = 2 * frame[["position"]] - 1
        for m in METRICS:
            fit = make_pipeline(PolynomialFeatures(degree=10), LinearRegression()).fit(scaled, frame[m])
            frame[m] = frame[m] - fit.predict(scaled)
    rows = {}
    for tag, group in frame.groupby("tag"):
        if len(group) < 3:
            continue
        row = {"n_sentences": len(group), "n_traces": group.trace.nunique()}
        for column in ["position"] + METRICS:
            units = group.groupby("trace")[column].mean() if by_trace else group[column]
            if by_trace and len(units) < 3 and column != "position":
                continue
            row[column] = units.mean()
            row[f"{column}_se"] = units.std(ddof=1) / np.sqrt(len(units))
        rows[tag] = row
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.fixture(scope="module")
def published_study(tmp_path_factory):
    return al.study(None, REFERENCE, out_dir=tmp_path_factory.mktemp("published"), views=(), importance="published",
                    progress=False)


def compare(table: pd.DataFrame, expected: pd.DataFrame, rtol: float = 1e-9) -> None:
    table = table.set_index("category")
    assert sorted(table.index) == sorted(expected.index)
    for column in expected.columns:
        np.testing.assert_allclose(table.loc[expected.index, column].astype(float), expected[column].astype(float),
                                   rtol=rtol, atol=1e-9 * (rtol > 1e-9), err_msg=column)


def test_no_model_study_reads_all_20_traces(published_study):
    assert len(published_study.traces) == 20 and not published_study.missing
    assert len(published_study.sentences) == len(published_chunks()) == 2929
    assert published_study.model_name is None


def test_default_is_the_reference_definition(published_study):
    table = published_study.by_category(METRICS, n_bootstrap=200)
    compare(table, reference_table())
    assert table.attrs["definition"]["n_sentences_kept"] == 2929 - 1050  # the count of dropped sentences


def test_default_reproduces_the_papers_figure_numbers(published_study):
    table = published_study.by_category(["counterfactual_importance_kl"], n_bootstrap=200).set_index("category")
    shown = table[table.shown].counterfactual_importance_kl.round(2).to_dict()
    assert shown == PAPER_FIGURE
    hidden = table[~table.shown].counterfactual_importance_kl.round(2).to_dict()
    assert hidden == COMPUTED_NOT_SHOWN


@pytest.mark.parametrize("options, reference", [
    ({"convergence": False}, {"converged_filter": False}),
    ({"convergence": False, "clip": False}, {"converged_filter": False, "clip": False}),
    ({"weighting": "sentence"}, {"by_trace": False}),
    ({"debias": "polynomial"}, {"debias": True}),
])
def test_each_option_equals_the_reference_computed_that_way(published_study, options, reference):
    compare(published_study.by_category(METRICS, n_bootstrap=50, **options), reference_table(**reference),
            rtol=1e-6 if "debias" in options else 1e-9)


def test_debiasing_is_the_least_squares_fit():
    """The reference fits ``PolynomialFeatures(10)`` on raw positions in [0, 1]; that least-squares problem is so
    ill-conditioned that its solution leaves a larger residual than the exact one anchorlens computes (the
    category means differ most at the ends: problem setup, final answer emission; docs/methods.md)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    from anchorlens.study.categories import position_residuals

    frame = published_chunks()
    x, y = frame[["position"]], frame.counterfactual_importance_kl.clip(lower=0)
    raw = y - make_pipeline(PolynomialFeatures(10), LinearRegression()).fit(x, y).predict(x)
    ours = position_residuals(y.to_numpy(), x.position.to_numpy(), 10)
    assert (ours ** 2).sum() < (raw ** 2).sum()
    assert abs(ours.mean()) < 1e-9  # a least-squares fit with an intercept leaves residuals of mean 0


def test_intervals_are_over_traces_and_cover_the_mean(published_study):
    table = published_study.by_category(["counterfactual_importance_kl"], n_bootstrap=500)
    m = "counterfactual_importance_kl"
    assert (table[f"{m}_ci_low"] <= table[m]).all() and (table[m] <= table[f"{m}_ci_high"]).all()
    # the interval's width is about 4 standard errors over traces, not over sentences
    width = (table[f"{m}_ci_high"] - table[f"{m}_ci_low"]) / table[f"{m}_se"]
    assert width.between(2.5, 6).all(), width


def test_the_earlier_pooled_mean_is_one_set_of_options(published_study):
    pooled = published_study.by_category(["counterfactual_importance_kl"], convergence=False, clip=False,
                                         weighting="sentence", min_sentences=1, min_traces=1, n_bootstrap=20)
    grouped = published_study.sentences.groupby("category").counterfactual_importance_kl.mean()
    np.testing.assert_allclose(pooled.set_index("category").counterfactual_importance_kl[grouped.index], grouped)
    assert pooled.set_index("category").counterfactual_importance_kl.idxmax() == "problem_setup"


def test_paper_figure_and_views_by_category(published_study):
    import matplotlib

    matplotlib.use("Agg")
    ax = published_study.plot_categories()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert len(labels) == 5 and any("plan generation" in label for label in labels)
    # any numeric column is aggregated the same way (here a published non-importance one: never clipped)
    table = published_study.by_category(["overdeterminedness"], n_bootstrap=20)
    assert table.overdeterminedness.notna().all()


def test_bad_options_are_clear_errors(published_study):
    with pytest.raises(StudyInputError, match="weighting"):
        published_study.by_category(["accuracy"], weighting="median")
    with pytest.raises(StudyInputError, match="no column"):
        published_study.by_category(["not_a_metric"])
    with pytest.raises(StudyInputError, match="without a model"):
        al.study(None, REFERENCE, out_dir="unused", views=("receivers",), importance="published")


@pytest.mark.slow  # building the random model takes seconds
def test_a_model_is_not_used_when_nothing_needs_a_forward_pass(tmp_path):
    """A model too small for most traces (context 512): with no view, every trace is read all the same."""
    small = al.random_model("llama", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, seed=0)
    small.cfg.n_ctx = 512
    picks = tmp_path / "picks"
    for folder in sorted(REFERENCE.glob("*/correct_base_solution/problem_*"))[:2]:
        (picks / folder.name).mkdir(parents=True)
        for file in folder.iterdir():
            (picks / folder.name / file.name).symlink_to(file)
    result = al.study(small, picks, out_dir=tmp_path / "out", views=(), importance="published", progress=False)
    assert len(result.traces) == 2 and not result.missing and result.model_name is None


def test_symbolic_links_to_trace_folders_are_followed(tmp_path):
    chosen = sorted(REFERENCE.glob("*/correct_base_solution/problem_*"))[:3]
    picks = tmp_path / "picks"
    picks.mkdir()
    for i, folder in enumerate(chosen):
        (picks / f"trace_{i}").symlink_to(folder.resolve(), target_is_directory=True)
    (picks / "loop").symlink_to(picks, target_is_directory=True)  # a link back up is visited once
    result = al.study(None, picks, out_dir=tmp_path / "out", views=(), importance="published", progress=False)
    assert result.traces == ["trace_0", "trace_1", "trace_2"]


@pytest.mark.slow
def test_command_without_a_forward_pass_view_loads_no_model(tmp_path):
    done = subprocess.run([sys.executable, "-m", "anchorlens.cli", "study", str(REFERENCE), "--importance",
                           "published", "--views", "none", "--out", str(tmp_path / "s")],
                          capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={"ANCHORLENS_PROGRESS": "0", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no model loaded" in done.stderr and "loading" not in done.stderr and "[20/20]" in done.stderr
    assert "skipped" not in done.stderr
    result = Study.load(tmp_path / "s")
    assert len(result.traces) == 20
    assert "plan_generation 1.51" in done.stdout
    assert (tmp_path / "s" / "study_categories_counterfactual_importance_kl.png").is_file()
    table = pd.read_csv(tmp_path / "s" / "study_by_category.csv").set_index("category")
    assert table.counterfactual_importance_kl.round(2)["uncertainty_management"] == 0.84


def test_category_differences_pair_the_draws_of_traces(published_study):
    """Each difference and its interval, recomputed here draw by draw with pandas on the same draws of traces."""
    n_boot, metric = 200, "counterfactual_importance_kl"
    got = published_study.category_differences(metric, n_bootstrap=n_boot, seed=3)
    shown = sorted(PAPER_FIGURE)
    assert len(got) == len(shown) * (len(shown) - 1) // 2
    expected = reference_table()[metric]
    frame = published_chunks()
    kept = published_study.by_category([metric], n_bootstrap=1).attrs["definition"]["n_sentences_kept"]
    # the kept sentences, from the study's own (already checked) sentences table: position order within traces
    sentences = published_study.sentences
    from anchorlens.study.categories import convergence_mask

    sentences = sentences[convergence_mask(sentences)]
    assert len(sentences) == kept and len(frame) == len(published_study.sentences)
    per_trace = sentences.groupby(["trace", "category"])[metric].apply(lambda v: v.clip(lower=0).mean()).unstack()
    names = list(dict.fromkeys(sentences.trace))
    per_trace = per_trace.reindex(names)
    draws = np.random.default_rng(3).integers(0, len(names), size=(n_boot, len(names)))
    for row in got.itertuples():
        assert row.difference == pytest.approx(expected[row.category_a] - expected[row.category_b], rel=1e-9)
        diffs = [per_trace.iloc[d][row.category_a].mean() - per_trace.iloc[d][row.category_b].mean() for d in draws]
        low, high = np.quantile(diffs, [0.025, 0.975])
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high), rel=1e-9)
        assert row.excludes_zero == (low > 0 or high < 0)
    # plan generation above result consolidation on these traces, with an interval that excludes zero
    pair = got[(got.category_a == "plan_generation") & (got.category_b == "result_consolidation")].iloc[0]
    assert pair.excludes_zero and pair.difference > 0
