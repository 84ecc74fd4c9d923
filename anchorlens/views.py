"""The per-sentence views of a chain of thought, each defined once, and how they are compared.

``analyze`` puts one column per view in ``sentences.csv``; ``VIEW_DEFINITIONS`` is the sentence that says what
each column means (written into the report and next to the CSV). Views are compared by Spearman rank
correlation over sentences, with a bootstrap interval over sentences: with ~10 sentences a correlation of 0.5
is often indistinguishable from zero, and the interval says so.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.stats import ConstantInputWarning, pearsonr, rankdata
from torch import Tensor

from anchorlens.stats import LEVEL, bootstrap_distribution, interval, renamed_arguments

# The one sentence that defines each per-sentence column of analyze's table.
VIEW_DEFINITIONS = {
    "category": "The sentence's category among the paper's 8 (the shipped offline classifier).",
    "receiver_score": "Mean attention that the top receiver heads pay to the sentence from sentences at least 4 "
                      "later (its vertical score, averaged over the heads chosen by kurtosis).",
    "suppression_out_kl": "Mean over the later sentences of the KL divergence of their tokens' predictions when "
                          "all attention to this sentence is masked (how much later sentences depend on it).",
    "suppression_in_kl": "Mean over the earlier sentences of the KL divergence of this sentence's tokens' "
                         "predictions when attention to that earlier sentence is masked (how much it depends on them).",
    "flow_to_answer": "Information flow (L2 routes) from the sentence's tokens into the prediction of the answer "
                      "token, through every path of every layer.",
    "attribution_to_answer": "Attribution-graph influence on the answer token's logit of the paths that start at "
                             "the sentence's token embeddings (every path, each counted once).",
    "attribution_features_at_sentence": "Attribution-graph influence on the answer token's logit of the feature "
                                        "nodes computed at the sentence's positions (overlaps other sentences' "
                                        "attribution_to_answer: a feature's influence includes what flows into it).",
    "accuracy": "Share of correct answers among the answered rollouts that regenerate from this sentence on (the "
                "sentences before it kept, this one resampled).",
    "resampling_importance_accuracy": "Accuracy with this sentence kept (rollouts from the next one) minus accuracy "
                                      "with it resampled: acc[i+1] - acc[i], as published.",
    "resampling_importance_kl": "KL divergence between the answer distributions with this sentence resampled and "
                                "with it kept.",
    "counterfactual_importance_accuracy": "As resampling_importance_accuracy, counting only resampled sentences "
                                          "unlike the original (cosine below 0.8), against the rollouts that keep it.",
    "counterfactual_importance_kl": "As resampling_importance_kl, with only the resampled sentences unlike the "
                                    "original against the rest.",
    "forced_importance_accuracy": "As resampling_importance_accuracy, on answers forced right after the prefix "
                                  "instead of reasoned to.",
    "forced_importance_kl": "As resampling_importance_kl, on forced answers.",
    "resilience": "Thought Branches (measured for the top sentences only): mean over chains of the number of times "
                  "the sentence's content came back (cosine >= 0.6 to it) after being removed again and again, up to "
                  "the iteration cap.",
    "abandonment_rate": "Share of resilience chains whose last iteration no longer brought the content back.",
    "counterfactual_pp_accuracy": "Counterfactual++: accuracy with the sentence kept (rollouts from the next one) "
                                  "minus accuracy of the chains that abandoned its content for good; the opposite "
                                  "sign of counterfactual_importance_accuracy.",
    "counterfactual_pp_kl": "Counterfactual++ as a KL divergence: answers of the chains that abandoned the content "
                            "against answers with the sentence kept.",
    "n_truncated": "Rollouts from this sentence that hit the token limit before finishing (answered only when "
                   "they hold a complete \\boxed{}).",
}
CI_NOTE = ("Columns ending in _ci_low / _ci_high are 95% bootstrap intervals of the column before them, resampling "
           "the rollouts of each sentence.")

# The views compared by rank correlation (Analysis.view_correlations), in this order.
VIEW_COLUMNS = ["receiver_score", "suppression_out_kl", "flow_to_answer", "attribution_to_answer",
                "resampling_importance_accuracy", "counterfactual_importance_kl"]


def suppression_summaries(kl: Float[Tensor, "target suppressed"]) -> tuple[Tensor, Tensor]:
    """Per sentence: the mean KL it causes in later sentences (out) and suffers from earlier ones (in).

    Means, not sums: a sum over later sentences grows with the number of sentences after it, so early
    sentences would win by position alone. A sentence with no later (earlier) sentence gets NaN.
    """
    n = kl.shape[0]
    later = torch.ones(n, n, dtype=torch.bool).tril(-1)  # [target, suppressed]: target after suppressed
    values = torch.where(later, kl.float().nan_to_num(0.0), torch.zeros(()))
    counts_out, counts_in = later.sum(0).float(), later.sum(1).float()
    out = values.sum(0) / counts_out
    into = values.sum(1) / counts_in
    return out.masked_fill(counts_out == 0, float("nan")), into.masked_fill(counts_in == 0, float("nan"))


@renamed_arguments(n_boot="n_bootstrap", confidence="level")
def view_correlations(frame: pd.DataFrame, columns: list[str] | None = None, n_bootstrap: int = 2000,
                      level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    """Spearman rank correlation of every pair of views that exist and vary, with a bootstrap interval.

    Returns one row per pair: ``view_a``, ``view_b``, ``spearman``, ``ci_low``, ``ci_high``, ``n`` (sentences
    where both are defined). The interval is the ``level`` percentile interval over ``n_bootstrap`` resamples of
    the sentences (pairs kept together); resamples where a view is constant are left out.
    """
    columns = [c for c in (columns or VIEW_COLUMNS)
               if c in frame and frame[c].notna().sum() > 2 and frame[c].nunique() > 1]
    rng = np.random.default_rng(seed)
    rows = []
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            both = frame[[a, b]].astype(float).dropna()
            x, y = both[a].to_numpy(), both[b].to_numpy()
            n = len(x)
            if n < 3:
                continue
            rho = _spearman(x[None], y[None])[0]
            boot = bootstrap_distribution((x, y), lambda u, v, axis: _spearman(u, v), n_bootstrap, rng, paired=True)
            # resamples where a view is constant (Spearman undefined) are left out of the interval
            low, high = interval(boot, level)
            rows.append({"view_a": a, "view_b": b, "spearman": rho, "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(rows, columns=["view_a", "view_b", "spearman", "ci_low", "ci_high", "n"])


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of ``[rows, n]`` arrays: Pearson r of the ranks (ties share their mean rank),
    NaN where a row is constant. ``spearmanr`` would correlate every row with every other row (a rows x rows
    matrix); ``pearsonr(axis=1)`` pairs them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # a constant resample: NaN, left out by the caller
        return np.asarray(pearsonr(rankdata(x, axis=1), rankdata(y, axis=1), axis=1).statistic, dtype=float)
