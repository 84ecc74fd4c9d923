"""The causal check of a route: attention knockout of its strongest edges against as many random edges.

If the route says which attention edges carry the prediction, blocking them (``anchorlens.hooks.edge_knockout``)
should lower the probability of the predicted token more than blocking the same number of edges drawn at
random from all causal edges (targets after BOS, sources at or before the target, any layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from anchorlens.hooks.edge_knockout import edge_knockout_hooks
from anchorlens.flow.checks import DEFAULT_THRESHOLD, FlowInputError
from anchorlens.flow.information_flow import flow_tokens, information_flow
from anchorlens.results import Result
from anchorlens.progress import progress_bar


@torch.inference_mode()
def knockout_probability(model, tokens: torch.Tensor, edges, answer: int, position: int = -1) -> float:
    """P(``answer``) at ``position`` with the attention ``edges`` ``(layer, target, source)`` blocked."""
    hooks = edge_knockout_hooks(edges, tokens.shape[1]) if len(edges) else []
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return float(torch.softmax(logits[0, position].float(), -1)[answer])


def answer_token(model, answer: str | int | None, clean_logits: torch.Tensor) -> int:
    """The answer's token id: an id, the first token of a string (``" Paris"``), or the model's top token."""
    if answer is None:
        return int(clean_logits.argmax())
    if isinstance(answer, int):
        return answer
    ids = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise FlowInputError(f"the answer {answer!r} has no tokens: give a word such as ' Paris'")
    return int(ids[0])


@dataclass
class KnockoutResult(Result):
    """P(answer) with the route's top attention edges blocked against the same number of random edges.

    Attributes:
        p_clean: P(answer) without knockout.
        p_route: P(answer) with the ``n_edges`` strongest route edges blocked.
        p_random: one P(answer) per random draw of ``n_edges`` edges.
        route_edges: the blocked route edges ``(layer, target, source)``.
    """

    p_clean: float
    p_route: float
    p_random: list[float]
    route_edges: list[tuple[int, int, int]]
    answer: int
    answer_str: str
    text: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return len(self.route_edges)

    @property
    def route_drop(self) -> float:
        return self.p_clean - self.p_route

    @property
    def random_drops(self) -> np.ndarray:
        return self.p_clean - np.asarray(self.p_random)

    def fraction_random_below(self) -> float:
        """Share of random draws that lowered P(answer) less than the route's edges did."""
        return float(np.mean(self.random_drops < self.route_drop))

    def to_dataframe(self):
        """One row per condition: clean, route, random draw k; P(answer) and its drop."""
        import pandas as pd

        rows = [{"condition": "clean", "p_answer": self.p_clean}, {"condition": "route", "p_answer": self.p_route}]
        rows += [{"condition": f"random {k}", "p_answer": p} for k, p in enumerate(self.p_random)]
        frame = pd.DataFrame(rows)
        frame["drop"] = self.p_clean - frame["p_answer"]
        return frame

    def plot(self, ax=None):
        """P(answer): clean, route knockout, and the random knockouts (dots)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3.5))
        ax.bar([0, 1], [self.p_clean, self.p_route], color=["tab:grey", "tab:red"])
        ax.scatter(np.full(len(self.p_random), 2) + np.linspace(-0.2, 0.2, len(self.p_random)), self.p_random, c="tab:blue")
        ax.set_xticks([0, 1, 2], ["clean", f"route ({self.n_edges})", "random"])
        ax.set_ylabel(f"P({self.answer_str!r})")
        ax.set_title("attention knockout")
        return ax


def random_edges(n_layers: int, n_pos: int, n_edges: int, generator: torch.Generator, exclude=()) -> list[tuple[int, int, int]]:
    """``n_edges`` distinct causal edges ``(layer, target, source)`` with ``1 <= target``, ``source <= target``."""
    excluded = set(map(tuple, exclude))
    per_layer = n_pos * (n_pos + 1) // 2 - 1  # causal pairs without the BOS row
    if n_edges > n_layers * per_layer - len(excluded):
        raise FlowInputError(f"cannot draw {n_edges} random edges from {n_layers * per_layer} causal edges")
    chosen: set[tuple[int, int, int]] = set()
    while len(chosen) < n_edges:
        layer = int(torch.randint(n_layers, (1,), generator=generator))
        target = int(torch.randint(1, n_pos, (1,), generator=generator))
        source = int(torch.randint(target + 1, (1,), generator=generator))
        edge = (layer, target, source)
        if edge not in excluded:
            chosen.add(edge)
    return sorted(chosen)


def knockout_experiment(
    model,
    text_or_trace,
    answer: str | int | None = None,
    n_edges: int = 10,
    n_random: int = 10,
    threshold: float = DEFAULT_THRESHOLD,
    flow=None,
    seed: int = 0,
    progress: bool = True,
) -> KnockoutResult:
    """Block the ``n_edges`` strongest attention edges of the route into the last position's prediction,
    then ``n_random`` draws of as many random edges; compare P(answer).

    Args:
        answer: the answer token (an id or a string such as ``" Paris"``; its first token), or None for the
            model's own top prediction.
        flow: an ``InformationFlow`` of the same tokens (computed when None).

    >>> result = knockout_experiment(model, "The capital of France is", " Paris")   # doctest: +SKIP
    >>> result.p_clean, result.p_route, result.p_random                                # doctest: +SKIP
    """
    if n_edges < 1 or n_random < 1:
        raise FlowInputError(f"n_edges and n_random must be at least 1, got {n_edges} and {n_random}")
    tokens = flow_tokens(model, text_or_trace).to(model.cfg.device)
    with torch.inference_mode():
        clean_logits = model(tokens)[0, -1]
    answer_id = answer_token(model, answer, clean_logits)
    flow = information_flow(model, tokens, progress=progress) if flow is None else flow
    if flow.tokens != tokens[0].tolist():
        raise FlowInputError("the flow passed was computed on other tokens than this text: recompute it")
    route = flow.routes(-1, threshold).attention_edges()
    route = route[route["target"] >= 1]  # the BOS row has one key: nothing to knock out
    edges = [tuple(int(v) for v in row) for row in route[["layer", "target", "source"]].head(n_edges).to_numpy()]
    if not edges:
        raise FlowInputError(f"the route has no attention edges above threshold {threshold}: lower it")
    p_clean = float(torch.softmax(clean_logits.float(), -1)[answer_id])
    p_route = knockout_probability(model, tokens, edges, answer_id)
    generator = torch.Generator().manual_seed(seed)
    p_random = [
        knockout_probability(model, tokens, random_edges(model.cfg.n_layers, tokens.shape[1], len(edges), generator, edges), answer_id)
        for _ in progress_bar(range(n_random), desc="random knockouts", progress=progress, leave=False)
    ]
    text = text_or_trace if isinstance(text_or_trace, str) else ""
    return KnockoutResult(p_clean, p_route, p_random, edges, answer_id, model.tokenizer.decode([answer_id]), text, {"threshold": threshold})
