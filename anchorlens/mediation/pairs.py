"""Tokenizing prompt pairs for a model, and filtering them: equal lengths, one-token answers, answered right.

Prompts are tokenized as everywhere in anchorlens (``model.to_tokens``, BOS included). An answer is written
as it follows its prompt (``" 7"``); where the tokenizer splits that into a separate space and the rest
(SmolLM2 writes ``" 7"`` as ``" "``, ``"7"``), ``fit_answer`` moves the space into the prompt, so the answer
is the one token the model must produce next.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from anchorlens.mediation.errors import MediationInputError, MultiTokenAnswerError, UnequalLengthError
from anchorlens.mediation.prompts import PromptPair
from anchorlens.progress import progress_bar


def _encode(model, text: str) -> list[int]:
    return model.tokenizer.encode(text, add_special_tokens=False)


def single_token(model, answer: str) -> int:
    """The token id of ``answer``; ``MultiTokenAnswerError`` (with the pieces) if it is not one token."""
    ids = _encode(model, answer)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise MultiTokenAnswerError(
            f"answer {answer!r} is {len(ids)} tokens {pieces} under this model's tokenizer: give answers of one "
            "token (for a split leading space, end the prompt with the space and drop it from the answer; "
            "anchorlens.mediation.filter_pairs does this, and drops what cannot be fixed)"
        )
    return ids[0]


def fit_answer(model, prompt: str, answer: str) -> tuple[str, str] | None:
    """``(prompt, answer)`` with ``answer`` one token that continues ``prompt`` as the tokenizer reads
    ``prompt + answer``; None if no such split exists."""
    ids = _encode(model, answer)
    if len(ids) == 1:
        return prompt, answer
    if answer.startswith(" ") and len(ids) == 2 and len(_encode(model, answer[1:])) == 1:
        spaced = prompt + " "
        if _encode(model, spaced + answer[1:]) == _encode(model, spaced) + _encode(model, answer[1:]):
            return spaced, answer[1:]
    return None


@dataclass
class EncodedPairs:
    """Token ids of equal-length base and counterfactual prompts and of their one-token answers.

    ``indices``: where these pairs sit in the caller's lists (a sweep encodes one group per token length).
    """

    base_tokens: Int[Tensor, "pair pos"]
    counterfactual_tokens: Int[Tensor, "pair pos"]
    base_answer: Int[Tensor, " pair"]
    counterfactual_answer: Int[Tensor, " pair"]
    indices: list[int]

    @property
    def n_pairs(self) -> int:
        return self.base_tokens.shape[0]

    @property
    def n_positions(self) -> int:
        return self.base_tokens.shape[1]


def encode_pairs(
    model, base: Sequence[str], counterfactual: Sequence[str], base_answer: Sequence[str],
    counterfactual_answer: Sequence[str],
) -> list[EncodedPairs]:
    """Tokenize pairs strictly, one group per token length: each counterfactual as long as its base prompt,
    every answer one token, or an error that says which pair and why."""
    for name, value in (("base", base), ("counterfactual", counterfactual), ("base_answer", base_answer),
                        ("counterfactual_answer", counterfactual_answer)):
        if isinstance(value, str):
            raise MediationInputError(f"{name} must be a list of strings (one per pair), not one string")
    base, counterfactual = list(base), list(counterfactual)
    base_answer, counterfactual_answer = list(base_answer), list(counterfactual_answer)
    lengths = {len(base), len(counterfactual), len(base_answer), len(counterfactual_answer)}
    if len(lengths) != 1 or not base:
        raise MediationInputError(
            f"base, counterfactual and the two answer lists must be non-empty and equally long (got {len(base)}, "
            f"{len(counterfactual)}, {len(base_answer)}, {len(counterfactual_answer)})"
        )
    base_ids = [single_token(model, a) for a in base_answer]
    cf_ids = [single_token(model, a) for a in counterfactual_answer]
    groups: dict[int, list[int]] = {}
    rows, cf_rows = [], []
    for i, (b_text, c_text) in enumerate(zip(base, counterfactual)):
        b, c = model.to_tokens(b_text)[0], model.to_tokens(c_text)[0]
        if len(b) != len(c):
            raise UnequalLengthError(
                f"pair {i}: base {b_text!r} has {len(b)} tokens, counterfactual {c_text!r} has {len(c)}: patched "
                "cells must line up, so each counterfactual needs its base prompt's token length "
                "(anchorlens.mediation.filter_pairs drops the others)"
            )
        rows.append(b)
        cf_rows.append(c)
        groups.setdefault(len(b), []).append(i)
    device = rows[0].device
    return [
        EncodedPairs(
            base_tokens=torch.stack([rows[i] for i in idx]),
            counterfactual_tokens=torch.stack([cf_rows[i] for i in idx]),
            base_answer=torch.tensor([base_ids[i] for i in idx], device=device),
            counterfactual_answer=torch.tensor([cf_ids[i] for i in idx], device=device),
            indices=idx,
        )
        for _, idx in sorted(groups.items())
    ]


@dataclass
class FilterReport:
    """What ``filter_pairs`` kept: ``kept`` pairs (prompts adjusted so that answers are one token) and, per
    template, how many were generated, kept, and dropped for each reason."""

    kept: list[PromptPair]
    counts: dict[str, Counter]

    @property
    def n_generated(self) -> int:
        return sum(c["generated"] for c in self.counts.values())

    @property
    def n_kept(self) -> int:
        return len(self.kept)

    @property
    def yield_fraction(self) -> float:
        return self.n_kept / max(self.n_generated, 1)

    def to_dataframe(self):
        """One row per template: generated, kept, yield, and a column per drop reason."""
        import pandas as pd

        reasons = ["multi_token_answer", "unequal_length", "base_wrong", "counterfactual_wrong"]
        rows = [{"template": t, "generated": c["generated"], "kept": c["kept"],
                 "yield": c["kept"] / max(c["generated"], 1), **{r: c[r] for r in reasons}}
                for t, c in sorted(self.counts.items())]
        return pd.DataFrame(rows, columns=["template", "generated", "kept", "yield", *reasons])

    def __repr__(self) -> str:
        return f"FilterReport(kept {self.n_kept} of {self.n_generated} pairs, {self.yield_fraction:.0%})"


@torch.no_grad()
def predictions(model, prompts: Sequence[str], batch_size: int = 32) -> list[int]:
    """The model's greedy next token after each prompt (prompts grouped by token length, no padding)."""
    encoded = [model.to_tokens(p)[0] for p in prompts]
    out = [0] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for i, tokens in enumerate(encoded):
        by_length.setdefault(len(tokens), []).append(i)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            logits = model(torch.stack([encoded[i] for i in chunk]))[:, -1]
            for i, token in zip(chunk, logits.argmax(-1).tolist()):
                out[i] = token
    return out


def filter_pairs(model, pairs: Sequence[PromptPair], require_correct: bool = True, batch_size: int = 32,
                 progress: bool = True) -> FilterReport:
    """Keep the pairs a sweep can use: one-token answers (fixing a split leading space), equal token lengths
    of base and counterfactual, and (``require_correct``) the model's greedy answer right on both prompts.

    Pairs of different lengths may be kept together; ``group_by_length`` splits them for sweeps.
    """
    counts: dict[str, Counter] = {}
    candidates: list[PromptPair] = []
    for pair in progress_bar(pairs, desc="filter pairs", progress=progress, leave=False):
        count = counts.setdefault(pair.template, Counter())
        count["generated"] += 1
        base = fit_answer(model, pair.base, pair.base_answer)
        cf = fit_answer(model, pair.counterfactual, pair.counterfactual_answer)
        if base is None or cf is None:
            count["multi_token_answer"] += 1
            continue
        fitted = replace(pair, base=base[0], base_answer=base[1], counterfactual=cf[0], counterfactual_answer=cf[1])
        if model.to_tokens(fitted.base).shape[1] != model.to_tokens(fitted.counterfactual).shape[1]:
            count["unequal_length"] += 1
            continue
        candidates.append(fitted)
    if require_correct and candidates:
        guesses = predictions(model, [p.base for p in candidates] + [p.counterfactual for p in candidates], batch_size)
        n = len(candidates)
        right = []
        for i, pair in enumerate(candidates):
            if guesses[i] != single_token(model, pair.base_answer):
                counts[pair.template]["base_wrong"] += 1
            elif guesses[n + i] != single_token(model, pair.counterfactual_answer):
                counts[pair.template]["counterfactual_wrong"] += 1
            else:
                right.append(pair)
        candidates = right
    for pair in candidates:
        counts[pair.template]["kept"] += 1
    return FilterReport(kept=candidates, counts=counts)


def group_by_length(model, pairs: Sequence[PromptPair]) -> dict[int, list[PromptPair]]:
    """Pairs grouped by token length (a sweep needs one length; positions differ between lengths)."""
    groups: dict[int, list[PromptPair]] = {}
    for pair in pairs:
        groups.setdefault(model.to_tokens(pair.base).shape[1], []).append(pair)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))
