"""Sentence taxonomy (docs/methods.md 1.4): which of eight roles each sentence of a chain of thought plays.

- ``classify_sentences(sentences)``: offline; a small classifier over MiniLM sentence embeddings with
  context and the embedded SmolLM2's in-context sentence states (``lm_states``), trained by
  ``scripts/train_taxonomy.py`` on the published labels, shipped in ``anchorlens/data``;
  ``probabilities=True`` also returns per-category probabilities.
- ``label_sentences_with_model(model, sentences)``: prompts a language model you supply with the category
  definitions and two worked examples of each (the published labels came from gpt-4o).
"""

from anchorlens.taxonomy.categories import CATEGORY_DEFINITIONS, SENTENCE_CATEGORIES
from anchorlens.taxonomy.classifier import TaxonomyClassifier, classify_sentences
from anchorlens.taxonomy.llm_labeller import label_sentences_with_model

__all__ = [
    "CATEGORY_DEFINITIONS",
    "SENTENCE_CATEGORIES",
    "TaxonomyClassifier",
    "classify_sentences",
    "label_sentences_with_model",
]
