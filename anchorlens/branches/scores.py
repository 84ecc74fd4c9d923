"""The resilience scores of one chain of rollouts, from its per-iteration matches (pure; docs/branches.md).

A *chain* is what one rollout of the resilience loop did: at each iteration the target sentence was removed and
the model continued; the iteration *matched* when content equivalent to the original sentence came back (a
sentence of the continuation with cosine >= the threshold to the original sentence). The loop stops at the
first iteration without a match (the content was *abandoned*) or after ``max_iterations`` iterations.

- resilience score of a chain: the number of iterations that matched;
- persisted: the last iteration matched, so the loop ran into the cap with the content still there;
- abandoned: not persisted (the chain ended on an iteration without a match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ChainScore:
    iterations: int  # iterations run
    score: int  # iterations in which the content came back
    persisted: bool
    abandoned: bool


def chain_score(matches: Sequence[bool], max_iterations: int) -> ChainScore:
    """Score one chain from its iterations' match flags (every flag but the last is True by construction).

    >>> chain_score([True, True, False], 20)
    ChainScore(iterations=3, score=2, persisted=False, abandoned=True)
    >>> chain_score([True, True], 2)
    ChainScore(iterations=2, score=2, persisted=True, abandoned=False)
    """
    matches = [bool(m) for m in matches]
    if not matches:
        raise ValueError("a chain has at least one iteration")
    if len(matches) > max_iterations or not all(matches[:-1]) or (matches[-1] and len(matches) < max_iterations):
        raise ValueError(f"not a chain of the resilience loop (cap {max_iterations}): {matches}")
    persisted = matches[-1]
    return ChainScore(len(matches), sum(matches), persisted, not persisted)
