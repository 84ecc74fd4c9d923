"""Receiver-head statistics: pure math on sentence attention matrices (docs/methods.md 1.5).

- ``vertical_scores``: how much later sentences attend to each sentence, ignoring the nearest ones;
- ``kurtosis`` / ``head_kurtosis``: how spiky a head's vertical scores are (receiver heads are spiky);
- ``top_heads``: the receiver heads, by kurtosis; ``receiver_scores``: each sentence's mean vertical
  score over them;
- ``split_half_reliability``: whether two halves of the traces pick the same heads.

Everything works on tensors and matches the reference (numpy / scipy) definitions; computations run in
float64 so that results agree with scipy to 1e-6 and better.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from jaxtyping import Float
from scipy.stats import ConstantInputWarning, pearsonr, rankdata
from torch import Tensor

from anchorlens.errors import AnchorlensError
from anchorlens.heads import Head, HeadSelectionError, check_heads  # noqa: F401 (re-exported)
from anchorlens.results import Result

PROXIMITY_IGNORE = 4  # the reference's default: sentences closer than this are not "later"
TOP_K = 20  # the reference's default number of receiver heads


def _valid_pairs(n: int, proximity_ignore: int, device) -> Tensor:
    """``valid[i, j]``: query sentence ``i`` counts towards key sentence ``j``'s vertical score."""
    if proximity_ignore < 0:
        raise AnchorlensError(f"proximity_ignore must be >= 0, got {proximity_ignore}")
    i = torch.arange(n, device=device)
    return (i[:, None] - i[None, :]) >= proximity_ignore


def row_ranks(values: Float[Tensor, "... row col"], valid: Tensor) -> Float[Tensor, "... row col"]:
    """Per row, the rank of each valid entry among the row's valid entries divided by their number.

    Ties get their average rank (``scipy.stats.rankdata``); invalid entries become NaN. This is the
    reference's depth control: late rows have more entries, and ranks put all rows on one scale.

    >>> row_ranks(torch.tensor([[0.1, 0.3, 0.3, 9.0]]), torch.tensor([[True, True, True, False]]))
    tensor([[0.3333, 0.8333, 0.8333,    nan]])
    """
    valid = valid.expand_as(values)
    masked = torch.where(valid, values.double(), torch.full_like(values, float("nan"), dtype=torch.float64))
    ranks = torch.from_numpy(rankdata(masked.cpu().numpy(), axis=-1, nan_policy="omit"))  # NaN stays NaN
    per_row = valid.sum(-1, keepdim=True).cpu().double()
    return (ranks / per_row).to(device=values.device, dtype=values.dtype)


def vertical_scores(
    matrix: Float[Tensor, "... sentence sentence"],
    proximity_ignore: int = PROXIMITY_IGNORE,
    depth_control: bool = False,
) -> Float[Tensor, "... sentence"]:
    """Vertical score of sentence ``j``: mean of ``matrix[..., i, j]`` over ``i >= j + proximity_ignore``.

    The last ``proximity_ignore`` sentences have no such ``i`` and get NaN. ``depth_control`` first
    replaces each row by its ranks (see ``row_ranks``). Works on one head (``[S, S]``) or all heads at
    once (``[layer, head, S, S]``).

    >>> m = torch.zeros(6, 6); m[4:, 0] = 0.5; m[5, 1] = 0.1
    >>> vertical_scores(m, proximity_ignore=4)
    tensor([0.5000, 0.1000,    nan,    nan,    nan,    nan])
    """
    n = matrix.shape[-1]
    if matrix.shape[-2] != n:
        raise AnchorlensError(f"expected square sentence matrices [..., S, S], got shape {tuple(matrix.shape)}")
    valid = _valid_pairs(n, proximity_ignore, matrix.device)
    values = matrix.double()
    if depth_control:
        values = row_ranks(values, valid.expand_as(values))
    summed = torch.where(valid, values, torch.zeros_like(values)).sum(-2)
    counts = valid.sum(-2).double()
    return (summed / counts).to(matrix.dtype)  # 0 / 0 = NaN where no sentence is far enough


def kurtosis(values: Float[Tensor, "... n"], dim: int = -1) -> Float[Tensor, "..."]:
    """Excess kurtosis along ``dim``, NaN entries omitted.

    Equals ``scipy.stats.kurtosis(values, axis=dim, fisher=True, bias=True, nan_policy="omit")``,
    NaN where the values are constant or absent. Hand-written because scipy's NaN-omitting path (masked arrays)
    is ~300x slower on a [layer, head, sentence] map (benchmarks/bench_libraries.py) and leaves the device.

    >>> round(kurtosis(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])).item(), 4)
    0.25
    """
    x = values.double()
    present = ~torch.isnan(x)
    n = present.sum(dim, keepdim=True)
    mean = torch.where(present, x, torch.zeros_like(x)).sum(dim, keepdim=True) / n
    deviation = torch.where(present, x - mean, torch.zeros_like(x))
    m2 = (deviation**2).sum(dim, keepdim=True) / n
    m4 = (deviation**4).sum(dim, keepdim=True) / n
    constant = m2 <= (torch.finfo(torch.float64).eps * mean) ** 2  # scipy's test for zero variance
    result = torch.where(constant | (n == 0), torch.full_like(m2, float("nan")), m4 / m2**2 - 3.0)
    return result.squeeze(dim)


def head_kurtosis(
    vertical: Float[Tensor, "layer head sentence"], exclude_layers: Iterable[int] = (0,)
) -> Float[Tensor, "layer head"]:
    """Kurtosis of each head's vertical scores; layers in ``exclude_layers`` are NaN (the reference drops
    layer 0, whose heads are spiky for reasons unrelated to reasoning).

    >>> head_kurtosis(torch.rand(3, 2, 10)).shape
    torch.Size([3, 2])
    """
    if vertical.ndim != 3:
        raise AnchorlensError(f"expected vertical scores [layer, head, sentence], got shape {tuple(vertical.shape)}")
    result = kurtosis(vertical)
    for layer in exclude_layers:
        if -vertical.shape[0] <= layer < vertical.shape[0]:
            result[layer] = float("nan")
    return result


def top_heads(kurtosis_map: Float[Tensor, "layer head"], k: int = TOP_K) -> list[Head]:
    """The ``k`` heads of highest kurtosis, best first, as ``(layer, head)``; NaN heads are never chosen.

    Fewer than ``k`` (none at all on a trace too short for any kurtosis) when fewer heads have a finite
    kurtosis: the one rule of head selection, shared by ``receiver_heads`` (which warns when it happens),
    ``analyze`` and ``study``.

    >>> top_heads(torch.tensor([[float("nan"), 1.0], [5.0, 2.0]]), k=5)
    [(1, 0), (1, 1), (0, 1)]
    """
    if k < 1:
        raise HeadSelectionError(f"asked for the top {k} heads: choose top_k >= 1")
    flat = kurtosis_map.flatten()
    finite = torch.isfinite(flat)
    scores = torch.where(finite, flat.double(), torch.full_like(flat, float("-inf"), dtype=torch.float64))
    order = torch.argsort(scores, descending=True, stable=True)[: min(k, int(finite.sum()))]
    n_heads = kurtosis_map.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def receiver_scores(
    vertical: Float[Tensor, "layer head sentence"], heads: Iterable[Sequence[int]]
) -> Float[Tensor, "sentence"]:
    """Receiver score of each sentence: its mean vertical score over ``heads`` (the receiver heads).

    >>> v = torch.zeros(2, 2, 3); v[1, 0] = torch.tensor([3.0, 1.0, 0.0])
    >>> receiver_scores(v, [(1, 0), (1, 1)])
    tensor([1.5000, 0.5000, 0.0000])
    """
    heads = check_heads(heads, vertical.shape[0], vertical.shape[1])
    if not heads:
        raise HeadSelectionError("no heads given: pass the receiver heads as (layer, head) pairs")
    layers = torch.tensor([layer for layer, _ in heads], device=vertical.device)
    columns = torch.tensor([head for _, head in heads], device=vertical.device)
    return vertical[layers, columns].mean(0)


def _pearson(x: Tensor, y: Tensor) -> float:
    """Pearson r (scipy), NaN where either side is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # a constant half: r is NaN, said by the value
        return float(pearsonr(x.double().cpu().numpy(), y.double().cpu().numpy()).statistic)


@dataclass
class SplitHalfReliability(Result):
    """How well two random halves of the traces agree on each head's mean kurtosis.

    Attributes:
        r: mean Pearson correlation (over heads) between the halves' kurtosis maps, over random splits.
        r_corrected: the Spearman-Brown correction ``2r / (1 + r)``: the reliability of all traces together.
        per_split: each split's correlation.
    """

    r: float
    r_corrected: float
    per_split: Float[Tensor, "split"]

    def to_dataframe(self):
        """One row per random split: its correlation."""
        import pandas as pd

        return pd.DataFrame({"split": range(len(self.per_split)), "r": self.per_split.tolist()})

    def plot(self, ax=None):
        """Histogram of the per-split correlations, the mean marked."""
        from anchorlens.receivers.plots import plot_reliability

        return plot_reliability(self, ax=ax)


def split_half_reliability(
    per_trace_kurtosis: Float[Tensor, "trace layer head"], n_splits: int = 100, seed: int = 0
) -> SplitHalfReliability:
    """Split the traces into two random halves ``n_splits`` times; correlate the halves' mean kurtosis maps.

    Heads that are NaN in either half (excluded layers) are left out of the correlation.

    >>> k = torch.randn(1, 4, 6).repeat(8, 1, 1) + 0.1 * torch.randn(8, 4, 6)
    >>> split_half_reliability(k, n_splits=20).r > 0.9
    True
    """
    n_traces = per_trace_kurtosis.shape[0]
    if n_traces < 2:
        raise AnchorlensError("split-half reliability needs at least 2 traces (4 or more to mean much)")
    generator = torch.Generator().manual_seed(seed)
    values = per_trace_kurtosis.double().flatten(1)
    rs = []
    for _ in range(n_splits):
        order = torch.randperm(n_traces, generator=generator)
        first = values[order[: n_traces // 2]].nanmean(0)
        second = values[order[n_traces // 2 :]].nanmean(0)
        keep = torch.isfinite(first) & torch.isfinite(second)
        rs.append(_pearson(first[keep], second[keep]) if keep.sum() > 2 else float("nan"))
    per_split = torch.tensor(rs, dtype=torch.float64)
    r = float(per_split.nanmean())
    return SplitHalfReliability(r, 2 * r / (1 + r), per_split)
