"""When two sentences count as similar (docs/methods.md 1.3: all-MiniLM-L6-v2 cosine similarity >= 0.8).

The published metrics call a resampled sentence "similar" to the sentence it replaced when the cosine
similarity of their all-MiniLM-L6-v2 embeddings is at least 0.8. The embedder itself lives in
``anchorlens.embeddings`` (the taxonomy uses it too); its names are re-exported here for existing imports.
"""

from __future__ import annotations

from anchorlens.embeddings import (  # noqa: F401 (re-exported)
    Embedder,
    MiniLMEmbedder,
    cosine_similarity,
    default_embedder,
    embed_unique,
    minilm_dir,
)

SIMILARITY_THRESHOLD = 0.8  # the reference's cut between "similar" and "dissimilar" sentences
