"""``anchorlens analyze --resilience``: the Thought Branches step run as a user runs it (a separate process on the
embedded model), killed with SIGKILL and resumed without losing a rollout, then re-run recomputing nothing."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from anchorlens import Analysis
from anchorlens.branches import ResilienceResult
from conftest import kill_after_rollouts, run_anchorlens

pytestmark = pytest.mark.slow


def _all_rows(out) -> pd.DataFrame:
    with sqlite3.connect(out / "rollouts.sqlite") as db:
        return pd.read_sql("SELECT trace_id, settings_id, sentence_index, kind, seed, text FROM rollouts", db)


def test_resilience_step_killed_resumed_and_reused(tmp_path):
    out = tmp_path / "report"
    args = ["analyze", "--problem", "What is 6 + 7?", "--seed", "0", "--max-new-tokens", "80", "--rollouts", "3",
            "--rollout-tokens", "24", "--skip", "receivers", "--skip", "flow", "--resilience", "2",
            "--extractor", "boxed_or_last_number",  # the 135M model seldom boxes an answer within 24 tokens
            "--resilience-iterations", "4", "--out", str(out)]
    kill_after_rollouts(*args, out=out, at_least=4)
    before = _all_rows(out)
    assert not (out / "resilience.npz").exists()

    done = run_anchorlens(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _all_rows(out)
    key = ["trace_id", "settings_id", "sentence_index", "kind", "seed"]
    kept = before.merge(after, on=key, suffixes=("", "_after"))
    assert len(kept) == len(before) and (kept["text"] == kept["text_after"]).all(), "no rollout lost or redone"
    assert not after.duplicated(key).any()

    result = ResilienceResult.load(out / "resilience.npz")
    frame = result.to_dataframe()
    # the top sentences by counterfactual importance (those with a value), as the importance step saved it
    importance = Analysis.load(out).importance.counterfactual_importance_kl.numpy()
    top = sorted(i for i in np.argsort(-np.nan_to_num(importance, nan=-np.inf), kind="stable")[:2].tolist()
                 if np.isfinite(importance[i]))
    assert sorted(frame["sentence"]) == top and len(top) >= 1
    assert (frame["n_chains"] == 3).all()
    assert ((frame["resilience"] >= 0) & (frame["resilience"] <= 4)).all()
    table = pd.read_csv(out / "sentences.csv")
    measured = table["resilience"].notna()
    assert sorted(table.index[measured]) == sorted(frame["sentence"])
    assert np.allclose(table.loc[frame["sentence"], "resilience"], frame["resilience"])
    # iteration 1 of every chain is a plain resampling rollout: the chains' trace holds only later iterations
    chains = after[after["trace_id"].str.endswith(":resilience")]
    assert len(chains) == sum(max(0, n - 1) for n in result.chains_dataframe()["iterations"])
    assert "resilience" in (out / "report.json").read_text()

    again = run_anchorlens(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resilience: reused" in again.stderr and "resampling: reused" in again.stderr
    assert len(_all_rows(out)) == len(after), "a second run samples nothing"
