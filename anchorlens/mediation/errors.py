"""Errors of causal mediation analysis; each says what to do."""

from anchorlens.errors import AnchorlensError


class MediationInputError(AnchorlensError):
    """Prompts, answers, components or positions that a mediation sweep cannot use."""


class UnequalLengthError(MediationInputError):
    """A base prompt and its counterfactual have different token lengths (cells would not line up)."""


class MultiTokenAnswerError(MediationInputError):
    """An answer is not exactly one token under the model's tokenizer."""


class UnknownComponentError(MediationInputError):
    """A component name that is not one of ``anchorlens.mediation.COMPONENTS``."""


class PositionError(MediationInputError):
    """A position outside the prompts' token range."""
