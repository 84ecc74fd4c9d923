"""The offline sentence-taxonomy classifier: a small linear model over sentence features, shipped in the package.

Trained by ``scripts/train_taxonomy.py`` on the labelled reference traces (data/thought-anchors); its weights
are ``anchorlens/data/taxonomy_classifier.npz`` (labels and held-out scores in ``taxonomy_classifier.json``,
the evaluation in ``taxonomy_report.md``). Inference is numpy only, after the MiniLM embedding and (when
``lm_layers`` is set) the partial SmolLM2 forward.

The model is a multinomial logistic regression on standardised sentence features
(``anchorlens.taxonomy.features``: the sentence's embedding, its neighbours', its position, lexical cues
around it, and TF-IDF of its words) and, when ``lm_layers`` is set (the shipped weights: layers 15 and 20),
the embedded SmolLM2's residual stream after each of those layers, averaged over the sentence's tokens with
the whole trace before it in context (``anchorlens.taxonomy.lm_states``). Simple on purpose: 2,900 labelled
sentences from 10 problems do not support more, and heavier models (an MLP, a second stage over neighbours'
predictions, Viterbi decoding over label transitions, a fine-tuned MiniLM cross-encoder reading each sentence
with its neighbours) did not beat it on held-out problems (see the report).

>>> classify_sentences(["Okay, so I need to find the area.", "The area is 6 * 4 = 24.", "So the answer is 24."])
['problem_setup', 'active_computation', 'final_answer_emission']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from jaxtyping import Float

from anchorlens.errors import AnchorlensError
from anchorlens.embeddings import Embedder
from anchorlens.taxonomy.categories import SENTENCE_CATEGORIES
from anchorlens.taxonomy.features import CONTEXT_WINDOW, NgramVocabulary, sentence_features

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULT_WEIGHTS = DATA_DIR / "taxonomy_classifier.npz"


@dataclass
class LinearStage:
    """Standardise, then multinomial logistic regression: ``softmax(((x - mean) / scale) @ weight.T + bias)``."""

    mean: Float[np.ndarray, "feature"]
    scale: Float[np.ndarray, "feature"]
    weight: Float[np.ndarray, "category feature"]
    bias: Float[np.ndarray, "category"]

    def proba(self, x: Float[np.ndarray, "sentence feature"]) -> Float[np.ndarray, "sentence category"]:
        z = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class TaxonomyClassifier:
    """Sentence features -> one of ``categories`` per sentence (see the module docstring).

    >>> clf = TaxonomyClassifier.load()                        # the shipped weights
    >>> clf.predict(["Wait, that can't be right."])            # doctest: +SKIP
    ['uncertainty_management']
    """

    categories: tuple[str, ...]
    linear: LinearStage
    vocabulary: NgramVocabulary | None = None  # TF-IDF terms, when the model uses them
    window: int = CONTEXT_WINDOW
    info: dict | None = None  # training facts and held-out scores, from the JSON next to the weights
    lm_layers: tuple[int, ...] = ()  # SmolLM2 layers whose in-context sentence states are features (): none

    @property
    def lm_layer(self) -> int | None:
        """The deepest SmolLM2 layer read (None when the classifier reads none): how far the forward runs."""
        return max(self.lm_layers) if self.lm_layers else None

    def predict_proba(
        self, sentences: Sequence[str], embed: Embedder | None = None
    ) -> Float[np.ndarray, "sentence category"]:
        """Probabilities per sentence (columns in ``self.categories`` order); sentences of ONE trace, in order."""
        texts = _texts(sentences)
        x = sentence_features(texts, embed, self.window, self.vocabulary)
        if self.lm_layers:
            states = sentence_states(self.lm_layers)(texts)
            x = np.concatenate([x, *(states[layer] for layer in self.lm_layers)], axis=1)
        return self.proba_from_features(x)

    def proba_from_features(self, x: Float[np.ndarray, "sentence feature"]) -> Float[np.ndarray, "sentence category"]:
        """Probabilities from precomputed ``sentence_features`` of one trace."""
        if x.shape[1] != self.linear.mean.shape[0]:
            raise AnchorlensError(
                f"the classifier expects {self.linear.mean.shape[0]} features, got {x.shape[1]}: the weights were "
                "trained with another feature set; retrain with scripts/train_taxonomy.py"
            )
        return self.linear.proba(x)

    def predict(self, sentences: Sequence[str], embed: Embedder | None = None) -> list[str]:
        """One category per sentence."""
        return [self.categories[k] for k in self.predict_proba(sentences, embed).argmax(axis=1)]

    def save(self, path: str | Path) -> Path:
        """Write the weights (``.npz``) and, next to them, the labels and info (``.json``)."""
        path = Path(path).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in vars(self.linear).items()}
        meta = {"categories": list(self.categories), "window": self.window, "lm_layers": list(self.lm_layers)}
        if self.vocabulary is not None:
            arrays["idf"] = self.vocabulary.idf.astype(np.float32)
            meta["terms"] = list(self.vocabulary.terms)
        np.savez_compressed(path, **arrays)
        meta.update(self.info or {})
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "TaxonomyClassifier":
        """Read weights written by ``save`` (default: the ones shipped in the package)."""
        path = Path(path).with_suffix(".npz") if path is not None else DEFAULT_WEIGHTS
        if not path.exists():
            raise AnchorlensError(
                f"no taxonomy weights at {path}; train them with `python scripts/train_taxonomy.py` "
                "or reinstall anchorlens"
            )
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
        with np.load(path) as data:
            linear = LinearStage(**{k: data[k] for k in ("mean", "scale", "weight", "bias")})
            terms = meta.pop("terms", None)
            vocabulary = NgramVocabulary(terms, data["idf"]) if terms is not None else None
        categories = tuple(meta.pop("categories", SENTENCE_CATEGORIES))
        window = int(meta.pop("window", CONTEXT_WINDOW))
        lm_layers = meta.pop("lm_layers", None)
        if lm_layers is None:  # weights written before several layers were possible
            lm_layers = [] if meta.get("lm_layer") is None else [meta["lm_layer"]]
        meta.pop("lm_layer", None)
        return cls(categories, linear, vocabulary, window, meta, tuple(int(k) for k in lm_layers))


def _texts(sentences) -> list[str]:
    """Strings from a Trace, a list of ``Sentence`` objects, or a list of strings."""
    if hasattr(sentences, "sentences"):  # a Trace
        sentences = sentences.sentences
    if isinstance(sentences, str):
        raise AnchorlensError("pass a list of sentences (e.g. split_sentences(text)), not one string")
    texts = [getattr(s, "text", s) for s in sentences]
    if not texts:
        raise AnchorlensError("no sentences to classify: pass the sentences of a trace, in order")
    if not all(isinstance(t, str) for t in texts):
        raise AnchorlensError("sentences must be strings, Sentence objects, or a Trace")
    return texts


@lru_cache(maxsize=2)
def sentence_states(layers: int | tuple[int, ...]):
    """The embedded SmolLM2 cut after the deepest of ``layers`` (loaded once per set of layers; a few seconds)."""
    from anchorlens.taxonomy.lm_states import SentenceStates

    return SentenceStates(layers=(layers,) if isinstance(layers, int) else tuple(layers))


@lru_cache(maxsize=1)
def default_classifier() -> TaxonomyClassifier:
    """The shipped classifier (loaded once)."""
    return TaxonomyClassifier.load()


def classify_sentences(
    sentences,
    *,
    embed: Embedder | None = None,
    classifier: TaxonomyClassifier | None = None,
    probabilities: bool = False,
):
    """One of the 8 taxonomy tags (``SENTENCE_CATEGORIES``) per sentence, offline.

    ``sentences`` are the sentences of ONE chain of thought, in order (strings, ``Sentence`` objects or a
    ``Trace``): context and position inform each label. Embeds with all-MiniLM-L6-v2 by default, and (the
    shipped weights) reads the embedded SmolLM2's first layers over the whole trace.

    With ``probabilities=True`` returns ``(tags, proba)``: ``proba[i, k]`` is the probability of
    ``classifier.categories[k]`` (``SENTENCE_CATEGORIES`` order) for sentence ``i``, so uncertain labels can
    be shown as such (the tag is the most probable category).

    >>> classify_sentences(["Hmm, wait.", "Let me double-check that 3 * 4 = 12."])   # doctest: +SKIP
    ['uncertainty_management', 'self_checking']
    """
    classifier = classifier or default_classifier()
    proba = classifier.predict_proba(_texts(sentences), embed)
    tags = [classifier.categories[k] for k in proba.argmax(axis=1)]
    return (tags, proba) if probabilities else tags
