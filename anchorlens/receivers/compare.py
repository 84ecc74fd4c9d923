"""Reasoning model vs base model: the same traces through two models that share a tokenizer.

Thought Anchors found that reasoning models have more kurtotic heads than their base models (sharper
receiver heads). ``compare_models`` runs ``receiver_heads`` on both, and reports the two kurtosis
distributions (with a Mann-Whitney test) and how well the models' receiver scores agree per trace
(Spearman correlation over sentences).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from anchorlens.errors import AnchorlensError, TokenizerMismatchError
from anchorlens.receivers.heads import ReceiverHeads, receiver_heads
from anchorlens.receivers.scores import PROXIMITY_IGNORE, TOP_K
from anchorlens.results import Result


def check_same_tokenizer(model_a, model_b) -> None:
    """Raise ``TokenizerMismatchError`` unless both models map every token string to the same id.

    >>> check_same_tokenizer(load_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ...                      load_model("Qwen/Qwen2.5-Math-1.5B"))   # doctest: +SKIP
    """
    vocab_a, vocab_b = model_a.tokenizer.get_vocab(), model_b.tokenizer.get_vocab()
    if vocab_a != vocab_b:
        only_a = len(set(vocab_a) - set(vocab_b))
        only_b = len(set(vocab_b) - set(vocab_a))
        moved = sum(1 for t, i in vocab_a.items() if t in vocab_b and vocab_b[t] != i)
        raise TokenizerMismatchError(
            f"the two models' tokenizers differ ({len(vocab_a)} vs {len(vocab_b)} tokens; {only_a} only in the first, "
            f"{only_b} only in the second, {moved} with other ids), so the same trace is not the same token sequence "
            "for both: compare a reasoning model with the base model it was trained from "
            "(e.g. DeepSeek-R1-Distill-Qwen-1.5B with Qwen2.5-Math-1.5B)"
        )


def _name(model) -> str:
    return str(getattr(model, "anchorlens_name", None) or getattr(model.cfg, "model_name", None) or "model")


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    return float(spearmanr(x[keep], y[keep]).statistic)


@dataclass
class ModelComparison(Result):
    """Receiver heads of two models on the same traces.

    Attributes:
        names: the two models' names (e.g. reasoning, base).
        heads_a, heads_b: each model's ``ReceiverHeads``.
        agreement: per trace, Spearman correlation between the two models' receiver scores.
    """

    names: tuple[str, str]
    heads_a: ReceiverHeads
    heads_b: ReceiverHeads
    agreement: Tensor
    _nested = {"heads_a": "a", "heads_b": "b"}  # each model's heads: arrays "a.kurtosis", ..., metadata "a"

    def kurtosis_summary(self) -> dict:
        """Mean and median head kurtosis per model and a two-sided Mann-Whitney U test between them."""
        from scipy.stats import mannwhitneyu

        a = self.heads_a.kurtosis.flatten().numpy()
        b = self.heads_b.kurtosis.flatten().numpy()
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        return {
            f"mean_kurtosis[{self.names[0]}]": float(a.mean()),
            f"mean_kurtosis[{self.names[1]}]": float(b.mean()),
            f"median_kurtosis[{self.names[0]}]": float(np.median(a)),
            f"median_kurtosis[{self.names[1]}]": float(np.median(b)),
            "mann_whitney_p": float(mannwhitneyu(a, b, alternative="two-sided").pvalue),
            "mean_receiver_score_agreement": float(np.nanmean(self.agreement.numpy())),
        }

    def to_dataframe(self):
        """One row per trace: the agreement of receiver scores, and each model's top receiver sentence."""
        import pandas as pd

        rows = []
        for t in range(len(self.agreement)):
            row = {"trace": t, "spearman": float(self.agreement[t])}
            for heads, name in ((self.heads_a, self.names[0]), (self.heads_b, self.names[1])):
                scores = heads.scores(t)
                row[f"top_sentence[{name}]"] = int(torch.nan_to_num(scores, nan=-np.inf).argmax())
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self):
        """Kurtosis distributions side by side and both models' receiver scores on trace 0."""
        from anchorlens.receivers.plots import plot_comparison

        return plot_comparison(self)


def compare_models(
    model_a,
    model_b,
    traces,
    top_k: int = TOP_K,
    proximity_ignore: int = PROXIMITY_IGNORE,
    exclude_layers: Iterable[int] = (0,),
    include_prompt: bool = False,
    progress: bool = True,
) -> ModelComparison:
    """Run the same traces through two models with the same tokenizer and compare their receiver heads.

    Args:
        model_a, model_b: TransformerBridges, typically a reasoning model and its base model.
        traces: ``Trace`` objects built with either model's tokenizer (they are the same).
        top_k, proximity_ignore, exclude_layers, include_prompt: as in ``receiver_heads``.

    >>> comparison = compare_models(r1_distill, qwen_math, traces)   # doctest: +SKIP
    >>> comparison.kurtosis_summary(); comparison.plot()            # doctest: +SKIP
    """
    check_same_tokenizer(model_a, model_b)
    if hasattr(traces, "token_spans"):
        traces = [traces]
    traces = list(traces)
    if not traces:
        raise AnchorlensError("compare_models needs at least one trace")
    settings = dict(
        top_k=top_k, proximity_ignore=proximity_ignore, exclude_layers=tuple(exclude_layers), include_prompt=include_prompt
    )
    heads_a = receiver_heads(model_a, traces, progress=progress, **settings)
    heads_b = receiver_heads(model_b, traces, progress=progress, **settings)
    agreement = torch.tensor(
        [_spearman(heads_a.scores(t).numpy(), heads_b.scores(t).numpy()) for t in range(len(traces))], dtype=torch.float64
    )
    return ModelComparison((_name(model_a), _name(model_b)), heads_a, heads_b, agreement)
