"""``DictAction``: argparse ``--cfg-options key=value ...`` into a dict for ``merge_from_dict``.

Values are parsed like mmcv's: ints (``1_000``), floats (``1e-3``), ``true``/``false`` in any
case, ``None``, lists ``[a,b]``, tuples ``(a,b)``, nesting, and a bare ``a,b`` as a list. Fixed
against mmcv: repeated flags accumulate, spaces inside values are kept, and a quoted item
(``'a, b'``) stays one string. ``ast.literal_eval`` cannot do this (``[a,b]`` holds bare
words), so the small parser below is hand-written.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

_CLOSE = {'[': ']', '(': ')'}


class _ParseError(ValueError):
    pass


def parse_scalar(text: str) -> Any:
    """``'1_000'`` -> 1000, ``'1e-3'`` -> 0.001, ``'TRUE'`` -> True, ``'None'`` -> None, else the text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    if text == 'None':
        return None
    return text


def _parse_items(text: str, pos: int, closer: Optional[str]) -> Tuple[List[Any], int, bool]:
    """Parse comma-separated items from ``pos`` up to ``closer`` (or the end).

    Returns the items, the position after the closer, and whether a comma was seen.
    """
    items: List[Any] = []
    saw_comma = False
    while True:
        item, pos = _parse_item(text, pos, closer)
        end = text[pos] if pos < len(text) else None
        if item is not _EMPTY:
            items.append(item)
        if end == ',':
            if item is _EMPTY:
                raise _ParseError(f'empty item before the comma at position {pos}')
            saw_comma = True
            pos += 1
            continue
        if closer is None:
            if end is not None:
                raise _ParseError(f'unexpected {end!r} at position {pos}')
            return items, pos, saw_comma
        if end is None:
            raise _ParseError(f'missing {closer!r}: the bracket is never closed')
        if end != closer:
            raise _ParseError(f'unexpected {end!r} at position {pos}: expected {closer!r}')
        return items, pos + 1, saw_comma


_EMPTY = object()


def _parse_item(text: str, pos: int, closer: Optional[str]) -> Tuple[Any, int]:
    """One item: a bracketed sequence, a quoted string, or a bare word; ``_EMPTY`` if nothing."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    start = pos
    if pos < len(text) and text[pos] in _CLOSE:
        opener = text[pos]
        items, pos, _ = _parse_items(text, pos + 1, _CLOSE[opener])
        value: Any = items if opener == '[' else tuple(items)
    elif pos < len(text) and text[pos] in '\'"':
        quote = text[pos]
        end = text.find(quote, pos + 1)
        if end < 0:
            raise _ParseError(f'missing closing {quote} for the string starting at position {pos}')
        value, pos = text[pos + 1:end], end + 1
    else:
        while pos < len(text) and text[pos] not in ',[]()':
            pos += 1
        word = text[start:pos].strip()
        if pos < len(text) and text[pos] in _CLOSE:
            raise _ParseError(f'unexpected {text[pos]!r} at position {pos}')
        return (parse_scalar(word) if word else _EMPTY), pos
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos < len(text) and text[pos] not in ',' + (closer or ''):
        raise _ParseError(f'unexpected {text[pos]!r} at position {pos} after {text[start:pos].strip()!r}')
    return value, pos


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``key=value``: a scalar, or a list/tuple (possibly nested)."""
    if not text.strip():
        return text.strip()
    items, _, saw_comma = _parse_items(text, 0, None)
    if len(items) == 1 and not saw_comma:
        return items[0]
    return items


class DictAction(argparse.Action):
    """argparse action collecting ``KEY=VALUE`` tokens into a dict.

    Example::

        parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                            help='override config values, e.g. optimizer.lr=0.05 hooks.0.interval=10')
        args = parser.parse_args()
        cfg.merge_from_dict(args.cfg_options)

    ``--cfg-options a=1 --cfg-options b=2`` gives ``{'a': 1, 'b': 2}`` (later tokens win per key).
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Union[str, Sequence[Any], None], option_string: Optional[str] = None) -> None:
        current = getattr(namespace, self.dest, None)
        options: Dict[str, Any] = dict(current) if isinstance(current, dict) else {}
        if values is None:
            values = []
        elif isinstance(values, str):
            values = [values]
        for token in values:
            key, sep, raw = str(token).partition('=')
            key = key.strip()
            if not sep or not key:
                raise argparse.ArgumentError(
                    self, f'invalid token {token!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01 '
                          f'(quote the whole token if the value has spaces)')
            try:
                options[key] = parse_value(raw)
            except _ParseError as exc:
                raise argparse.ArgumentError(self, f'cannot parse the value of {token!r}: {exc}') from None
        setattr(namespace, self.dest, options)
