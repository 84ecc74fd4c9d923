"""The report's error, in a leaf module so that the figures need not import the data module that plots them."""

from __future__ import annotations

from anchorlens.errors import AnchorlensError


class ReportDataError(AnchorlensError):
    """Data handed to the report does not fit its trace (wrong length, shape or label)."""
