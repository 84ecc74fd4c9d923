"""Label sentences by prompting a language model with the taxonomy (the published labels came from gpt-4o).

Two kinds of model work:

- a TransformerLens ``TransformerBridge`` (or any model with ``.tokenizer`` that returns logits): the prompt
  lists the eight categories numbered 1-8 (and, by default, two worked examples of each) and the model's
  next-token probabilities of "1".."8" pick the label, so every sentence gets exactly one valid tag even from
  a small model; the part of the prompt shared by all sentences runs once (a KV cache);
- any callable ``prompt -> reply text`` (an API client, a pipeline): the reply is parsed for a number or
  a category name; replies that name none fall back to the offline classifier (``fallback``).

>>> tags = label_sentences_with_model(load_model(), ["Let me add 2 and 3.", "2 + 3 = 5."])   # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from anchorlens.errors import AnchorlensError
from anchorlens.hooks.kv_cache import crop, forward_with_cache
from anchorlens.taxonomy.categories import CATEGORY_DEFINITIONS, SENTENCE_CATEGORIES
from anchorlens.progress import progress_bar


#: Worked examples shown in the prompt (``examples=True``): two sentences per category, picked by hand from
#: the published labels of the classifier's training problems (never from its held-out problems 4164 and
#: 6998), each with its source (problem, trace, sentence index); mixed in a fixed order, so that no category is
#: always the last one shown.
FEW_SHOT_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("problem_setup", "Okay, so I have this math problem here.", "6596 correct 0"),
    ("active_computation", "Difference: 188 - 98 = 90", "2236 correct 167"),
    ("uncertainty_management", "Wait, this is getting confusing.", "2236 correct 90"),
    ("plan_generation", "Hmm, let me try to figure this out step by step.", "2238 correct 1"),
    ("self_checking", "Layer 5: 1 + 3*121 = 1 + 363 = 364 ✔️", "330 correct 60"),
    ("fact_retrieval", "When multiplying two polynomials, the coefficients of like terms are multiplied.",
     "2238 correct 19"),
    ("result_consolidation", "Therefore, in the 3-digit numbers, 4 appears 168 times and 8 appears 78 times.",
     "2236 correct 142"),
    ("final_answer_emission", "Therefore, the answer is 5.8 cm.", "6596 correct 246"),
    ("active_computation", "When \\(k = 3\\), it's 1 × (-1) × (-3) = 3.", "3448 incorrect 49"),
    ("plan_generation", "Then, subtract the number of arrangements where the two green plates are adjacent.",
     "2189 incorrect 2"),
    ("uncertainty_management", "But that seems like it's not a single coefficient.", "2238 incorrect 52"),
    ("fact_retrieval", "But the problem says the larger square has an area of 16 cm².", "6596 correct 32"),
    ("self_checking", "So, same result as before.", "3448 incorrect 153"),
    ("problem_setup", "She has different colored plates: 5 blue, 2 red, 2 green, and 1 orange.", "2189 correct 1"),
    ("final_answer_emission", "So, the number of ways is 588.", "2189 correct 202"),
    ("result_consolidation", "So, the coefficient of \\(a^2b^2\\) is 6.", "2238 incorrect 117"),
)


def _instructions(examples: bool) -> str:
    """The part of the prompt that is the same for every sentence: the categories (and the examples)."""
    options = "\n".join(f"{k}. {name}: {text}" for k, (name, text) in enumerate(CATEGORY_DEFINITIONS.items(), start=1))
    parts = ["Classify one sentence of a step-by-step solution into one of these categories:", options]
    if examples:
        number = {name: k for k, name in enumerate(SENTENCE_CATEGORIES, start=1)}
        shots = "\n".join(f"Sentence: {text}\nCategory: {number[name]}" for name, text, _ in FEW_SHOT_EXAMPLES)
        parts.append(f"Examples:\n{shots}")
    return "\n".join(parts) + "\n"


def labelling_prompt(
    sentences: Sequence[str], index: int, *, problem: str | None = None, context: int = 2, examples: bool = True
) -> str:
    """The instruction asking for the category of ``sentences[index]``, with ``context`` sentences before it;
    ``examples`` adds two worked examples per category (``FEW_SHOT_EXAMPLES``).

    >>> print(labelling_prompt(["First, add.", "2 + 3 = 5."], 1, context=1).splitlines()[-1])
    Answer with the category number only.
    """
    return _instructions(examples) + _sentence_part(sentences, index, problem=problem, context=context)


def _sentence_part(sentences: Sequence[str], index: int, *, problem: str | None, context: int) -> str:
    before = " ".join(sentences[max(0, index - context) : index])
    parts = []
    if problem:
        parts.append(f"Problem: {problem}")
    if before:
        parts.append(f"Preceding text: {before}")
    parts.append(f"Sentence: {sentences[index]}")
    parts.append("Answer with the category number only.")
    return "\n".join(parts)


def parse_category(reply: str) -> str | None:
    """The category a reply names: a number 1-8 or a category name (spaces or underscores); None if neither.

    >>> parse_category("4"), parse_category("Category: uncertainty management"), parse_category("no idea")
    ('active_computation', 'uncertainty_management', None)
    """
    text = reply.strip().lower()
    number = re.match(r"\D{0,20}?\b([1-8])\b", text)
    names = {name: re.search(name.replace("_", r"[_ ]"), text) for name in SENTENCE_CATEGORIES}
    found = [(m.start(), name) for name, m in names.items() if m]
    if found:
        return min(found)[1]
    if number:
        return SENTENCE_CATEGORIES[int(number.group(1)) - 1]
    return None


def _bridge_prompt(model, prompt: str) -> str:
    tokenizer = model.tokenizer
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt + "\nCategory number:"


def _option_ids(tokenizer) -> list[list[int]]:
    """Token ids of each option "1".."8" (and " 1".." 8" when no chat template puts the answer on a fresh line)."""
    candidates: list[list[int]] = []
    for k in range(1, len(SENTENCE_CATEGORIES) + 1):
        ids = {tuple(tokenizer(f"{k}", add_special_tokens=False)["input_ids"])[:1],
               tuple(tokenizer(f" {k}", add_special_tokens=False)["input_ids"])[:1]}
        candidates.append(sorted({i[0] for i in ids if i}))
    return candidates


def _choose(logits: torch.Tensor, candidates: list[list[int]]) -> str:
    logp = torch.log_softmax(logits.float(), dim=-1)
    scores = torch.stack([torch.logsumexp(logp[ids], dim=0) for ids in candidates])
    return SENTENCE_CATEGORIES[int(scores.argmax())]


class _PrefixLabeller:
    """Labels with a bridge: the category whose number the model finds most likely to come next after the
    prompt. The prompts of all sentences share their beginning (the categories and examples): those tokens
    run once and are kept as a KV cache; each prompt runs only its own tokens on top of it.

    The prompt's tokens are those of the shared text followed by those of the rest, tokenised apart (the
    shared text ends with a newline, where the tokenisers used here split anyway).
    """

    @torch.no_grad()
    def __init__(self, model, shared: str):
        from anchorlens.trace import encode_text

        self.model = model
        templated = _bridge_prompt(model, shared + "\x00")
        self.head = templated[: templated.index("\x00")]  # the chat template's start plus the shared text
        self.tail = templated[templated.index("\x00") + 1 :]  # what the template puts after the prompt
        self.candidates = _option_ids(model.tokenizer)
        ids = encode_text(model, self.head)
        self.n_shared = len(ids)
        # full length: each prompt's own tokens are cropped off again (a sliding-window layer's own cache could not)
        _, self.cache = forward_with_cache(model, torch.tensor([ids], device=model.cfg.device), keep="full")

    def token_ids(self, own: str) -> list[int]:
        """All the prompt's tokens: the shared ones, then those of ``own`` and the template's end."""
        from anchorlens.trace import encode_text

        tokenizer = self.model.tokenizer
        own_ids = tokenizer(own + self.tail, add_special_tokens=False)["input_ids"]
        return encode_text(self.model, self.head) + list(own_ids)

    @torch.no_grad()
    def logits(self, own: str) -> torch.Tensor:
        """The next-token logits after the whole prompt (shared text, then ``own``)."""
        if self.cache is None:  # a model without a KV cache: run the whole prompt
            full = torch.tensor([self.token_ids(own)], device=self.model.cfg.device)
            return self.model(full, return_type="logits")[0, -1]
        ids = list(self.model.tokenizer(own + self.tail, add_special_tokens=False)["input_ids"])
        tokens = torch.tensor([ids], device=self.model.cfg.device)
        logits, self.cache = forward_with_cache(self.model, tokens, past_key_values=self.cache)
        crop(self.cache, self.n_shared)  # back to the shared tokens
        return logits[0, -1]

    def __call__(self, own: str) -> str:
        return _choose(self.logits(own), self.candidates)


def label_sentences_with_model(
    model,
    sentences: Sequence[str],
    *,
    problem: str | None = None,
    context: int = 2,
    examples: bool = True,
    fallback: str = "classifier",
    progress: bool = True,
) -> list[str]:
    """One taxonomy tag per sentence, chosen by a language model.

    Args:
        model: a ``TransformerBridge`` (scored on the next-token probabilities of the option numbers) or a
            callable ``prompt -> reply`` whose reply is parsed.
        sentences: the sentences of one trace, in order (strings or objects with ``.text``).
        problem: the problem statement, added to each prompt when given.
        context: how many preceding sentences each prompt shows.
        examples: show two worked examples per category (``FEW_SHOT_EXAMPLES``) before the sentence.
        fallback: for callables whose reply names no category: ``"classifier"`` (the offline classifier's
            tag) or ``"error"`` (raise).

    >>> label_sentences_with_model(lambda p: "7", ["Let me verify: 2 + 3 = 5."])
    ['self_checking']
    """
    texts = [getattr(s, "text", s) for s in sentences]
    if not texts:
        raise AnchorlensError("no sentences to label: pass the sentences of a trace")
    if fallback not in ("classifier", "error"):
        raise AnchorlensError(f"fallback must be 'classifier' or 'error', not {fallback!r}")
    is_bridge = hasattr(model, "tokenizer") and hasattr(model, "cfg")
    if not is_bridge and not callable(model):
        raise AnchorlensError("model must be a TransformerBridge or a callable prompt -> reply text")
    labels: list[str | None] = []
    bridge = _PrefixLabeller(model, _instructions(examples)) if is_bridge else None
    for i in progress_bar(range(len(texts)), desc="labelling sentences", progress=progress):
        if bridge is not None:
            labels.append(bridge(_sentence_part(texts, i, problem=problem, context=context)))
        else:
            reply = model(labelling_prompt(texts, i, problem=problem, context=context, examples=examples))
            labels.append(parse_category(reply if isinstance(reply, str) else str(reply)))
    missing = [i for i, label in enumerate(labels) if label is None]
    if missing:
        if fallback == "error":
            raise AnchorlensError(
                f"the model's replies named no category for sentences {missing[:10]}; use fallback='classifier' "
                "or a stronger model"
            )
        from anchorlens.taxonomy.classifier import classify_sentences

        offline = classify_sentences(texts)
        labels = [offline[i] if label is None else label for i, label in enumerate(labels)]
    return labels  # type: ignore[return-value]
