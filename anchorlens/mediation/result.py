"""``MediationResult``: per-pair effects of patching each cell, their means and confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor

from anchorlens.mediation.metrics import METRICS, effect, mean_and_ci, stolfo_effect
from anchorlens.results import Result
from anchorlens.stats import LEVEL



@dataclass
class MediationResult(Result):
    """What patching each cell (layer, position[, unit]) from the counterfactual into the base run did.

    Attributes:
        component: what was patched (``anchorlens.mediation.COMPONENTS``).
        layers, positions: the cells' layers and positions (``positions == ["last"]`` for the last token of
            every pair, whatever its length); ``units``: heads, MLP dims or hidden units (None for whole vectors).
        unit: the unit dimension's name (``"head"``, ``"dim"``, ``"neuron"``) or None.
        metric: the metric ``.effects`` reports (any of ``METRICS`` via ``.values(metric)`` / ``.mean(metric)``).
        patched_logprobs: ``[pair, layer, position(, unit), 2]`` log P*(r), log P*(r') of each patched run.
        patched_logit_diff: ``[pair, layer, position(, unit)]`` logit(r) - logit(r') of each patched run.
        base_logprobs, cf_logprobs: ``[pair, 2]`` the same for the base and the counterfactual prompts' own runs.
        base_logit_diff, cf_logit_diff: ``[pair]``.
        pairs: the prompts and answers (``base``, ``counterfactual``, ``base_answer``, ``counterfactual_answer``).
    """

    component: str
    layers: list[int]
    positions: list
    units: list[int] | None
    unit: str | None
    metric: str
    patched_logprobs: Float[Tensor, "pair layer position *unit two"]
    patched_logit_diff: Float[Tensor, "pair layer position *unit"]
    base_logprobs: Float[Tensor, "pair two"]
    cf_logprobs: Float[Tensor, "pair two"]
    base_logit_diff: Float[Tensor, " pair"]
    cf_logit_diff: Float[Tensor, " pair"]
    pairs: dict = field(default_factory=dict)
    model_name: str | None = None
    method: str = "batched"

    @property
    def dims(self) -> tuple[str, ...]:
        """Names of ``.effects``' dimensions, e.g. ``("layer", "position", "head")``."""
        return ("layer", "position") + ((self.unit,) if self.unit else ())

    @property
    def n_pairs(self) -> int:
        return self.patched_logit_diff.shape[0]

    def _broadcast(self, t: Tensor) -> Tensor:
        extra = self.patched_logit_diff.ndim - 1
        return t.reshape(t.shape[:1] + (1,) * extra + t.shape[1:])

    def values(self, metric: str | None = None) -> Tensor:
        """Per-pair effects ``[pair, layer, position(, unit)]`` under ``metric`` (default: ``self.metric``)."""
        metric = metric or self.metric
        return effect(metric, self.patched_logprobs, self.patched_logit_diff, self._broadcast(self.base_logprobs),
                      self._broadcast(self.base_logit_diff), self._broadcast(self.cf_logit_diff))

    def mean(self, metric: str | None = None, level: float = LEVEL) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean, ci_low, ci_high)`` over pairs (NaN-aware; normal approximation)."""
        return mean_and_ci(self.values(metric), level)

    @property
    def effects(self) -> Tensor:
        """Mean over pairs of ``self.metric``: ``[n_layers, n_positions]`` (``(, n_units)`` for unit kinds)."""
        return self.mean()[0]

    def total_effect(self, metric: str | None = None) -> Tensor:
        """Per-pair total effect: the counterfactual prompt's own run in place of a patched one ``[pair]``."""
        metric = metric or self.metric
        if metric == "stolfo_ie":
            return stolfo_effect(self.base_logprobs, self.cf_logprobs)
        return effect(metric, self.cf_logprobs, self.cf_logit_diff, self.base_logprobs, self.base_logit_diff,
                      self.cf_logit_diff)

    def matrix(self, metric: str | None = None) -> Tensor:
        """The mean effects with a single position squeezed: ``[layer, unit]`` for units at one position."""
        mean = self.mean(metric)[0]
        return mean[:, 0] if mean.shape[1] == 1 and self.unit else mean

    def to_dataframe(self, level: float = LEVEL):
        """One row per cell: layer, position, unit, and for every metric its mean and confidence interval."""
        import pandas as pd

        stats = {m: [t.flatten().tolist() for t in self.mean(m, level)] for m in METRICS}
        rows = []
        units = self.units if self.unit else [None]
        i = 0
        for layer in self.layers:
            for position in self.positions:
                for unit in units:
                    row = {"component": self.component, "layer": layer, "position": position}
                    if self.unit:
                        row[self.unit] = unit
                    for m, (mean, low, high) in stats.items():
                        row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean[i], low[i], high[i]
                    rows.append(row)
                    i += 1
        return pd.DataFrame(rows)

    def top_cells(self, k: int = 10, metric: str | None = None):
        """The ``k`` cells with the largest mean effect, as a DataFrame."""
        metric = metric or self.metric
        frame = self.to_dataframe()
        return frame.sort_values(metric, ascending=False, kind="stable", na_position="last").head(k).reset_index(
            drop=True)

    def plot(self, metric: str | None = None, ax=None, tokens: list[str] | None = None, **kwargs):
        """Heatmap of the mean effect: layer x position (layer x unit for unit kinds at one position)."""
        from anchorlens.mediation.plots import plot_effects

        return plot_effects(self, metric=metric or self.metric, ax=ax, tokens=tokens, **kwargs)

    # ------------------------------------------------------------------ I/O

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.effects.shape)
        return (f"MediationResult({self.component}, {self.n_pairs} pairs, effects [{', '.join(self.dims)}] = {shape}, "
                f"metric={self.metric!r}, method={self.method!r})")
