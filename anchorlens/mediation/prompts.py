"""Prompt pairs for causal mediation analysis (Stolfo, Belinkov, Sachan 2023; docs/methods.md section 2).

Three tasks, each a list of ``PromptPair`` (a base prompt, a counterfactual prompt and their one-token
answers), seeded:

- ``arithmetic_pairs``: 4 operators x 6 templates, operands as digits or as words, the paper's three
  counterfactual pair types (``"operands"``: new operands, different result; ``"same_result"``: new operands,
  same result; ``"operator"``: same operands, other operator).
- ``retrieval_pairs``: the number-retrieval control ``I have {x} {entity1} and {y} {entity2}. How many
  {entity} do I have?``.
- ``factual_pairs``: the factual-knowledge control, from the single-token facts shipped in
  ``anchorlens/data/mediation/factual_facts.json`` (written for anchorlens from common knowledge, CC0).

Answers are written as they follow the prompt (``" 7"``, with its leading space); ``filter_pairs`` turns
them into one token for a model's tokenizer (or drops the pair with a reason).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from anchorlens import settings
from anchorlens.errors import AnchorlensError

OPERATORS = ("addition", "subtraction", "multiplication", "division")
PAIR_TYPES = ("operands", "same_result", "operator")

# Templates aligned by index across operators, so that an "operator" pair keeps the template's wording.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "addition": (
        "Q: How much is {x} plus {y}? A:",
        "Q: What is {x} plus {y}? A:",
        "Q: What is the result of {x} plus {y}? A:",
        "Q: What is the sum of {x} and {y}? A:",
        "The sum of {x} and {y} is",
        "{x} + {y} =",
    ),
    "subtraction": (
        "Q: How much is {x} minus {y}? A:",
        "Q: What is {x} minus {y}? A:",
        "Q: What is the result of {x} minus {y}? A:",
        "Q: What is the difference of {x} and {y}? A:",
        "The difference of {x} and {y} is",
        "{x} - {y} =",
    ),
    "multiplication": (
        "Q: How much is {x} times {y}? A:",
        "Q: What is {x} times {y}? A:",
        "Q: What is the result of {x} times {y}? A:",
        "Q: What is the product of {x} and {y}? A:",
        "The product of {x} and {y} is",
        "{x} * {y} =",
    ),
    "division": (
        "Q: How much is {x} over {y}? A:",
        "Q: What is {x} over {y}? A:",
        "Q: What is the result of {x} over {y}? A:",
        "Q: What is the ratio of {x} and {y}? A:",
        "The ratio of {x} and {y} is",
        "{x} / {y} =",
    ),
}

FACTS_FILE = Path(__file__).resolve().parents[1] / "data" / "mediation" / "factual_facts.json"
RETRIEVAL_TEMPLATE = "I have {x} {entity1} and {y} {entity2}. How many {entity} do I have?"
RETRIEVAL_ENTITIES = ("apples", "books", "cats", "dogs", "pens", "cups", "cars", "coins", "eggs", "hats", "keys",
                      "shoes")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_word(n: int) -> str:
    """English words for ``0 <= n < 100``: ``number_word(42) == "forty-two"``."""
    if not 0 <= n < 100:
        raise AnchorlensError(f"number_word covers 0..99, not {n}: use digits for larger operands")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else "-" + _ONES[ones])


@dataclass(frozen=True)
class PromptPair:
    """A base prompt and its counterfactual, with the answer each should produce (``" 7"``: as it follows).

    ``template`` names where the base prompt came from (e.g. ``"addition/0"``), ``pair_type`` how the
    counterfactual differs (``"operands"``, ``"same_result"``, ``"operator"``, ``"retrieval"``, ``"factual"``).
    """

    base: str
    counterfactual: str
    base_answer: str
    counterfactual_answer: str
    task: str
    template: str
    pair_type: str

    def to_dict(self) -> dict:
        return asdict(self)


def apply(operator: str, x: int, y: int) -> int | None:
    """The integer result of ``x (op) y``, or None where it is not a non-negative integer."""
    if operator == "addition":
        return x + y
    if operator == "subtraction":
        return x - y if x >= y else None
    if operator == "multiplication":
        return x * y
    if operator == "division":
        return x // y if y != 0 and x % y == 0 else None
    raise AnchorlensError(f"unknown operator {operator!r}; choose one of {OPERATORS}")


def _render(n: int, words: bool) -> str:
    return number_word(n) if words else str(n)


def _check_choice(name: str, values, allowed) -> list[str]:
    values = list(allowed) if values is None else [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise AnchorlensError(f"unknown {name} {unknown}; choose from {list(allowed)}")
    return values


def arithmetic_pairs(
    n_per_template: int = settings.MEDIATION_PER_TEMPLATE,
    operators=None,
    pair_types=None,
    operand_range: tuple[int, int] = (1, 9),
    result_range: tuple[int, int] | None = (0, 9),
    words: bool = False,
    seed: int = settings.MEDIATION_SEED,
) -> list[PromptPair]:
    """Base/counterfactual arithmetic prompts: ``n_per_template`` pairs per (operator, template, pair type).

    Operands are drawn from ``operand_range`` (inclusive); results must be non-negative integers inside
    ``result_range`` (inclusive; None: any), so that they can be one token (SmolLM2 splits numbers into
    digits: results 0..9 in digits, 0..19 or tens in words). ``words=True`` writes operands and results in
    words. Pairs with no valid counterfactual are skipped.
    """
    operators = _check_choice("operators", operators, OPERATORS)
    pair_types = _check_choice("pair types", pair_types, PAIR_TYPES)
    lo, hi = operand_range
    if lo > hi:
        raise AnchorlensError(f"operand_range {operand_range} is empty: give (low, high) with low <= high")
    rng = random.Random(seed)
    ok = lambda r: r is not None and (result_range is None or result_range[0] <= r <= result_range[1])  # noqa: E731
    operands = [(x, y) for x in range(lo, hi + 1) for y in range(lo, hi + 1)]
    valid = {op: [(x, y, apply(op, x, y)) for x, y in operands if ok(apply(op, x, y))] for op in OPERATORS}
    pairs: list[PromptPair] = []
    for op in operators:
        if not valid[op]:
            continue
        for t, template in enumerate(TEMPLATES[op]):
            for pair_type in pair_types:
                for _ in range(n_per_template):
                    pair = _one_arithmetic_pair(rng, op, t, pair_type, valid, ok, words)
                    if pair is not None:
                        pairs.append(pair)
    return pairs


def _one_arithmetic_pair(rng, op, t, pair_type, valid, ok, words, tries: int = 50) -> PromptPair | None:
    fmt = lambda tpl, x, y: tpl.format(x=_render(x, words), y=_render(y, words))  # noqa: E731
    for _ in range(tries):
        x, y, r = rng.choice(valid[op])
        if pair_type == "operator":
            others = [o for o in OPERATORS if o != op and ok(apply(o, x, y)) and apply(o, x, y) != r]
            if not others:
                continue
            other = rng.choice(others)
            cf, r2 = fmt(TEMPLATES[other][t], x, y), apply(other, x, y)
        else:
            same = pair_type == "same_result"
            choices = [(a, b, s) for a, b, s in valid[op] if (a, b) != (x, y) and (s == r) == same]
            if not choices:
                continue
            a, b, r2 = rng.choice(choices)
            cf = fmt(TEMPLATES[op][t], a, b)
        return PromptPair(
            base=fmt(TEMPLATES[op][t], x, y),
            counterfactual=cf,
            base_answer=" " + _render(r, words),
            counterfactual_answer=" " + _render(r2, words),
            task="arithmetic_words" if words else "arithmetic",
            template=f"{op}/{t}",
            pair_type=pair_type,
        )
    return None


def retrieval_pairs(n: int = 50, operand_range: tuple[int, int] = (1, 9), words: bool = False,
                    seed: int = settings.MEDIATION_SEED) -> list[PromptPair]:
    """Number-retrieval control pairs: the counterfactual has new numbers, so the asked-for count differs."""
    rng = random.Random(seed)
    lo, hi = operand_range
    if hi - lo < 1:
        raise AnchorlensError(f"operand_range {operand_range} needs at least two values for a counterfactual")
    pairs = []
    for _ in range(n):
        e1, e2 = rng.sample(RETRIEVAL_ENTITIES, 2)
        ask_first = rng.random() < 0.5
        x, y = rng.randint(lo, hi), rng.randint(lo, hi)
        answer = x if ask_first else y
        while True:
            x2, y2 = rng.randint(lo, hi), rng.randint(lo, hi)
            if (x2 if ask_first else y2) != answer:
                break
        text = lambda a, b: RETRIEVAL_TEMPLATE.format(  # noqa: E731
            x=_render(a, words), y=_render(b, words), entity1=e1, entity2=e2, entity=e1 if ask_first else e2)
        pairs.append(PromptPair(
            base=text(x, y), counterfactual=text(x2, y2),
            base_answer=" " + _render(answer, words),
            counterfactual_answer=" " + _render(x2 if ask_first else y2, words),
            task="retrieval", template="retrieval/" + ("first" if ask_first else "second"), pair_type="retrieval",
        ))
    return pairs


@lru_cache(maxsize=1)
def factual_facts() -> dict:
    """The shipped facts: ``{"source", "licence", "relations": {name: {"template", "facts": [[subject, answer]]}}}``."""
    return json.loads(FACTS_FILE.read_text())


def factual_pairs(n: int | None = None, seed: int = settings.MEDIATION_SEED) -> list[PromptPair]:
    """Factual-knowledge control pairs: two facts of the same relation with different answers.

    Every fact is a base once, paired with a random other fact of its relation (``n``: keep that many,
    sampled; None: all).
    """
    rng = random.Random(seed)
    pairs = []
    for name, relation in factual_facts()["relations"].items():
        facts = relation["facts"]
        for subject, answer in facts:
            others = [(s, a) for s, a in facts if a != answer]
            s2, a2 = rng.choice(others)
            pairs.append(PromptPair(
                base=relation["template"].format(subject=subject),
                counterfactual=relation["template"].format(subject=s2),
                base_answer=answer, counterfactual_answer=a2,
                task="factual", template=f"factual/{name}", pair_type="factual",
            ))
    if n is not None and n < len(pairs):
        pairs = rng.sample(pairs, n)
    return pairs


def task_pairs(task: str, seed: int = settings.MEDIATION_SEED, **kwargs) -> list[PromptPair]:
    """Pairs for a task by name: ``"arithmetic"``, ``"arithmetic_words"``, ``"retrieval"`` or ``"factual"``."""
    if task == "arithmetic":
        return arithmetic_pairs(seed=seed, **kwargs)
    if task == "arithmetic_words":
        kwargs.setdefault("result_range", (0, 20))
        return arithmetic_pairs(seed=seed, words=True, **kwargs)
    if task == "retrieval":
        return retrieval_pairs(seed=seed, **kwargs)
    if task == "factual":
        return factual_pairs(seed=seed, **kwargs)
    raise AnchorlensError(f"unknown task {task!r}; choose one of {', '.join(settings.MEDIATION_TASKS)}")
