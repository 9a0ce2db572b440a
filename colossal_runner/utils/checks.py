"""Argument checks shared by the constructors that take user input."""
from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any, hint: str = '') -> int:
    """Return ``value`` when it is an int >= 1 (a bool is not accepted); else a ValueError.

    ``hint`` follows "positive int" in the message, e.g. `` (optimizer steps per epoch)``.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'{name} must be a positive int{hint}, got {value!r}')
    return value
