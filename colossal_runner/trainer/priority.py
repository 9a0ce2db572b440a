"""Hook priorities: a name from the table or an int in 0..100; lower runs first."""
from __future__ import annotations

from enum import IntEnum
from typing import Union


class Priority(IntEnum):
    """Named hook priorities. Hooks that write metrics default to higher priorities (smaller
    numbers) than hooks that read them, so a logger never reports last iteration's value."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


def _table() -> str:
    return ', '.join(f'{p.name}={p.value}' for p in Priority)


def get_priority(priority: Union[int, str, Priority]) -> int:
    """The int value of ``priority``; ValueError/TypeError with the table when it is not valid."""
    if isinstance(priority, Priority):
        return int(priority)
    if isinstance(priority, bool):
        raise TypeError(f'priority must be an int in 0..100 or a name ({_table()}), got the bool {priority}')
    if isinstance(priority, int):
        if not 0 <= priority <= 100:
            raise ValueError(f'priority must be in 0..100 (lower runs first), got {priority}. '
                             f'Named priorities: {_table()}.')
        return priority
    if isinstance(priority, str):
        try:
            return int(Priority[priority.upper()])
        except KeyError:
            raise ValueError(f'unknown priority name {priority!r}; expected one of {_table()}, '
                             f'or an int in 0..100') from None
    raise TypeError(f'priority must be an int in 0..100 or a name ({_table()}), '
                    f'got {type(priority).__name__}: {priority!r}')
