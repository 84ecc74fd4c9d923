"""Checks shared by the information flow modules (a leaf, so that routes need not import information_flow)."""

from __future__ import annotations

from anchorlens.errors import AnchorlensError

DEFAULT_THRESHOLD = 0.04  # the reference tool's default route threshold


class FlowFallbackWarning(UserWarning):
    """Sentence flow computed from the token-level flow (quadratic memory) where the bounded one cannot run."""


class FlowInputError(AnchorlensError):
    """Bad input to information flow: empty text, a position or layer out of range, a threshold outside (0, 1)."""


def check_threshold(threshold: float) -> float:
    if not 0.0 < float(threshold) < 1.0:
        raise FlowInputError(f"threshold must lie strictly between 0 and 1 (the reference uses 0.04), got {threshold}")
    return float(threshold)
