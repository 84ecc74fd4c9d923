"""``receiver_heads``: the heads whose attention to earlier sentences is spikiest, across traces."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import AnchorlensError
from anchorlens.receivers.attention import sentence_attention
from anchorlens.receivers.scores import (
    PROXIMITY_IGNORE,
    TOP_K,
    Head,
    HeadSelectionError,
    SplitHalfReliability,
    head_kurtosis,
    receiver_scores,
    split_half_reliability,
    top_heads,
)
from anchorlens.results import Result
from anchorlens.progress import progress_bar


class FewerHeadsWarning(UserWarning):
    """Fewer heads than ``top_k`` have a kurtosis (traces too short): the ones that do are returned."""


@dataclass
class ReceiverHeads(Result):
    """Receiver heads found on a set of traces, with everything needed to score sentences.

    Iterating over it (or indexing it) gives the ``(layer, head)`` pairs, best first, so it can be passed
    wherever a list of heads is expected (``ablate_heads``, ``receiver_scores``).

    Attributes:
        heads: the top-k heads by kurtosis averaged over traces, best first.
        kurtosis: ``[n_layers, n_heads]`` mean kurtosis over traces (NaN for excluded layers).
        per_trace_kurtosis: ``[n_traces, n_layers, n_heads]``.
        vertical: per trace, ``[n_layers, n_heads, n_sentences]`` vertical scores.
        sentences: per trace, the sentence texts.
        settings: proximity_ignore, depth_control, exclude_layers, include_prompt, model_name.
        head_attention: per trace, the top receiver head's ``[n_sentences, n_sentences]`` sentence attention
            (``receiver_heads(..., keep_head_attention=True)``; None otherwise).
    """

    heads: list[Head]
    kurtosis: Float[Tensor, "layer head"]
    per_trace_kurtosis: Float[Tensor, "trace layer head"]
    vertical: list[Float[Tensor, "layer head sentence"]]
    sentences: list[list[str]]
    settings: dict = field(default_factory=dict)
    head_attention: list[Float[Tensor, "sentence sentence"]] | None = None

    def __iter__(self):
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    def __getitem__(self, index):
        return self.heads[index]

    @property
    def n_traces(self) -> int:
        return len(self.vertical)

    def scores(self, trace: int = 0, top_k: int | None = None) -> Float[Tensor, "sentence"]:
        """Receiver score of each sentence of trace number ``trace``: mean vertical score over the top
        ``top_k`` receiver heads (all of ``heads`` by default). NaN for the last ``proximity_ignore``
        sentences, which no sentence far enough attends to.
        """
        if not -self.n_traces <= trace < self.n_traces:
            raise AnchorlensError(f"trace {trace} does not exist: these receiver heads come from {self.n_traces} traces")
        heads = self.heads if top_k is None else self.heads[:top_k]
        return receiver_scores(self.vertical[trace], heads)

    def reliability(self, n_splits: int = 100, seed: int = 0) -> SplitHalfReliability:
        """Split-half reliability of the kurtosis map across traces (see ``split_half_reliability``)."""
        return split_half_reliability(self.per_trace_kurtosis, n_splits, seed)

    def to_dataframe(self):
        """One row per head: layer, head, mean kurtosis, its rank, and whether it is a receiver head."""
        import pandas as pd

        n_layers, n_heads = self.kurtosis.shape
        rank = {head: i for i, head in enumerate(self.heads)}
        rows = [
            {
                "layer": layer,
                "head": head,
                "kurtosis": float(self.kurtosis[layer, head]),
                "rank": rank.get((layer, head)),
                "receiver": (layer, head) in rank,
            }
            for layer in range(n_layers)
            for head in range(n_heads)
        ]
        return pd.DataFrame(rows)

    def sentence_dataframe(self, trace: int = 0):
        """One row per sentence of trace ``trace``: text and receiver score."""
        import pandas as pd

        return pd.DataFrame(
            {"sentence": range(len(self.sentences[trace])), "text": self.sentences[trace], "receiver_score": self.scores(trace).numpy()}
        )

    def plot(self, ax=None, **kwargs):
        """Kurtosis map, layers x heads, receiver heads outlined (see ``plot_kurtosis_map``)."""
        from anchorlens.receivers.plots import plot_kurtosis_map

        return plot_kurtosis_map(self.kurtosis, heads=self.heads, ax=ax, **kwargs)

    def plot_scores(self, trace: int = 0, ax=None, **kwargs):
        """Receiver score per sentence of one trace (see ``plot_receiver_scores``)."""
        from anchorlens.receivers.plots import plot_receiver_scores

        return plot_receiver_scores(self.scores(trace), self.sentences[trace], ax=ax, **kwargs)

    # ------------------------------------------------------------------ I/O

    def _to_file(self) -> tuple[dict, dict]:
        """The ragged vertical scores concatenated along sentences (``sentences`` gives the split back)."""
        arrays = {"kurtosis": self.kurtosis, "per_trace_kurtosis": self.per_trace_kurtosis,
                  "vertical": torch.cat(self.vertical, dim=-1)}
        if self.head_attention is not None:  # square per trace: flattened and concatenated
            arrays["head_attention"] = torch.cat([m.reshape(-1) for m in self.head_attention])
        meta = {"heads": [list(h) for h in self.heads], "sentences": self.sentences, "settings": self.settings}
        return arrays, meta

    @classmethod
    def _from_file(cls, arrays: dict, meta: dict) -> "ReceiverHeads":
        lengths = [len(s) for s in meta["sentences"]]
        vertical = list(torch.split(arrays["vertical"], lengths, dim=-1))
        head_attention = None
        if "head_attention" in arrays:
            flat = torch.split(arrays["head_attention"], [n * n for n in lengths])
            head_attention = [m.reshape(n, n) for m, n in zip(flat, lengths)]
        return cls([tuple(h) for h in meta["heads"]], arrays["kurtosis"], arrays["per_trace_kurtosis"], vertical,
                   meta["sentences"], meta["settings"], head_attention)

    def __repr__(self) -> str:
        shown = ", ".join(f"({l}, {h})" for l, h in self.heads[:5])
        more = ", ..." if len(self.heads) > 5 else ""
        return f"ReceiverHeads(top {len(self.heads)} of {self.kurtosis.numel()} heads over {self.n_traces} traces: [{shown}{more}])"


def receiver_heads(
    model,
    traces,
    top_k: int = TOP_K,
    proximity_ignore: int = PROXIMITY_IGNORE,
    depth_control: bool = False,
    exclude_layers: Iterable[int] = (0,),
    include_prompt: bool = False,
    keep_head_attention: bool = False,
    require_heads: bool = True,
    progress: bool = True,
) -> ReceiverHeads:
    """Find the receiver heads of ``model``: top ``top_k`` heads by kurtosis of vertical scores, averaged
    over ``traces`` (one forward pass per trace; docs/methods.md 1.5).

    Args:
        model: a TransformerBridge.
        traces: ``Trace`` objects (or one), built with this model's tokenizer.
        top_k: how many heads to keep (the paper: 20; its figures used 16 and 32).
        proximity_ignore: sentences closer than this do not count towards vertical scores.
        depth_control: rank-normalise each row before averaging (the reference's option).
        exclude_layers: layers never chosen (layer 0 by default, as in the reference).
        include_prompt: count the prompt as one more sentence (the first).
        keep_head_attention: keep the top head's sentence attention of every trace (``head_attention``); this
            holds every trace's ``[layers, heads, n, n]`` attention until the heads are chosen, so use it on few
            traces (``analyze`` uses it on one).
        require_heads: raise ``HeadSelectionError`` when no head has a kurtosis (traces too short); False
            returns a ``ReceiverHeads`` with no heads instead (``analyze`` saves that and says why).

    >>> heads = receiver_heads(model, traces, top_k=16)   # doctest: +SKIP
    >>> list(heads)[:3], heads.scores(trace=0)             # doctest: +SKIP
    """
    if hasattr(traces, "token_spans"):
        traces = [traces]
    traces = list(traces)
    if not traces:
        raise AnchorlensError("receiver_heads needs at least one trace: build them with Trace.from_text or generate_trace")
    exclude_layers = tuple(exclude_layers)
    vertical, sentences, kurtoses, kept = [], [], [], []
    for trace in progress_bar(traces, desc="receiver heads", progress=progress):
        attention = sentence_attention(model, trace, include_prompt=include_prompt)
        if keep_head_attention:
            kept.append(attention)
        v = attention.vertical_scores(proximity_ignore, depth_control)
        vertical.append(v)
        sentences.append(attention.sentences)
        kurtoses.append(head_kurtosis(v, exclude_layers))
    per_trace = torch.stack(kurtoses)
    mean = per_trace.nanmean(0)  # a trace too short for a kurtosis does not drag the others to NaN
    settings = {
        "top_k": top_k,
        "proximity_ignore": proximity_ignore,
        "depth_control": depth_control,
        "exclude_layers": list(exclude_layers),
        "include_prompt": include_prompt,
        "model_name": getattr(model, "anchorlens_name", None) or getattr(model.cfg, "model_name", None),
    }
    heads = top_heads(mean, top_k)
    if not heads and require_heads:
        raise HeadSelectionError(
            "no head has a finite kurtosis on these traces: traces need more than proximity_ignore + 1 sentences "
            "(layer 0 is excluded by default)"
        )
    if 0 < len(heads) < top_k:
        warnings.warn(f"asked for the top {top_k} heads but only {len(heads)} have a finite kurtosis (short traces, "
                      f"or layer 0 excluded): returning those {len(heads)}; pass top_k <= {len(heads)} to silence "
                      "this", FewerHeadsWarning, stacklevel=2)
    head_attention = [attention.head(*heads[0]) for attention in kept] if keep_head_attention and heads else None
    return ReceiverHeads(heads, mean, per_trace, vertical, sentences, settings, head_attention)
