"""Final answers: ``\\boxed{}`` extraction, LaTeX normalisation, and equivalence checking (docs/methods.md 1.2).

``check_answer`` first compares normalised strings, then numbers (with a tolerance), then asks sympy
whether the two expressions are equal. Other tasks plug in their own extractor: any callable
``text -> str | None``.
"""

from __future__ import annotations

import re
from typing import Callable

from anchorlens.errors import InputError

AnswerExtractor = Callable[[str], "str | None"]


AnswerExtractorError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def extract_boxed(text: str) -> str | None:
    """The content of the first ``\\boxed{...}`` in ``text``, braces balanced; None if there is none.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} is it")
    '\\\\frac{1}{2}'
    """
    start = text.find("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
                j += 1
            return None  # unbalanced: the answer was cut off
        start = text.find("\\boxed", i)
    return None


def extract_forced(text: str) -> str | None:
    """The answer after a forced ``\\boxed{`` prefix: everything up to the brace that closes it."""
    depth = 1
    for j, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[:j].strip() or None
    return None


def _unwrap(command: str, text: str) -> str:
    """``\\text{abc}`` -> ``abc`` (balanced braces, repeatedly)."""
    key = "\\" + command + "{"
    while key in text:
        i = text.index(key)
        depth, j = 0, i + len(key) - 1
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        text = text[:i] + text[i + len(key) : j] + text[j + 1 :]
    return text


def normalize_answer(answer: str | None) -> str | None:
    """The reference's string normalisation: lowercase, no spaces, ``\\dfrac``->``\\frac``, ...

    >>> normalize_answer(r"\\dfrac{1}{2}\\%")
    '\\\\frac{1}{2}'
    """
    if answer is None:
        return None
    text = answer.strip()
    for command in ("text", "mathrm", "textbf", "mbox"):
        text = _unwrap(command, text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("\\%", "").replace("%", "").replace("{,}", "")
    text = text.replace("\\times", "*").replace("\\cdot", "*").replace("\\pi", "pi")
    text = text.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    text = text.replace("$", "")
    text = re.sub(r"\s+", "", text).lower()
    text = text.rstrip(".")
    return text


def _to_number(text: str) -> float | None:
    text = text.replace(",", "")
    frac = re.fullmatch(r"-?\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", text)
    try:
        if frac:
            value = float(frac.group(1)) / float(frac.group(2))
            return -value if text.startswith("-") else value
        return float(text)
    except (ValueError, ZeroDivisionError):
        return None


_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_WORD = re.compile(r"[a-zA-Z]{2,}")


def _sympy_ready(text: str) -> str | None:
    """A normalised answer turned back into LaTeX sympy can parse, or None when it is not math.

    ``normalize_answer`` writes ``\\pi`` as ``pi``; sympy would read that as p*i. Answers that still hold
    words once LaTeX commands are removed ("yes", "red") are not math: sympy would read "abc" and "cab"
    as the same product of symbols.
    """
    text = re.sub(r"(?<![a-zA-Z\\])pi(?![a-zA-Z])", r"\\pi", text)
    if len(text) > 200 or _WORD.search(_LATEX_COMMAND.sub("", text)):
        return None
    return text


def _sympy_equal(a: str, b: str) -> bool:
    """Whether sympy finds ``a - b`` simplifies to 0 (needs ``antlr4-python3-runtime==4.11``)."""
    a, b = _sympy_ready(a), _sympy_ready(b)
    if a is None or b is None:
        return False
    try:
        from sympy import simplify
        from sympy.parsing.latex import parse_latex
    except ImportError:
        return False
    try:
        return bool(simplify(parse_latex(a) - parse_latex(b)) == 0)
    except Exception:  # noqa: BLE001 - sympy raises many kinds of errors (and ImportError without antlr4)
        return False


_ASSIGNMENT = re.compile(r"^[a-z](?:_\{?\w+\}?)?=(?P<value>[^=]+)$")


def _drop_assignment(a: str, b: str) -> tuple[str, str]:
    """``x=5`` against ``5``: compare the values (only when exactly one side is an assignment)."""
    ma, mb = _ASSIGNMENT.match(a), _ASSIGNMENT.match(b)
    if ma and "=" not in b:
        return ma.group("value"), b
    if mb and "=" not in a:
        return a, mb.group("value")
    return a, b


def check_answer(answer: str | None, reference: str | None, rel_tol: float = 1e-6) -> bool:
    """Whether ``answer`` equals ``reference``: normalised strings, then numbers, then sympy.

    Numbers match within ``rel_tol`` (relative, absolute below 1). An assignment ``x = 5`` matches ``5``.
    Sympy compares what both strings parse to as LaTeX (``\\frac{\\sqrt{2}}{2}`` equals
    ``\\frac{1}{\\sqrt{2}}``); answers holding words are compared as strings only.

    >>> check_answer(r"\\dfrac{1}{2}", "0.5")
    True
    """
    a, b = normalize_answer(answer), normalize_answer(reference)
    if not a or not b:
        return False
    if a == b:
        return True
    a, b = _drop_assignment(a, b)
    if a == b:
        return True
    x, y = _to_number(a), _to_number(b)
    if x is not None and y is not None:
        return abs(x - y) <= rel_tol * max(1.0, abs(x), abs(y))
    return _sympy_equal(a, b)


# --------------------------------------------------------------------------- other tasks: pluggable extractors

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def last_number(text: str) -> str | None:
    """The last number in ``text`` (GSM8K-style tasks): integers, decimals, ``a/b``; commas dropped.

    >>> last_number("3 apples and 1,250 pears, so 1,253.")
    '1253'
    """
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    return found[-1].replace(",", "").rstrip(".")


def regex_extractor(pattern: str, group: int | str = 1, last: bool = False) -> AnswerExtractor:
    """An extractor returning ``group`` of the first (or ``last``) match of ``pattern``.

    >>> pick = regex_extractor(r"Answer: \\(?([A-E])\\)?")
    >>> pick("I think... Answer: (C)")
    'C'
    """
    compiled = re.compile(pattern)

    def extract(text: str) -> str | None:
        matches = list(compiled.finditer(text or ""))
        if not matches:
            return None
        value = (matches[-1] if last else matches[0]).group(group)
        return value.strip() if value is not None else None

    extract.__name__ = extract.__qualname__ = f"regex_extractor({pattern!r}, {group!r}, last={last})"
    return extract


def boxed_or_last_number(text: str) -> str | None:
    """The ``\\boxed{}`` answer if there is one, else the last number: for small models that seldom box.

    >>> boxed_or_last_number("3 * 4 = 12, minus 2 is 10 apples")
    '10'
    """
    boxed = extract_boxed(text)
    return boxed if boxed is not None else last_number(text)


EXTRACTORS: dict[str, AnswerExtractor] = {
    "boxed": extract_boxed,
    "forced": extract_forced,
    "last_number": last_number,
    "boxed_or_last_number": boxed_or_last_number,
}


def get_extractor(spec: str | AnswerExtractor | None = None) -> AnswerExtractor:
    """An extractor from a name (``"boxed"`` (default), ``"forced"``, ``"last_number"``) or a callable.

    >>> get_extractor("last_number")("x = 41 + 1 = 42")
    '42'
    """
    if spec is None:
        return extract_boxed
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in EXTRACTORS:
        return EXTRACTORS[spec]
    raise AnswerExtractorError(
        f"unknown answer extractor {spec!r}: pass one of {sorted(EXTRACTORS)}, "
        "regex_extractor(pattern), or any function text -> answer string or None"
    )


def extractor_name(extractor: AnswerExtractor) -> str:
    """A stable name for an extractor (recorded with each run so a resume cannot switch it silently)."""
    for name, known in EXTRACTORS.items():
        if extractor is known:
            return name
    module = getattr(extractor, "__module__", "") or ""
    return f"{module}.{getattr(extractor, '__qualname__', type(extractor).__name__)}".lstrip(".")


# --------------------------------------------------------------------------- cut-off rollouts


def read_answer(text: str, extractor: AnswerExtractor, finish_reason: str | None = "stop") -> str | None:
    """The answer of a generated text, given how its generation ended.

    A finished text (``finish_reason="stop"``) is read by ``extractor``. A text cut off at the token limit
    (``"length"``) has an answer only if it holds a complete ``\\boxed{...}``: a last-number or regex
    reader cannot tell a final answer from an intermediate result in a text that stopped mid-computation.
    The forced-answer reader is the exception: it needs the brace closing the forced ``\\boxed{``, so
    what it reads is complete by construction.

    >>> read_answer("3 * 4 = 12, then 12 -", last_number, "length") is None
    True
    >>> read_answer(r"so \\boxed{10}. Let me check: 3 * 4 = 12", boxed_or_last_number, "length")
    '10'
    """
    if finish_reason != "length" or extractor is extract_forced:
        return extractor(text)
    return extract_boxed(text)


# --------------------------------------------------------------------------- answers as equivalence classes

_VALUE_TOL = 1e-6


def _numeric_value(answer: str) -> complex | None:
    """A number for a normalised answer when one is cheap to get (plain numbers, fractions, or a constant
    LaTeX expression sympy evaluates); None otherwise. Only used to skip comparisons that must fail."""
    number = _to_number(answer)
    if number is not None:
        return complex(number)
    ready = _sympy_ready(answer)
    if ready is None:
        return None
    try:
        from sympy.parsing.latex import parse_latex

        expr = parse_latex(ready)
        if expr.free_symbols:
            return None
        return complex(expr.evalf())
    except Exception:  # noqa: BLE001 - not parseable or not a number: compare with check_answer
        return None


def answer_classes(answers, reference: str | None = None) -> dict[str, str]:
    """Group answers that ``check_answer`` deems equal: a map from each normalised answer to its class's
    representative (a normalised answer too).

    Answers are visited from most to least frequent (ties by string), after ``reference`` when given; each
    joins the class of the FIRST representative it equals, else founds a new class. Comparing with
    representatives only keeps the grouping well defined where ``check_answer`` is not transitive (a ~ b and
    b ~ c but not a ~ c): b joins a's class, and c joins it only if c ~ a itself. Missing and empty answers
    are left out. Pairs whose numeric values clearly differ are not sent to sympy (they cannot be equal).

    >>> answer_classes(["42", "6*7", r"\\frac{84}{2}", "42.0", "41"])
    {'41': '41', '42': '42', '42.0': '42', '6*7': '42', '\\\\frac{84}{2}': '42'}
    """
    from collections import Counter

    counts = Counter(key for key in (normalize_answer(a) for a in answers) if key and key != "none")
    order = sorted(counts, key=lambda a: (-counts[a], a))
    ref = normalize_answer(reference)
    if ref and ref != "none":
        order = [ref] + [a for a in order if a != ref]
    values: dict[str, complex | None] = {}
    representatives: list[str] = []
    classes: dict[str, str] = {}
    for answer in order:
        values[answer] = _numeric_value(answer)
        for rep in representatives:
            x, y = values[answer], values[rep]
            if x is not None and y is not None and abs(x - y) > _VALUE_TOL * max(1.0, abs(x), abs(y)):
                continue  # clearly different numbers: check_answer would say no
            if check_answer(answer, rep):
                classes[answer] = rep
                break
        else:
            representatives.append(answer)
            classes[answer] = answer
    return {a: classes[a] for a in order if a in counts}
