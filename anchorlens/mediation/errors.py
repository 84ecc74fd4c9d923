"""The names mediation analysis used for its errors, now ``anchorlens.errors.InputError`` (aliases for one release)."""

from anchorlens.errors import InputError


MediationInputError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError
UnequalLengthError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError
MultiTokenAnswerError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError
UnknownComponentError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError
PositionError = InputError  # deprecated alias (issue 30), removed in 0.3: use anchorlens.errors.InputError
