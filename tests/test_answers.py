"""Answers: \\boxed{} extraction, normalisation, equivalence, pluggable extractors (docs/methods.md 1.2)."""

from __future__ import annotations

import pytest

from anchorlens.answers import (
    AnswerExtractorError,
    check_answer,
    extract_boxed,
    extract_forced,
    extractor_name,
    get_extractor,
    last_number,
    normalize_answer,
    regex_extractor,
)
from anchorlens.errors import AnchorlensError


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the answer is \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}} and later \boxed{3}", r"\frac{1}{2}"),  # the first one, braces balanced
        (r"\boxed {x^{2}+1}", "x^{2}+1"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\frac{1}{2}", None),  # cut off: unbalanced
        ("no box here", None),
        (r"\boxed", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_forced_reads_up_to_the_closing_brace():
    assert extract_forced(r"\frac{3}{4}} so that is it") == r"\frac{3}{4}"
    assert extract_forced("12") is None  # never closed: the budget ran out
    assert extract_forced("} nothing") is None


@pytest.mark.parametrize(
    "answer, reference",
    [
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\frac{1}{2}", "0.5"),
        ("1,000", "1000"),
        (r"50\%", "50"),
        (r"\text{(B)}", "(B)"),
        (r"2 \times 3", r"2\cdot3"),
        ("x = 5", "5"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),  # sympy
        (r"2\pi", r"\pi \cdot 2"),  # sympy, pi kept a constant
        ("3.0000001", "3"),
    ],
)
def test_equivalent_answers(answer, reference):
    assert check_answer(answer, reference)


@pytest.mark.parametrize(
    "answer, reference",
    [
        ("abc", "cab"),  # words are not products of symbols
        ("yes", "no"),
        ("3.01", "3"),
        (None, "3"),
        ("", "3"),
        (r"\frac{1}{3}", "0.33"),
        ("x = 5", "y = 5"),
    ],
)
def test_different_answers(answer, reference):
    assert not check_answer(answer, reference)


def test_numeric_tolerance_is_a_parameter():
    assert not check_answer("3.01", "3")
    assert check_answer("3.01", "3", rel_tol=0.01)


def test_sympy_backend_is_installed():
    # Without antlr4 sympy's LaTeX parser fails and check_answer silently loses its last resort.
    from sympy.parsing.latex import parse_latex

    assert str(parse_latex(r"\frac{1}{2}")) == "1/2"


def test_normalize_answer_follows_the_reference():
    assert normalize_answer(r" \text{ 5 } ") == "5"
    assert normalize_answer(r"\left( 1, 2 \right)") == "(1,2)"
    assert normalize_answer(None) is None


def test_pluggable_extractors():
    assert last_number("3 apples and 1,250 pears, so 1,253.") == "1253"
    assert last_number("no digits") is None
    assert last_number("a ratio of 3/4") == "3/4"
    choice = regex_extractor(r"Answer: \(?([A-E])\)?")
    assert choice("I think... Answer: (C)") == "C"
    assert choice("no answer") is None
    assert regex_extractor(r"(\d+)", last=True)("1 then 2 then 3") == "3"
    assert get_extractor() is extract_boxed
    assert get_extractor("last_number") is last_number
    assert get_extractor(choice) is choice
    assert extractor_name(extract_boxed) == "boxed"
    assert "regex_extractor" in extractor_name(choice)


def test_unknown_extractor_is_a_clear_error():
    with pytest.raises(AnswerExtractorError, match="last_number") as info:
        get_extractor("gsm8k")
    assert isinstance(info.value, AnchorlensError)
