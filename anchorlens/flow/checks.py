"""Checks shared by the information flow modules (a leaf, so that routes need not import information_flow)."""

from __future__ import annotations

from anchorlens.errors import InputError

DEFAULT_THRESHOLD = 0.04  # the reference tool's default route threshold


class FlowFallbackWarning(UserWarning):
    """Sentence flow computed from the token-level flow (quadratic memory) where the bounded one cannot run."""


FlowInputError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError


def check_threshold(threshold: float) -> float:
    if not 0.0 < float(threshold) < 1.0:
        raise FlowInputError(f"threshold must lie strictly between 0 and 1 (the reference uses 0.04), got {threshold}")
    return float(threshold)
