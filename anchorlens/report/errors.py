"""The report's error, in a leaf module so that the figures need not import the data module that plots them."""

from __future__ import annotations

from anchorlens.errors import InputError


ReportDataError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError
