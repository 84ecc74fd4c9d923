"""What explains importance, on a planted study with known shares, and on the published traces.

The planted study: 40 traces of 50 sentences; importance = a trace's own level + a position effect (falling along
the trace) + an indecision effect (the entropy of the accuracy before the sentence) + noise, with accuracy drawn
independently of position and categories drawn at random (they explain nothing). The within-trace shares follow
from the generating process (computed below from its definition, with the entropy's variance integrated
numerically), and the intervals over traces must cover them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

import anchorlens as al
from anchorlens.study import Explained, StudyInputError, explain_importance
from conftest import REFERENCE

N_TRACES, N_SENTENCES = 40, 50
POSITION_EFFECT, INDECISION_EFFECT, NOISE = -2.0, 1.5, 0.5
CATEGORIES = ["plan_generation", "active_computation", "fact_retrieval", "uncertainty_management"]


def entropy_bits(p):
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def planted_shares() -> dict[str, float]:
    """Expected within-trace sums of squares per trace of each planted part, and their shares."""
    n = N_SENTENCES
    position_ss = POSITION_EFFECT ** 2 * n * (n + 1) / (12 * (n - 1))  # positions i/(n-1), centred in the trace
    mean_h = integrate.quad(entropy_bits, 0, 1)[0]
    var_h = integrate.quad(lambda p: entropy_bits(p) ** 2, 0, 1)[0] - mean_h ** 2
    indecision_ss = INDECISION_EFFECT ** 2 * var_h * (n - 1)  # an iid part loses one degree of freedom to centring
    noise_ss = NOISE ** 2 * (n - 1)
    total = position_ss + indecision_ss + noise_ss
    return {"position": position_ss / total, "indecision": indecision_ss / total,
            "together": (position_ss + indecision_ss) / total}


def planted_study(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(N_TRACES):
        level = rng.normal(0, 3)  # traces differ in mean importance: the within-trace centring removes it
        accuracy = rng.uniform(0.001, 0.999, N_SENTENCES)
        position = np.arange(N_SENTENCES) / (N_SENTENCES - 1)
        importance = (level + POSITION_EFFECT * position + INDECISION_EFFECT * entropy_bits(accuracy)
                      + rng.normal(0, NOISE, N_SENTENCES))
        for i in range(N_SENTENCES):
            rows.append({"trace": f"t{t}", "sentence": i, "text": "x" * int(rng.integers(5, 80)),
                         "category": CATEGORIES[rng.integers(len(CATEGORIES))], "accuracy": accuracy[i],
                         "counterfactual_importance_kl": importance[i]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def planted():
    return explain_importance(planted_study(), "counterfactual_importance_kl", n_bootstrap=400)


def test_planted_shares_are_recovered(planted):
    truth = planted_shares()
    table = planted.to_dataframe().set_index("predictor")
    assert 0.2 < truth["position"] < 0.6 and 0.05 < truth["indecision"] < 0.4  # both effects matter
    for name, share in truth.items():
        row = table.loc[name]
        assert abs(row.r2_alone - share) < 0.04, (name, share, row.r2_alone)
        assert row.r2_alone_ci_high - row.r2_alone_ci_low < 0.1
    # independent parts: alone and unique agree; what was not planted explains (almost) nothing
    for name in ("position", "indecision"):
        assert abs(table.loc[name].r2_unique - table.loc[name].r2_alone) < 0.04
    for name in ("accuracy", "category", "length"):
        assert table.loc[name].r2_alone < 0.01 and table.loc[name].r2_alone_ci_low < 0.005


def test_views_are_predictors_where_the_study_has_them():
    """A planted view that carries the indecision effect explains what indecision does; a noise view nothing."""
    frame = planted_study()
    frame["receiver_score"] = np.random.default_rng(5).normal(size=len(frame))
    frame["suppression_out_kl"] = (  # the planted indecision term itself
        -(frame.accuracy * np.log2(frame.accuracy) + (1 - frame.accuracy) * np.log2(1 - frame.accuracy)))
    table = explain_importance(frame, "counterfactual_importance_kl", n_bootstrap=100).to_dataframe().set_index("predictor")
    assert {"receiver_score", "suppression_out_kl"} <= set(table.index)
    assert table.loc["receiver_score"].r2_alone < 0.01
    assert table.loc["suppression_out_kl"].r2_alone == pytest.approx(table.loc["indecision"].r2_alone, abs=1e-9)


def test_pooled_fit_sees_the_trace_levels_as_noise():
    """Without the within-trace centring the traces' own levels (sd 3) swamp both planted effects."""
    pooled = explain_importance(planted_study(), "counterfactual_importance_kl", grouping="pooled", n_bootstrap=50)
    table = pooled.to_dataframe().set_index("predictor")
    assert table.loc["together"].r2_alone < planted_shares()["together"] / 3


def test_intervals_cover_the_planted_shares():
    """Over 20 planted studies (seeds 0-19) each 95% interval covers its planted share at least 17 times
    (measured: position 19, indecision 19, together 20 of 20 with these predictors)."""
    truth = planted_shares()
    covered = dict.fromkeys(truth, 0)
    for seed in range(20):
        table = explain_importance(planted_study(seed), "counterfactual_importance_kl", n_bootstrap=200,
                                   predictors=["position", "indecision", "category"]).to_dataframe()
        table = table.set_index("predictor")
        for name, share in truth.items():
            covered[name] += bool(table.loc[name].r2_alone_ci_low <= share <= table.loc[name].r2_alone_ci_high)
    assert min(covered.values()) >= 17, covered


def test_result_round_trips_and_plots(planted, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    loaded = Explained.load(planted.save(tmp_path / "explained.npz"))
    pd.testing.assert_frame_equal(loaded.to_dataframe(), planted.to_dataframe())
    assert loaded.n_traces == N_TRACES and loaded.plot().get_yticklabels()


def test_bad_requests_are_clear_errors():
    frame = planted_study()
    with pytest.raises(StudyInputError, match="receiver_score"):
        explain_importance(frame, "counterfactual_importance_kl", predictors=["receiver_score"])
    with pytest.raises(StudyInputError, match="statsmodels"):
        explain_importance(frame, "counterfactual_importance_kl", grouping="mixed")
    with pytest.raises(StudyInputError, match="no column"):
        explain_importance(frame, "nothing")


def test_published_traces_table(tmp_path):
    """On the 20 published traces: every share lies in [0, 1], together is at least any one alone, and the
    intervals are intervals."""
    study = al.study(None, REFERENCE, out_dir=tmp_path, views=(), importance="published", progress=False)
    table = study.explain("counterfactual_importance_kl", n_bootstrap=100).to_dataframe().set_index("predictor")
    assert list(table.index) == ["position", "accuracy", "indecision", "category", "length", "together"]
    assert ((table.r2_alone >= 0) & (table.r2_alone <= 1)).all()
    assert (table.r2_alone.drop("together") <= table.r2_alone["together"] + 1e-12).all()
    assert (table.r2_alone_ci_low <= table.r2_alone_ci_high).all()
