"""Start a forward at block ``k`` without computing blocks ``0..k-1``.

TransformerBridge's ``forward(residual, start_at_layer=k)`` injects a residual stream at block ``k`` but still
runs blocks ``0..k-1`` and discards their output. When the residual entering block ``k`` is already known
(the base run's, for every cell patched at layer ``k`` or later), those blocks are pure waste: this context
manager makes them return their input unchanged for its duration. Their KV-cache layers are then not
extended, which nothing reads: each layer's attention reads only its own layer of the cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def _identity_block(*args, **kwargs):
    hidden = args[0] if args else kwargs["hidden_states"]
    return hidden


@contextmanager
def skipped_blocks(model, n_blocks: int) -> Iterator[None]:
    """Blocks ``0..n_blocks-1`` of ``model`` return their input unchanged inside the ``with`` block."""
    blocks = list(model.blocks)[:n_blocks]
    for block in blocks:
        # an instance attribute, which nn.Module.__call__ finds first; set in __dict__ directly because a
        # bridge component's __setattr__ would forward `forward` to the wrapped Hugging Face module
        block.__dict__["forward"] = _identity_block
    try:
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
