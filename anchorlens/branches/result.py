"""What the Thought Branches results share: the settings and bookkeeping of the call that made them, the
intervals' level, a table of rows, and interval bars on their plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from anchorlens.stats import LEVEL


@dataclass
class BranchResult:
    """What ``ResilienceResult``, ``ChainDisruptionResult`` and ``TransplantResult`` share (each is
    ``(BranchResult, Result)``: this is no result of its own).

    Attributes:
        settings: what the completions were made with (the method's own settings and ``BranchOptions``).
        run_info: where they are stored, how many this call generated and found stored, tokens, seconds.
        level: the intervals' level (the old name ``confidence`` is deprecated and goes in 0.3).
    """

    settings: dict = field(default_factory=dict, kw_only=True)
    run_info: dict = field(default_factory=dict, kw_only=True)
    level: float = field(default=LEVEL, kw_only=True)

    _rows: ClassVar[str] = "rows"  # the field holding one dict per row of the table
    _columns: ClassVar[tuple[str, ...]] = ()

    def to_dataframe(self):
        """One row per dict of the result's rows, in the columns it names."""
        import pandas as pd

        return pd.DataFrame(getattr(self, self._rows), columns=list(self._columns))

    def _axes(self, ax, size: tuple[float, float]):
        """The table and the axes to draw it on (a new figure of ``size`` when ``ax`` is None)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=size)
        return self.to_dataframe(), ax


def interval_bars(ax, x, frame, value: str, low: str, high: str, capsize: float = 2) -> None:
    """Error bars from ``frame[low]`` to ``frame[high]`` around ``frame[value]`` where all three are finite."""
    y, lo, hi = (frame[c].to_numpy(float) for c in (value, low, high))
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none", ecolor="black", capsize=capsize)
