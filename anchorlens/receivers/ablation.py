"""Does removing the receiver heads hurt more than removing random heads of the same number?

For the chosen heads and ``n_random`` random head sets of the same size (drawn from the other heads
outside the excluded layers), ``head_ablation_experiment`` measures, with the heads ablated at their own
output (``ablate_heads``):

- the mean log-probability per token of reference continuations (cheap and informative: one forward
  pass per continuation), and
- accuracy on problems, by greedy generation and ``\\boxed{}`` answer checking (costly; optional).

Each is reported as a change from the unablated model, with bootstrap confidence intervals over items,
and the target set is placed in the distribution over random sets (an empirical p-value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.answers import check_answer, extract_boxed
from anchorlens.errors import AnchorlensError
from anchorlens.hooks.head_ablation import ablate_heads
from anchorlens.hooks.fused_attention import fused_attention
from anchorlens.receivers.scores import Head, HeadSelectionError, check_heads
from anchorlens.trace import encode_text
from anchorlens.results import Result
from anchorlens.progress import progress_bar
from anchorlens.stats import LEVEL, mean_interval
from anchorlens.generation import greedy_generate

BASELINE = "none"


def random_head_sets(
    n_layers: int,
    n_heads: int,
    size: int,
    n_sets: int,
    avoid: Iterable[Head] = (),
    exclude_layers: Iterable[int] = (0,),
    seed: int = 0,
) -> list[list[Head]]:
    """``n_sets`` random sets of ``size`` distinct heads, none in ``avoid`` or in ``exclude_layers``.

    >>> random_head_sets(4, 2, size=2, n_sets=1, avoid=[(1, 0)], seed=0)[0]
    [(3, 1), (1, 1)]
    """
    avoid, excluded = set(avoid), set(exclude_layers)
    pool = [(l, h) for l in range(n_layers) if l not in excluded for h in range(n_heads) if (l, h) not in avoid]
    if size > len(pool):
        raise HeadSelectionError(
            f"cannot draw {size} random heads from the {len(pool)} heads left outside the target set and the "
            "excluded layers: ablate fewer heads or exclude fewer layers"
        )
    generator = torch.Generator().manual_seed(seed)
    return [[pool[i] for i in torch.randperm(len(pool), generator=generator)[:size].tolist()] for _ in range(n_sets)]


@dataclass
class HeadAblationResult(Result):
    """Per condition (no ablation, the target heads, each random set), per item measurements.

    Attributes:
        head_sets: condition name -> its heads (the target first, then ``"random 0"``, ...).
        logprob: ``[condition, continuation]`` mean log-probability per continuation token; conditions in
            the order of ``conditions`` (``"none"`` first).
        correct: ``[condition, problem]`` 1.0 where the generated ``\\boxed{}`` answer is right.
        answers: condition name -> extracted answers (None where there was no ``\\boxed{}``).
        method: ``"zero"`` or ``"mean"``.
        target_name: the name of the tested head set.
    """

    head_sets: dict[str, list[Head]]
    logprob: Float[Tensor, "condition continuation"]
    correct: Float[Tensor, "condition problem"]
    answers: dict[str, list] = field(default_factory=dict)
    method: str = "zero"
    target_name: str = "receiver heads"

    @property
    def conditions(self) -> list[str]:
        return [BASELINE] + list(self.head_sets)

    @property
    def random_names(self) -> list[str]:
        return [name for name in self.head_sets if name != self.target_name]

    def _values(self, metric: str) -> Tensor:
        if metric not in ("logprob", "accuracy"):
            raise AnchorlensError(f"unknown metric {metric!r}; choose 'logprob' or 'accuracy'")
        values = self.logprob if metric == "logprob" else self.correct
        if values.shape[1] == 0:
            raise AnchorlensError(
                f"this experiment measured no {metric}: pass "
                + ("continuations=" if metric == "logprob" else "problems=")
                + " to head_ablation_experiment"
            )
        return values.double()

    def deltas(self, metric: str = "logprob") -> dict[str, float]:
        """Condition name -> mean change of ``metric`` from the unablated model (negative: it hurt)."""
        values = self._values(metric)
        change = (values - values[0]).mean(1)
        return {name: float(change[i]) for i, name in enumerate(self.conditions)}

    def comparison(self, metric: str = "logprob", level: float = LEVEL) -> dict:
        """The target set against the random sets.

        Returns the target's mean change with a bootstrap interval over items, the random sets' mean
        change with a bootstrap interval over sets, their ``level`` percentile range, and the empirical
        p-value ``(1 + #random sets at least as harmful) / (1 + #random sets)``.
        """
        values = self._values(metric).numpy()
        deltas = self.deltas(metric)
        target_row = self.conditions.index(self.target_name)
        target_delta = deltas[self.target_name]
        random = np.array([deltas[name] for name in self.random_names])
        tail = (1 - level) / 2 * 100
        return {
            "metric": metric,
            "target": self.target_name,
            "target_delta": target_delta,
            "target_ci": mean_interval(values[target_row] - values[0], level=level),
            "random_mean_delta": float(random.mean()) if len(random) else float("nan"),
            "random_mean_ci": mean_interval(random, level=level) if len(random) else (float("nan"),) * 2,
            "random_range": (float(np.percentile(random, tail)), float(np.percentile(random, 100 - tail)))
            if len(random)
            else (float("nan"),) * 2,
            "p_value": float((1 + np.sum(random <= target_delta)) / (1 + len(random))),
        }

    def to_dataframe(self):
        """One row per condition: heads, mean log-prob and accuracy, their change from no ablation, with
        95% bootstrap intervals over items."""
        import pandas as pd

        rows = []
        for i, name in enumerate(self.conditions):
            row = {"condition": name, "n_heads": len(self.head_sets.get(name, [])), "heads": self.head_sets.get(name, [])}
            for metric, values in (("logprob", self.logprob), ("accuracy", self.correct)):
                if values.shape[1] == 0:
                    continue
                v = values.double().numpy()
                row[metric] = float(v[i].mean())
                row[f"delta_{metric}"] = float((v[i] - v[0]).mean())
                row[f"delta_{metric}_ci_low"], row[f"delta_{metric}_ci_high"] = mean_interval(v[i] - v[0])
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, metric: str = "logprob"):
        """Histogram of the random sets' effect with the target set marked (see ``plot_ablation``)."""
        from anchorlens.receivers.plots import plot_ablation

        return plot_ablation(self, metric)


def _continuation_tokens(model, item) -> tuple[Tensor, int]:
    """Token ids ``[1, n]`` and the position where the continuation starts, from a Trace or a pair."""
    if hasattr(item, "prompt_token_end"):
        tokens, start = item.tokens(model.cfg.device), item.prompt_token_end
    elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        prompt, continuation = item
        prompt_ids = encode_text(model, prompt)
        continuation_ids = model.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        tokens = torch.tensor([prompt_ids + continuation_ids], device=model.cfg.device)
        start = len(prompt_ids)
    else:
        raise AnchorlensError(
            f"a continuation is a Trace or a (prompt, continuation) pair of strings, got {type(item).__name__}"
        )
    if start < 1 or start >= tokens.shape[1]:
        raise AnchorlensError(
            "a reference continuation needs a non-empty prompt (at least a BOS token) and a non-empty continuation"
        )
    return tokens, start


@torch.inference_mode()
def continuation_logprob(model, tokens: Tensor, start: int) -> float:
    """Mean log-probability of ``tokens[0, start:]`` given everything before, under ``model`` as it is now
    (inside ``ablate_heads``: with those heads ablated).

    >>> continuation_logprob(model, trace.tokens(), trace.prompt_token_end)   # doctest: +SKIP
    -1.49
    """
    logits = model(tokens)
    logprobs = torch.log_softmax(logits[0, start - 1 : -1].double(), dim=-1)
    return float(logprobs.gather(-1, tokens[0, start:, None]).mean())


def _problem(item) -> tuple[str, str]:
    if isinstance(item, dict) and "problem" in item and ("answer" in item or "gt_answer" in item):
        return item["problem"], str(item.get("answer", item.get("gt_answer")))
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return str(item[0]), str(item[1])
    raise AnchorlensError(
        "a problem is a (problem, answer) pair or a dict with 'problem' and 'answer' keys; "
        f"got {type(item).__name__}"
    )


def _solve(model, problem: str, max_new_tokens: int) -> str | None:
    """Greedy generation on the reference prompt; the ``\\boxed{}`` answer or None."""
    from anchorlens.generation import problem_prompt

    input_ids = torch.tensor([encode_text(model, problem_prompt(model, problem))], device=model.cfg.device)
    output = greedy_generate(model, input_ids, max_new_tokens)
    return extract_boxed(model.tokenizer.decode(output[0], skip_special_tokens=True))


@torch.inference_mode()
def head_ablation_experiment(
    model,
    heads: Iterable[Sequence[int]],
    continuations: Sequence = (),
    problems: Sequence = (),
    n_random: int = 20,
    method: str = "zero",
    means: Tensor | None = None,
    exclude_layers: Iterable[int] = (0,),
    max_new_tokens: int = 512,
    seed: int = 0,
    target_name: str = "receiver heads",
    progress: bool = True,
    attention: str = "auto",
) -> HeadAblationResult:
    """Ablate ``heads`` and ``n_random`` random head sets of the same size; measure what each costs.

    Args:
        model: a TransformerBridge.
        heads: the heads to test, e.g. ``receiver_heads(model, traces)``.
        continuations: reference texts to score: ``Trace`` objects (their chain of thought given their
            prompt) or ``(prompt, continuation)`` string pairs.
        problems: ``(problem, answer)`` pairs or dicts with ``problem`` and ``answer``, solved by greedy
            generation (``max_new_tokens``) with the heads ablated.
        n_random: how many random head sets (drawn outside ``heads`` and ``exclude_layers``).
        method, means: as in ``ablate_heads``.
        attention: ``"auto"`` (fused SDPA attention where supported: the ablation edits ``hook_z``, which
            fires either way), ``"sdpa"`` or ``"eager"``.

    >>> result = head_ablation_experiment(model, heads, continuations=traces, n_random=20)  # doctest: +SKIP
    >>> result.comparison("logprob")["p_value"], result.plot()                           # doctest: +SKIP
    """
    target = check_heads(heads, model.cfg.n_layers, model.cfg.n_heads)
    if not target:
        raise HeadSelectionError("no heads to ablate: pass (layer, head) pairs")
    if not continuations and not problems:
        raise AnchorlensError("nothing to measure: pass continuations= (reference texts), problems=, or both")
    if target_name == BASELINE or target_name.startswith("random "):
        raise AnchorlensError(f"target_name {target_name!r} is reserved; choose another name")
    randoms = random_head_sets(
        model.cfg.n_layers, model.cfg.n_heads, len(target), n_random, avoid=target, exclude_layers=exclude_layers, seed=seed
    )
    head_sets = {target_name: target, **{f"random {i}": s for i, s in enumerate(randoms)}}
    items = [_continuation_tokens(model, item) for item in continuations]
    tasks = [_problem(item) for item in problems]

    conditions = [(BASELINE, None)] + list(head_sets.items())
    logprob = torch.zeros(len(conditions), len(items), dtype=torch.float64)
    correct = torch.zeros(len(conditions), len(tasks), dtype=torch.float64)
    answers: dict[str, list] = {}
    bar = progress_bar(total=len(conditions) * (len(items) + len(tasks)), desc="head ablation", progress=progress)
    for row, (name, head_set) in enumerate(conditions):
        with ablate_heads(model, head_set or [], method=method, means=means), fused_attention(model, attention):
            for column, (tokens, start) in enumerate(items):
                logprob[row, column] = continuation_logprob(model, tokens, start)
                bar.update()
            answers[name] = []
            for column, (problem, answer) in enumerate(tasks):
                found = _solve(model, problem, max_new_tokens)
                answers[name].append(found)
                correct[row, column] = float(check_answer(found, answer))
                bar.update()
    bar.close()
    return HeadAblationResult(head_sets, logprob, correct, answers, method, target_name)
