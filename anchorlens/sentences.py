"""Splitting a chain of thought into sentences ("chunks") with character offsets.

Two styles:

- ``"thought-anchors"`` reproduces the chunks published with Thought Anchors (docs/methods.md 1.1) exactly,
  including its naive handling of abbreviations and its merging of chunks under 10 characters.
- ``"default"`` is meant for people: it does not split inside decimals, enumerations ("1."),
  common abbreviations ("Dr.", "e.g.") or LaTeX math, and every sentence's text is exactly
  ``text[start:end]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from anchorlens.errors import EmptyTextError

STYLES = ("default", "thought-anchors")

# Thought Anchors constants (docs/methods.md 1.1).
_TA_SENTENCE_END = ".?!"
_TA_PARAGRAPH_END = ("\n\n", "\r\n\r\n")
_TA_MIN_CHARS = 10


@dataclass(frozen=True)
class Sentence:
    """One sentence: its text and the half-open character range ``[start, end)`` it covers.

    For the default style ``text == source[start:end]``. For the thought-anchors style a chunk made by
    merging short chunks is joined with single spaces (as published), while ``[start, end)`` still
    covers every character it came from.
    """

    text: str
    start: int
    end: int


def split_sentences(text: str, style: str = "default") -> list[Sentence]:
    """Split ``text`` into sentences with character offsets into ``text``.

    If the text holds ``<think>`` / ``</think>`` tags only the part between them is split (offsets still
    point into the full ``text``).

    >>> [s.text for s in split_sentences("We have x = 3.5 apples. Dr. Fu eats 1. Done!")]
    ['We have x = 3.5 apples.', 'Dr. Fu eats 1.', 'Done!']
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences expects a str, got {type(text).__name__}")
    if style not in STYLES:
        raise ValueError(f"unknown sentence style {style!r}; choose one of {STYLES}")
    if not text.strip():
        raise EmptyTextError("the text is empty: pass the chain of thought to split")
    lo, hi = _think_region(text)
    if style == "thought-anchors":
        sentences = _split_thought_anchors(text, lo, hi)
    else:
        sentences = _split_default(text, lo, hi)
    if not sentences:
        raise EmptyTextError(
            "the text holds no sentence (the part between <think> and </think> is empty); "
            "pass the chain of thought itself"
        )
    return sentences


def _think_region(text: str) -> tuple[int, int]:
    """The character range of the chain of thought: between ``<think>`` and ``</think>`` when present."""
    lo, hi = 0, len(text)
    if "<think>" in text:
        lo = text.index("<think>") + len("<think>")
    if "</think>" in text[lo:]:
        hi = text.index("</think>", lo)
    return lo, hi


# --------------------------------------------------------------------------- thought-anchors style


def _split_thought_anchors(text: str, lo: int, hi: int) -> list[Sentence]:
    """The published rules (docs/methods.md 1.1), with offsets kept."""
    chunks: list[tuple[int, int]] = []  # raw (start, end) before stripping
    start = lo
    for i in range(lo, hi):
        paragraph_end = any(text.startswith(p, i) and i + len(p) <= hi for p in _TA_PARAGRAPH_END)
        sentence_end = i < hi - 1 and text[i] in _TA_SENTENCE_END and text[i + 1] in " \n"
        if paragraph_end or sentence_end:
            chunks.append((start, i + 1))
            start = i + 1
    chunks.append((start, hi))  # the tail is kept, as in the published data

    pieces = [_strip_span(text, s, e) for s, e in chunks]
    merged = [Sentence(text[s:e], s, e) for s, e in pieces if e > s]

    # Chunks under 10 characters merge into the next one; the last merges into the previous one.
    i = 0
    while i < len(merged):
        if len(merged[i].text) >= _TA_MIN_CHARS or len(merged) == 1:
            i += 1
            continue
        short = merged.pop(i)
        if i < len(merged):
            nxt = merged[i]
            merged[i] = Sentence(short.text + " " + nxt.text, short.start, nxt.end)
        else:
            prev = merged[i - 1]
            merged[i - 1] = Sentence(prev.text + " " + short.text, prev.start, short.end)
    return merged


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --------------------------------------------------------------------------- default style

_ABBREVIATIONS = {
    "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie", "cf",
    "fig", "figs", "eq", "eqs", "no", "approx", "resp", "al", "ca", "vol", "pp", "sec", "ch", "def",
    "thm", "lem", "prop", "cor", "min", "max", "inc", "ltd", "co", "dept", "univ", "u.s",
}
_MATH_OPEN = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
_CLOSERS = "\"')]}\u201d\u2019*"
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_ENUMERATION = re.compile(r"(?:^|\n)[ \t]*(?:\d+|[A-Za-z]|[ivxIVX]+)$")


def _split_default(text: str, lo: int, hi: int) -> list[Sentence]:
    boundaries: list[int] = []  # a sentence ends just before each boundary
    i = lo
    math_close: str | None = None
    while i < hi:
        if math_close is not None:  # inside LaTeX math: only look for its end
            if text.startswith(math_close, i):
                i += len(math_close)
                math_close = None
            else:
                i += 1
            continue
        opener = next((o for o in _MATH_OPEN if text.startswith(o, i)), None)
        if opener is not None and not (opener == "$" and i > lo and text[i - 1] == "\\"):
            math_close = _MATH_OPEN[opener]
            i += len(opener)
            continue
        ch = text[i]
        if ch == "\n":
            boundaries.append(i)
        elif ch in ".?!":
            j = i + 1
            while j < hi and text[j] in ".?!" + _CLOSERS:
                j += 1
            if (j >= hi or text[j].isspace()) and not (ch == "." and _is_non_final_period(text, lo, i)):
                boundaries.append(j)
                i = j
                continue
        i += 1
    boundaries.append(hi)

    sentences: list[Sentence] = []
    start = lo
    for b in boundaries:
        s, e = _strip_span(text, start, b)
        start = b
        if e <= s:
            continue
        if sentences and not any(c.isalnum() for c in text[s:e]):
            prev = sentences[-1]  # a lone closer or symbol line belongs to the sentence before it
            sentences[-1] = Sentence(text[prev.start : e], prev.start, e)
        else:
            sentences.append(Sentence(text[s:e], s, e))
    return sentences


def _is_non_final_period(text: str, lo: int, i: int) -> bool:
    """A period that ends an abbreviation, an initial or an enumeration marker, not a sentence."""
    before = text[lo:i]
    if _ENUMERATION.search(before):
        return True
    m = _WORD_BEFORE.search(before)
    if m is None:
        return False
    word = m.group(1)
    if word.lower() in _ABBREVIATIONS:
        return True
    return len(word) == 1 and word.isupper()  # an initial such as "J."
