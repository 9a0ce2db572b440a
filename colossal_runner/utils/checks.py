"""Argument checks shared by the constructors that take user input."""
from __future__ import annotations

import operator
from typing import Any


def check_positive_int(name: str, value: Any, hint: str = '') -> int:
    """Return ``value`` as a plain int when it is an integral number >= 1; else a ValueError.

    Integral numbers are those ``operator.index`` takes: an int, or a NumPy integer (``np.int64``,
    what arithmetic on arrays gives); a bool is not accepted (``True`` is no count).
    Callers that keep the value keep the returned int, so that it saves and prints as one.
    ``hint`` follows "positive int" in the message, e.g. `` (optimizer steps per epoch)``.
    """
    number = None
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:  # a float (2.0 too), a str, None: not a count
            pass
    if number is None or number < 1:
        raise ValueError(f'{name} must be a positive int{hint}, got {value!r}')
    return number
