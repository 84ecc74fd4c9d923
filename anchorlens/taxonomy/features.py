"""Features of a sentence in its chain of thought, for the taxonomy classifier.

A sentence's category depends on what it says *and* where it sits: "Therefore, 756 - 168 = 588." is
self-checking inside a verification, active computation elsewhere. So each sentence is described by

- its all-MiniLM-L6-v2 embedding,
- the mean embedding of the ``window`` sentences before it and of those after it (context),
- its relative position in the trace,
- lexical cues that embeddings blur: share of digits and operators, question marks, LaTeX, and
  discourse markers ("wait", "let me check", "so the answer", ...), for the sentence and averaged over
  the ``LEXICAL_WINDOW`` sentences before and after it (is this inside a verification? a computation?);
- optionally, TF-IDF weights of word unigrams and bigrams (``NgramVocabulary``, learnt in training).

>>> x = sentence_features(["Let me add 2 and 3.", "2 + 3 = 5.", "So the answer is 5."])
>>> x.shape
(3, 1253)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from jaxtyping import Float
from sklearn.feature_extraction.text import TfidfVectorizer

from anchorlens.embeddings import Embedder, default_embedder

CONTEXT_WINDOW = 2  # sentences either side averaged into the context embedding
LEXICAL_WINDOW = 5  # sentences either side averaged into the context cues

# Discourse markers: (feature name, regex). Matched case-insensitively; most anchor on the sentence start.
_CUES: tuple[tuple[str, str], ...] = (
    ("starts_wait", r"^\W*(wait|hold on|hmm+|hm+)\b"),
    ("starts_but", r"^\W*(but|however|although)\b"),
    ("starts_so", r"^\W*(so|thus|hence)\b"),
    ("starts_therefore", r"^\W*(therefore|hence|thus|in conclusion|finally)\b"),
    ("starts_okay", r"^\W*(okay|ok|alright|all right)\b"),
    ("starts_let", r"^\W*(let me|let's|let us)\b"),
    ("starts_first", r"^\W*(first|second|third|next|then|now|step \d|\d+\.\s)"),
    ("starts_alternatively", r"^\W*(alternatively|another way|instead)\b"),
    ("starts_similarly", r"^\W*(similarly|likewise|same)\b"),
    ("starts_if", r"^\W*(if|suppose|assume|assuming)\b"),
    ("starts_which", r"^\W*(which|that|this)\b"),
    ("check", r"\b(check|verify|verif|double-check|confirm|make sure|sanity|consistent|correct)\w*"),
    ("mistake", r"\b(mistake|wrong|error|not right|doesn't make sense|contradict|discrepanc|confus)\w*"),
    ("maybe", r"\b(maybe|perhaps|might|not sure|i think|unsure|wonder)\b"),
    ("answer", r"\b(the answer|final answer|answer is|answer should)\b"),
    ("boxed", r"\\boxed|\*\*final answer\*\*"),
    ("plan", r"\b(i need to|we need to|need to find|i should|we should|i'll|i will|approach|strategy|figure out|step by step|try to)\b"),
    ("recall", r"\b(recall|remember|formula|know that|defined as|definition|theorem|identity|property|rule)\b"),
    ("problem", r"\b(the problem|problem says|problem states|we are given|given that|asked|question)\b"),
    ("result", r"\b(so we have|which gives|gives us|we get|we have|that means|this means|total|altogether|in total|overall)\b"),
    ("compute", r"\b(compute|calculate|calculating|simplif|multiply|divide|subtract|add|expand|plug|substitut|solve)\w*"),
    ("same", r"\b(same|matches|match|agrees|consistent|as before|again)\b"),
)
_CUE_PATTERNS = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in _CUES)
LEXICAL_NAMES: tuple[str, ...] = (
    "log_chars",
    "digit_ratio",
    "operator_ratio",
    "alpha_ratio",
    "n_equals",
    "has_question",
    "has_exclamation",
    "has_latex",
    "has_newline",
    "ends_colon",
    *(name for name, _ in _CUES),
)
POSITION_NAMES: tuple[str, ...] = ("relative_position", "is_first", "is_last", "near_end", "log_sentences")


def lexical_features(sentences: Sequence[str]) -> Float[np.ndarray, "sentence cue"]:
    """Surface cues of each sentence (columns named by ``LEXICAL_NAMES``).

    >>> float(lexical_features(["Wait, is 2 + 2 = 5?"])[0, LEXICAL_NAMES.index("starts_wait")])
    1.0
    """
    out = np.zeros((len(sentences), len(LEXICAL_NAMES)), dtype=np.float32)
    for i, s in enumerate(sentences):
        n = max(len(s), 1)
        stripped = s.strip()
        row = [
            np.log1p(len(s)) / 6.0,
            sum(c.isdigit() for c in s) / n,
            sum(c in "+-*/=^<>()[]{}|\\" for c in s) / n,
            sum(c.isalpha() for c in s) / n,
            min(s.count("="), 5) / 5.0,
            float("?" in s),
            float("!" in s),
            float("\\" in s or "$" in s),
            float("\n" in s),
            float(stripped.endswith(":")),
        ]
        row += [float(bool(pattern.search(stripped))) for _, pattern in _CUE_PATTERNS]
        out[i] = row
    return out


def position_features(n: int) -> Float[np.ndarray, "sentence 5"]:
    """Where each of ``n`` sentences sits in its trace (columns named by ``POSITION_NAMES``)."""
    idx = np.arange(n, dtype=np.float32)
    rel = idx / max(n - 1, 1)
    return np.stack(
        [rel, (idx == 0).astype(np.float32), (idx == n - 1).astype(np.float32), (idx >= n - 3).astype(np.float32),
         np.full(n, np.log1p(n) / 6.0, dtype=np.float32)],
        axis=1,
    )


def context_means(
    vectors: Float[np.ndarray, "sentence d"], window: int = CONTEXT_WINDOW
) -> tuple[Float[np.ndarray, "sentence d"], Float[np.ndarray, "sentence d"]]:
    """Mean of the ``window`` rows before each row and of the ``window`` after it (zeros at the edges).

    >>> before, after = context_means(np.eye(3, dtype=np.float32), window=1)
    >>> before[1].tolist(), after[1].tolist()
    ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    """
    n, d = vectors.shape
    before = np.zeros((n, d), dtype=np.float32)
    after = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        if i > 0:
            before[i] = vectors[max(0, i - window) : i].mean(0)
        if i < n - 1:
            after[i] = vectors[i + 1 : i + 1 + window].mean(0)
    return before, after


_TOKEN = re.compile(r"[a-z]+|\d|[=+\-*/^?\\]")  # words, single digits, operators (numbers vary by problem)


def _terms(sentence: str) -> list[str]:
    tokens = _TOKEN.findall(sentence.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


@dataclass
class NgramVocabulary:
    """TF-IDF over word unigrams and bigrams (scikit-learn's ``TfidfVectorizer`` on ``_terms``).

    A term's weight is ``(1 + log count) * idf`` (``sublinear_tf``), each row L2-normalised, with
    ``idf = log((1 + documents) / (1 + document frequency)) + 1`` (``smooth_idf``); ``fit`` keeps the
    ``max_terms`` most frequent terms seen in at least ``min_df`` sentences. ``terms`` and ``idf`` are what the
    shipped weights store; ``terms[k]`` is column ``k``.

    >>> vocab = NgramVocabulary.fit(["let me check", "let me add", "let me check again"], min_df=2)
    >>> vocab.terms
    ['check', 'let', 'let me', 'me', 'me check']
    """

    terms: list[str]
    idf: Float[np.ndarray, "term"]

    @classmethod
    def fit(cls, sentences: Sequence[str], max_terms: int = 1000, min_df: int = 3) -> "NgramVocabulary":
        vectorizer = TfidfVectorizer(analyzer=_terms, min_df=min_df, max_features=max_terms, sublinear_tf=True)
        try:
            vectorizer.fit(list(sentences))
        except ValueError:  # no term in min_df sentences: an empty vocabulary, as for no sentences at all
            return cls([], np.zeros(0, dtype=np.float32))
        return cls(vectorizer.get_feature_names_out().tolist(), vectorizer.idf_.astype(np.float32))

    def transform(self, sentences: Sequence[str]) -> Float[np.ndarray, "sentence term"]:
        if not self.terms:
            return np.zeros((len(sentences), 0), dtype=np.float32)
        vectorizer = TfidfVectorizer(analyzer=_terms, vocabulary=list(self.terms), sublinear_tf=True, dtype=np.float32)
        vectorizer.idf_ = np.asarray(self.idf, dtype=np.float32)  # the stored idf, not one refitted on these sentences
        return vectorizer.transform(list(sentences)).toarray()


def feature_names(dim: int = 384, vocabulary: NgramVocabulary | None = None) -> list[str]:
    """Names of the columns of ``sentence_features``."""
    return (
        [f"emb_{k}" for k in range(dim)]
        + [f"before_{k}" for k in range(dim)]
        + [f"after_{k}" for k in range(dim)]
        + list(POSITION_NAMES)
        + list(LEXICAL_NAMES)
        + [f"before_{name}" for name in LEXICAL_NAMES]
        + [f"after_{name}" for name in LEXICAL_NAMES]
        + ([f"ngram:{t}" for t in vocabulary.terms] if vocabulary is not None else [])
    )


def features_from_embeddings(
    sentences: Sequence[str],
    vectors: Float[np.ndarray, "sentence d"],
    window: int = CONTEXT_WINDOW,
    vocabulary: NgramVocabulary | None = None,
    lexical_window: int = LEXICAL_WINDOW,
) -> Float[np.ndarray, "sentence feature"]:
    """``sentence_features`` when the embeddings are already at hand (training embeds each trace once)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    before, after = context_means(vectors, window)
    cues = lexical_features(sentences)
    cues_before, cues_after = context_means(cues, lexical_window)
    parts = [vectors, before, after, position_features(len(sentences)), cues, cues_before, cues_after]
    if vocabulary is not None:
        parts.append(vocabulary.transform(sentences))
    return np.concatenate(parts, axis=1)


def sentence_features(
    sentences: Sequence[str],
    embed: Embedder | None = None,
    window: int = CONTEXT_WINDOW,
    vocabulary: NgramVocabulary | None = None,
) -> Float[np.ndarray, "sentence feature"]:
    """Features of the sentences of ONE trace, in order (context and position depend on the whole trace)."""
    embed = embed or default_embedder()
    vectors = embed(list(sentences)).float().cpu().numpy()
    return features_from_embeddings(sentences, vectors, window, vocabulary)
