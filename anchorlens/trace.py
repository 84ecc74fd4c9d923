"""A chain of thought under a model's tokenizer: prompt, sentences, and each sentence's token span.

The token sequence of a ``Trace`` is ``prompt + cot`` tokenized together (so merges across the seam are
what the model really sees), with the tokenizer's character offsets deciding which tokens belong to
which sentence: a token belongs to the sentence that holds its first non-space character. Tokens of
pure white space between sentences belong to none.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from anchorlens.errors import EmptyTextError, TraceTooLongError
from anchorlens.inputs import TRACE_FIELDS, read_trace_json  # noqa: F401 (checked without torch; kept importable here)
from anchorlens.sentences import Sentence, split_sentences
from anchorlens.results import Result, expect_kind


@dataclass
class Trace(Result):
    """A prompt and a chain of thought, split into sentences mapped onto tokens.

    Attributes:
        prompt: everything the model saw before the chain of thought (chat template included).
        cot: the chain-of-thought text; sentence offsets point into it.
        sentences: the sentences of ``cot``.
        token_ids: the full token sequence (prompt then chain of thought), BOS included when used.
        token_spans: per sentence, the half-open range ``[start, end)`` of its positions in ``token_ids``.
        prompt_token_end: the first position whose characters belong to the chain of thought.
        style: the sentence style used to split.
        model_name: the model whose tokenizer produced ``token_ids``.
        metadata: free-form extras (problem, answer, generation settings).
    """

    prompt: str
    cot: str
    sentences: list[Sentence]
    token_ids: list[int]
    token_spans: list[tuple[int, int]]
    prompt_token_end: int
    style: str = "default"
    model_name: str | None = None
    metadata: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_text(
        cls,
        model,
        text: str,
        prompt: str = "",
        style: str = "default",
        metadata: dict | None = None,
        check_length: bool = True,
    ) -> "Trace":
        """Split ``text`` (a chain of thought) and map its sentences onto ``model``'s tokens.

        ``model`` is a TransformerBridge (its tokenizer and context length are used) or a bare
        Hugging Face tokenizer.

        >>> trace = Trace.from_text(model, "First, x = 2. Then y = 3.", prompt="Q: ...\\n")  # doctest: +SKIP
        >>> trace.sentence_tokens(1)                                                       # doctest: +SKIP
        """
        tokenizer = getattr(model, "tokenizer", model)
        if not isinstance(text, str) or not text.strip():
            raise EmptyTextError("the chain of thought is empty: pass the text to analyse")
        sentences = split_sentences(text, style=style)
        full = prompt + text
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        token_ids = list(encoded["input_ids"])
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        if _wants_bos(model, tokenizer, full):
            token_ids = [tokenizer.bos_token_id] + token_ids
            offsets = [(0, 0)] + offsets
        spans, prompt_end = _token_spans(full, offsets, sentences, len(prompt))
        n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
        if check_length and n_ctx is not None and len(token_ids) > n_ctx:
            raise TraceTooLongError(
                f"the trace has {len(token_ids)} tokens but the model's context holds {n_ctx}: "
                "shorten the chain of thought (or keep only its first sentences) before analysing it"
            )
        name = getattr(model, "anchorlens_name", None) or getattr(getattr(model, "cfg", None), "model_name", None)
        return cls(prompt, text, sentences, token_ids, spans, prompt_end, style, name, dict(metadata or {}))

    # ------------------------------------------------------------------ views

    @property
    def n_sentences(self) -> int:
        return len(self.sentences)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    def tokens(self, device: str | torch.device | None = None) -> torch.Tensor:
        """The token ids as a ``[1, n_tokens]`` tensor, ready for ``model(...)``."""
        return torch.tensor([self.token_ids], dtype=torch.long, device=device)

    def sentence_tokens(self, i: int) -> list[int]:
        start, end = self.token_spans[i]
        return self.token_ids[start:end]

    def sentence_texts(self) -> list[str]:
        return [s.text for s in self.sentences]

    def prefix_text(self, i: int) -> str:
        """The chain of thought up to (not including) sentence ``i``, as the original text."""
        return self.cot[: self.sentences[i].start] if i < self.n_sentences else self.cot

    def __repr__(self) -> str:
        return (
            f"Trace({self.n_sentences} sentences, {self.n_tokens} tokens, style={self.style!r}, "
            f"model={self.model_name!r})"
        )

    def to_dataframe(self):
        """One row per sentence: index, text, character and token ranges."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "sentence": i,
                    "text": s.text,
                    "char_start": s.start,
                    "char_end": s.end,
                    "token_start": self.token_spans[i][0],
                    "token_end": self.token_spans[i][1],
                }
                for i, s in enumerate(self.sentences)
            ]
        )

    # ------------------------------------------------------------------ I/O

    def to_dict(self) -> dict:
        data = asdict(self)
        data["token_spans"] = [list(span) for span in self.token_spans]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Trace":
        data = dict(data)
        data.pop("kind", None)  # what save stores beside the fields
        data["sentences"] = [Sentence(**s) for s in data["sentences"]]
        data["token_spans"] = [tuple(span) for span in data["token_spans"]]
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "Trace"} | self.to_dict(), indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """A trace that ``save`` wrote; anything else is refused with what the file lacks."""
        expect_kind(path, cls)
        return cls.from_dict(read_trace_json(path, "Trace.load"))

    def plot(self, ax=None):
        """Bars: tokens per sentence, so long and short steps of the chain of thought stand out."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(max(4.0, 0.25 * self.n_sentences), 3))[1]
        ax.bar(range(self.n_sentences), [end - start for start, end in self.token_spans])
        ax.set_xlabel("sentence")
        ax.set_ylabel("tokens")
        return ax


def encode_text(model, text: str) -> list[int]:
    """Token ids of ``text`` as the model reads it: BOS prepended as ``model.to_tokens`` would."""
    tokenizer = getattr(model, "tokenizer", model)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return [tokenizer.bos_token_id] + ids if _wants_bos(model, tokenizer, text) else ids


def _wants_bos(model, tokenizer, full_text: str) -> bool:
    """Prepend BOS as ``model.to_tokens`` would, unless the text (e.g. a chat template) starts with it."""
    cfg = getattr(model, "cfg", None)
    prepend = getattr(cfg, "default_prepend_bos", True) if cfg is not None else False
    bos = tokenizer.bos_token
    return bool(prepend and bos is not None and tokenizer.bos_token_id is not None and not full_text.startswith(bos))


def _token_spans(
    full: str, offsets: list[tuple[int, int]], sentences: list[Sentence], prompt_len: int
) -> tuple[list[tuple[int, int]], int]:
    """Per sentence, the positions of the tokens whose first non-space character lies in it."""
    bounds = [(prompt_len + s.start, prompt_len + s.end) for s in sentences]
    starts: list[int | None] = [None] * len(sentences)
    ends: list[int] = [0] * len(sentences)
    prompt_end = len(offsets)
    k = 0
    for position, (a, b) in enumerate(offsets):
        first = next((c for c in range(a, b) if not full[c].isspace()), None)
        if first is None:
            continue
        if first >= prompt_len and prompt_end == len(offsets):
            prompt_end = position
        while k < len(bounds) and first >= bounds[k][1]:
            k += 1
        if k < len(bounds) and first >= bounds[k][0]:
            if starts[k] is None:
                starts[k] = position
            ends[k] = position + 1
    spans = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        if start is None:
            raise EmptyTextError(f"sentence {i} ({sentences[i].text!r}) maps onto no token")
        spans.append((start, end))
    return spans, prompt_end


def degenerate_reason(cot: str, n_sentences: int | None = None) -> str | None:
    """Why a chain of thought looks like broken decoding rather than reasoning, or None if it looks fine.

    Catches what a broken KV cache or a wrong model produces: no sentence boundary at all, or one character
    (``To------...``) or one word filling most of the text. A real trace can be short or loop now and then;
    these are deliberately crude, so they flag only text no analysis would be worth running on. Pass
    ``n_sentences`` to flag a single sentence too (right for a generated trace, not for a short one of yours).

    >>> degenerate_reason("To" + "-" * 90)
    "one character ('-') makes up 98% of the text"
    >>> degenerate_reason("We need 6 times 7. 6 * 7 = 42. So the answer is 42.") is None
    True
    """
    text = "".join(cot.split())
    if not text:
        return "it is empty"
    char, count = max(((c, text.count(c)) for c in set(text)), key=lambda pair: pair[1])
    if len(text) >= 20 and count / len(text) > 0.5:
        return f"one character ({char!r}) makes up {count / len(text):.0%} of the text"
    words = cot.split()
    if len(words) >= 10:
        word = max(set(words), key=words.count)
        if words.count(word) / len(words) > 0.5:
            return f"one word ({word!r}) makes up {words.count(word) / len(words):.0%} of the words"
    if n_sentences is not None and n_sentences < 2:
        return f"it holds {n_sentences} sentence"
    return None
