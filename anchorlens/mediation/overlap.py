"""Neuron-level overlap between two tasks: how many of the top-k cells by effect they share (Stolfo et al.:
about 50% between arithmetic in digits and in words, 22-23% with number retrieval, 9-10% with factual
knowledge at k = 400), against chance and with a permutation p-value."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from anchorlens.mediation.errors import MediationInputError
from anchorlens.results import Result


@dataclass
class NeuronOverlap(Result):
    """Top-``k`` overlap of two effect maps over the same cells.

    ``overlap``: shared cells / k; ``chance``: its expectation for two random k-sets (k / n_cells);
    ``p_value``: the fraction of ``n_permutations`` random k-sets (one side permuted) sharing at least as
    many cells (with the +1 correction); ``shared``: the shared cells' flat indices."""

    k: int
    n_cells: int
    overlap: float
    chance: float
    p_value: float
    n_permutations: int
    shared: list[int]

    def to_dict(self) -> dict:
        return asdict(self)

    def plot(self, ax=None):
        """Bars: the observed top-k overlap beside chance, with the permutation p-value."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(3.5, 3))[1]
        ax.bar(["observed", "chance"], [self.overlap, self.chance], color=["tab:blue", "tab:gray"])
        ax.set_ylabel(f"share of the top {self.k} cells")
        ax.set_title(f"p = {self.p_value:.3g} ({self.n_permutations} permutations)")
        return ax


def top_k_overlap(effects_a: Tensor, effects_b: Tensor, k: int = 400, n_permutations: int = 1000,
                  seed: int = 0) -> NeuronOverlap:
    """Overlap of the ``k`` largest cells of two equally shaped effect tensors (NaN cells count as lowest)."""
    if effects_a.shape != effects_b.shape:
        raise MediationInputError(f"effect maps of different shapes {tuple(effects_a.shape)} and "
                                  f"{tuple(effects_b.shape)}: sweep the same component, layers and units")
    a = torch.nan_to_num(effects_a.flatten().float(), nan=float("-inf"))
    b = torch.nan_to_num(effects_b.flatten().float(), nan=float("-inf"))
    n = a.numel()
    if not 0 < k <= n:
        raise MediationInputError(f"k = {k} must be between 1 and the number of cells ({n})")
    top_a = torch.zeros(n, dtype=torch.bool)
    top_a[a.topk(k).indices] = True
    top_b = b.topk(k).indices
    shared = top_b[top_a[top_b]]
    observed = len(shared)
    generator = torch.Generator().manual_seed(seed)
    # a random k-set for side b: the first k of a random permutation
    hits = torch.tensor([int(top_a[torch.randperm(n, generator=generator)[:k]].sum()) for _ in range(n_permutations)])
    p_value = (1 + int((hits >= observed).sum())) / (1 + n_permutations)
    return NeuronOverlap(k=k, n_cells=n, overlap=observed / k, chance=k / n, p_value=p_value,
                         n_permutations=n_permutations, shared=sorted(shared.tolist()))


def neuron_overlap(result_a, result_b, k: int = 400, metric: str = "stolfo_ie", n_permutations: int = 1000,
                   seed: int = 0) -> NeuronOverlap:
    """Top-``k`` overlap of two ``MediationResult`` sweeps of the same neuron-level component."""
    if (result_a.component, result_a.layers, result_a.units) != (result_b.component, result_b.layers, result_b.units):
        raise MediationInputError("the two results sweep different cells: use the same component, layers and units")
    return top_k_overlap(result_a.mean(metric)[0], result_b.mean(metric)[0], k=k, n_permutations=n_permutations,
                         seed=seed)
