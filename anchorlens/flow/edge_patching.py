"""Component circuits by edge attribution patching (Syed et al. 2023), with TransformerLens 4's own
``transformer_lens.tools.analysis.attribution_patching`` (not written again here).

On a prompt pair (clean, corrupt: same length, e.g. the mediation tasks' pairs) and a metric (a logit
difference), it scores every writer -> reader edge (embedding, each head's output, each MLP -> each head's
q/k/v input, each MLP's input, the logits) with ``(a_clean - a_corrupt) . d metric / d input``.

Why an adapter: TransformerLens 4.3 refuses edge granularity on grouped-query attention ("K/V inputs are not
per query head"), which is every Llama / Qwen2 model anchorlens runs, SmolLM2 included. ``expand_kv_heads``
gives an exactly equivalent multi-head model (each key/value head's weights copied to every query head of its
group: the same function, checked on the logits), on which the edge sweep runs. Edges into a query head's
``k_input`` / ``v_input`` are then that head's copy of the shared key/value head: their sum over a group is
the edge into the shared head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from anchorlens.errors import InputError
from anchorlens.results import Result
from anchorlens.models import expand_kv_heads  # noqa: F401 (re-exported: anchorlens.flow.expand_kv_heads)


EdgePatchingError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


@dataclass
class EdgeAttribution(Result):
    """Edge attribution patching scores of one prompt pair (denoising convention of TransformerLens: a positive
    score means moving that edge from corrupt to clean raises the metric).

    Attributes:
        edges: one row per edge: source (kind, layer, head, position), target (kind, layer, head, position), score.
        metric_clean, metric_corrupt: the metric on each prompt.
    """

    edges: "pd.DataFrame"  # noqa: F821
    metric_clean: float
    metric_corrupt: float
    clean: str = ""
    corrupt: str = ""
    metadata: dict = field(default_factory=dict)

    def to_dataframe(self):
        return self.edges.copy()

    def top(self, k: int = 20):
        """The ``k`` edges of largest |score|."""
        order = self.edges["score"].abs().sort_values(ascending=False, kind="stable").index
        return self.edges.loc[order].head(k).reset_index(drop=True)

    def plot(self, k: int = 20, ax=None):
        """Horizontal bars of the ``k`` strongest edges."""
        import matplotlib.pyplot as plt

        top = self.top(k)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1))
        labels = [f"{r.source} -> {r.target}" for r in top.itertuples()]
        ax.barh(range(len(top)), top["score"], color=["tab:red" if s > 0 else "tab:blue" for s in top["score"]])
        ax.set_yticks(range(len(top)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("attribution score (metric units)")
        ax.set_title(f"edge attribution patching: {self.clean!r} vs {self.corrupt!r}", fontsize=8)
        return ax

    @classmethod
    def _from_file(cls, arrays: dict, meta: dict) -> "EdgeAttribution":
        if "numbers" in arrays:  # saved before the generic persistence: the numeric columns as one array
            import pandas as pd

            frame = pd.DataFrame(arrays.pop("numbers").numpy(), columns=[
                "source_layer", "source_head", "source_position", "target_layer", "target_head", "target_position",
                "score"])
            frame.insert(0, "source_kind", meta.pop("source_kind"))
            frame.insert(4, "target_kind", meta.pop("target_kind"))
            meta = {**meta, "edges": _with_labels(frame)}
        return super()._from_file(arrays, meta)


def _node_label(kind, layer, head, position) -> str:
    parts = [kind] + ([f"L{int(layer)}"] if layer == layer and layer >= 0 else []) + ([f"H{int(head)}"] if head == head and head >= 0 else [])
    return ".".join(parts) + f"@{int(position)}"


def _with_labels(frame):
    frame["source"] = [_node_label(*r) for r in frame[["source_kind", "source_layer", "source_head", "source_position"]].itertuples(index=False)]
    frame["target"] = [_node_label(*r) for r in frame[["target_kind", "target_layer", "target_head", "target_position"]].itertuples(index=False)]
    return frame


def _token_id(model, token) -> int:
    if isinstance(token, int):
        return token
    ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise EdgePatchingError(f"{token!r} is {len(ids)} tokens: pass a single-token answer (e.g. ' Paris') or its id")
    return ids[0]


def edge_attribution(model, clean: str, corrupt: str, answer, wrong_answer) -> EdgeAttribution:
    """Edge attribution patching of ``clean`` against ``corrupt`` on the logit difference
    ``logit(answer) - logit(wrong_answer)`` at the last position (GQA models through ``expand_kv_heads``).

    >>> result = edge_attribution(model, "The capital of France is", "The capital of Italy is", " Paris", " Rome")  # doctest: +SKIP
    >>> result.top(10)                                                                                          # doctest: +SKIP
    """
    import pandas as pd
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    clean_tokens, corrupt_tokens = model.to_tokens(clean), model.to_tokens(corrupt)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise EdgePatchingError(
            f"the prompts have {clean_tokens.shape[1]} and {corrupt_tokens.shape[1]} tokens: attribution patching "
            "compares activations position by position, so choose a pair of equal token length"
        )
    good, bad = _token_id(model, answer), _token_id(model, wrong_answer)
    mha = expand_kv_heads(model)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    with torch.no_grad():
        metric_clean, metric_corrupt = float(metric(mha(clean_tokens))), float(metric(mha(corrupt_tokens)))
    result = attribution_patch(mha, clean_tokens, corrupt_tokens, metric, EdgeAttributionConfig(granularity="edge"))
    rows = []
    for (source, target), score in result.edge_scores.items():
        rows.append({
            "source_kind": source.kind, "source_layer": -1 if source.layer is None else source.layer,
            "source_head": -1 if source.head is None else source.head, "source_position": source.position,
            "target_kind": target.kind, "target_layer": -1 if target.layer is None else target.layer,
            "target_head": -1 if target.head is None else target.head, "target_position": target.position,
            "score": float(score),
        })
    frame = _with_labels(pd.DataFrame(rows))
    return EdgeAttribution(frame, metric_clean, metric_corrupt, clean, corrupt, {"answer": answer, "wrong_answer": wrong_answer})
