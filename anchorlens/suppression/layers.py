"""Layer-by-layer suppression: which layers carry each sentence-to-sentence dependency.

``suppression_by_layer`` hides a sentence in one window of consecutive layers at a time (all heads, or the
chosen ones), sweeping the window over the model. One baseline forward (and its KV cache) serves every
window. An edge ``j -> i`` that shows up only when a few layers are suppressed is read through those layers;
an edge whose KL spreads over many windows is carried redundantly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.suppression.matrix import DEFAULT_TEMPERATURE, log_kl, sentence_matrix
from anchorlens.suppression.result import SuppressionMatrix
from anchorlens.hooks.fused_attention import fused_attention
from anchorlens.suppression.runner import DEFAULT_MAX_WASTE, run_baseline
from anchorlens.suppression.suppress import check_method, suppressed_token_kl
from anchorlens.suppression.validation import (
    SuppressionInputError,
    check_temperature,
    check_trace,
    resolve_heads,
)
from anchorlens.results import Result
from anchorlens.progress import progress_bar


def layer_windows(n_layers: int, window: int = 1, stride: int | None = None) -> list[list[int]]:
    """Consecutive windows of ``window`` layers, starting every ``stride`` layers (default: every layer).

    >>> layer_windows(5, window=2, stride=2)
    [[0, 1], [2, 3], [4]]
    >>> layer_windows(3, window=2)
    [[0, 1], [1, 2]]
    """
    if not isinstance(window, int) or not 1 <= window <= n_layers:
        raise SuppressionInputError(f"window must be a number of layers from 1 to {n_layers}, got {window!r}")
    if stride is None:
        stride = 1
    if not isinstance(stride, int) or stride < 1:
        raise SuppressionInputError(f"stride must be a positive number of layers, got {stride!r}")
    windows = []
    for first in range(0, n_layers, stride):
        windows.append(list(range(first, min(first + window, n_layers))))
        if first + window >= n_layers:
            break
    return windows


@dataclass
class LayerSuppression(Result):
    """Suppression matrices per window of layers.

    Attributes:
        kl: ``[window, target i, suppressed j]``, as ``SuppressionMatrix.kl`` (NaN where ``j >= i``).
        token_kl: ``[window, suppressed j, token t]``, as ``SuppressionMatrix.token_kl``.
        windows: the layers of each window.
        token_spans, sentences, heads, temperature, method, model_name: as in ``SuppressionMatrix``.

    >>> by_layer = suppression_by_layer(model, trace, window=2)     # doctest: +SKIP
    >>> by_layer.summary(top_k=5)                                   # doctest: +SKIP
    """

    kl: Float[Tensor, "window target suppressed"]
    token_kl: Float[Tensor, "window suppressed token"]
    windows: list[list[int]]
    token_spans: list[tuple[int, int]]
    sentences: list[str]
    heads: list[int] | None
    temperature: float
    method: str
    model_name: str | None = None

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    @property
    def log_kl(self) -> Float[Tensor, "window target suppressed"]:
        return log_kl(self.kl)

    def window_label(self, w: int) -> str:
        layers = self.windows[w]
        return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"

    def matrix(self, w: int) -> SuppressionMatrix:
        """The ``SuppressionMatrix`` of window ``w`` (to plot or save on its own)."""
        return SuppressionMatrix(
            kl=self.kl[w],
            token_kl=self.token_kl[w],
            token_spans=self.token_spans,
            sentences=self.sentences,
            layers=self.windows[w],
            heads=self.heads,
            temperature=self.temperature,
            method=self.method,
            model_name=self.model_name,
        )

    def summary(self, top_k: int | None = None, mass: float = 0.5):
        """Per edge ``j -> i``: which windows carry it, strongest edges (by summed KL) first.

        Columns: target, suppressed, total_kl (summed over windows), peak_layers (the window with the largest
        KL), peak_kl, peak_share (peak / total), carriers (the fewest windows whose KL adds up to ``mass``
        of the total, strongest first), n_carriers.
        """
        import pandas as pd

        rows = []
        n = len(self.sentences)
        for i in range(n):
            for j in range(i):
                per_window = self.kl[:, i, j]
                total = float(per_window.sum())
                order = torch.argsort(per_window, descending=True, stable=True).tolist()
                carriers, running = [], 0.0
                for w in order if total > 0 else []:
                    if running >= mass * total:
                        break
                    carriers.append(w)
                    running += float(per_window[w])
                rows.append(
                    {
                        "target": i,
                        "suppressed": j,
                        "total_kl": total,
                        "peak_layers": self.window_label(order[0]),
                        "peak_kl": float(per_window[order[0]]),
                        "peak_share": float(per_window[order[0]]) / total if total > 0 else float("nan"),
                        "carriers": ", ".join(self.window_label(w) for w in carriers),
                        "n_carriers": len(carriers),
                    }
                )
        frame = pd.DataFrame(rows).sort_values("total_kl", ascending=False, kind="stable").reset_index(drop=True)
        return frame if top_k is None else frame.head(top_k)

    def layer_profile(self):
        """Per window: mean and max KL over all edges ``j < i`` (how much each depth carries overall)."""
        import pandas as pd

        n = len(self.sentences)
        lower = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
        values = self.kl[:, lower]  # [window, edge]
        return pd.DataFrame(
            {
                "window": range(self.n_windows),
                "layers": [self.window_label(w) for w in range(self.n_windows)],
                "mean_kl": values.mean(-1).tolist(),
                "max_kl": values.amax(-1).tolist(),
            }
        )

    def to_dataframe(self):
        """Long format: one row per (window, target, suppressed) with ``j < i``."""
        import pandas as pd

        frames = []
        for w in range(self.n_windows):
            frame = self.matrix(w).to_dataframe()
            frame.insert(0, "layers", self.window_label(w))
            frame.insert(0, "window", w)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def plot(self, top_k: int = 12, ax=None, normalise: bool = True, **kwargs):
        """Heatmap of the strongest edges (rows) across windows (columns); see ``plots.plot_layer_profile``."""
        from anchorlens.suppression.plots import plot_layer_profile

        return plot_layer_profile(self, top_k=top_k, ax=ax, normalise=normalise, **kwargs)

    def __repr__(self) -> str:
        return f"LayerSuppression({len(self.sentences)} sentences, {self.n_windows} windows, method={self.method!r})"


def suppression_by_layer(
    model,
    trace,
    window: int = 1,
    stride: int | None = None,
    heads: Sequence[int] | int | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    method: str = "fast",
    batch_positions: int | None = None,
    max_waste: float = DEFAULT_MAX_WASTE,
    progress: bool = True,
    attention: str = "auto",
) -> LayerSuppression:
    """Suppression matrices with the mask restricted to one window of ``window`` layers at a time.

    The windows start at every ``stride``-th layer (default 1: every layer). Costs one
    ``suppression_matrix`` per window, minus the shared baseline forward. ``attention``: as in
    ``suppression_matrix`` (``"auto"``: fused SDPA with a key mask where supported).

    >>> by_layer = suppression_by_layer(load_model(), trace, window=1)     # doctest: +SKIP
    >>> by_layer.summary(top_k=5)[["target", "suppressed", "peak_layers", "carriers"]]   # doctest: +SKIP
    """
    check_trace(model, trace)
    windows = layer_windows(model.cfg.n_layers, window, stride)
    head_list = resolve_heads(model, heads)
    temperature = check_temperature(temperature)
    check_method(method)
    tokens = trace.tokens(model.cfg.device)
    matrices, token_kls = [], []
    with fused_attention(model, attention):
        baseline = run_baseline(model, tokens, temperature, keep_cache=method == "fast")
        for layers in progress_bar(windows, desc="suppression by layer", progress=progress):
            token_kl = suppressed_token_kl(
                model, tokens, baseline, trace.token_spans, layers, head_list, method,
                batch_positions, max_waste, None, progress,
            )
            token_kls.append(token_kl)
            matrices.append(sentence_matrix(token_kl, trace.token_spans))
    return LayerSuppression(
        kl=torch.stack(matrices),
        token_kl=torch.stack(token_kls),
        windows=windows,
        token_spans=[tuple(span) for span in trace.token_spans],
        sentences=trace.sentence_texts(),
        heads=head_list,
        temperature=temperature,
        method=method,
        model_name=trace.model_name,
    )
