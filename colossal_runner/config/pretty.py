"""Writing a config back as Python source that loads to an equal config.

mmcv's ``pretty_text`` writes every dict as ``dict(k=v)``, which breaks on keys that are
not identifiers and on some strings. Here every value is written with ``repr``-safe literals
(strings through ``repr``, so quotes and newlines survive), dicts as ``dict(k=v)`` only when
every key can be a keyword argument and as ``{...}`` otherwise; yapf lays the result out.
"""
from __future__ import annotations

import keyword
import math
import unicodedata
from typing import Any, Dict, List

from yapf.yapflib.yapf_api import FormatCode

_YAPF_STYLE = dict(based_on_style='pep8', column_limit=100, blank_line_before_nested_class_or_def=True,
                   split_before_expression_after_opening_paren=True)

# Names the generated text calls. A top-level key that shadows one of them (or is not a valid
# variable name at all) is written last, through globals(), so it cannot break the other lines.
_NAMES_USED = frozenset({'dict', 'float', 'set', 'frozenset', 'globals'})


def _is_kwarg(key: Any) -> bool:
    # Python NFKC-normalises identifiers ('ª = 1' defines 'a'), and yapf's tokenizer rejects
    # some non-ASCII identifier characters ('A·'), so only ASCII names are written bare.
    return (isinstance(key, str) and key.isascii() and key.isidentifier()
            and not keyword.iskeyword(key) and unicodedata.normalize('NFKC', key) == key)


def format_value(value: Any, literal_dicts: bool = False) -> str:
    """Python source for ``value``. ``literal_dicts`` forces ``{...}`` (no ``dict`` calls)."""
    if isinstance(value, dict):
        items = list(value.items())
        if not literal_dicts and all(_is_kwarg(k) for k, _ in items):
            return 'dict(' + ', '.join(f'{k}={format_value(v)}' for k, v in items) + ')'
        return '{' + ', '.join(f'{format_value(k, literal_dicts)}: {format_value(v, literal_dicts)}'
                               for k, v in items) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(format_value(v, literal_dicts) for v in value) + ']'
    if isinstance(value, tuple) and type(value) is tuple:
        inner = ', '.join(format_value(v, literal_dicts) for v in value)
        return f'({inner},)' if len(value) == 1 else f'({inner})'
    if isinstance(value, (set, frozenset)):
        try:
            ordered = sorted(value)
        except TypeError:
            ordered = list(value)
        inner = ', '.join(format_value(v, literal_dicts) for v in ordered)
        text = '{' + inner + '}' if inner else 'set()'
        return f'frozenset({text})' if isinstance(value, frozenset) else text
    if isinstance(value, str):
        # Escape the second brace of '{{' so that reloading cannot take the text for a
        # {{ _base_.x }} or {{ fileDirname }} substitution (\x7b is '{' to Python).
        return repr(value).replace('{{', '{\\x7b')
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    # str, bytes, int, float, bool, None: repr is valid source. Other objects (classes,
    # functions, tensors) fall back to repr too and cannot load back; configs hold plain data.
    return repr(value)


def pretty_text(cfg: Dict[str, Any]) -> str:
    """The config as a formatted ``.py`` file: one ``name = value`` line per top-level key."""
    plain: List[str] = []
    special: Dict[Any, Any] = {}
    for key, value in cfg.items():
        if _is_kwarg(key) and key not in _NAMES_USED and not key.startswith('__'):
            plain.append(f'{key} = {format_value(value)}')
        else:
            special[key] = value
    if special:
        plain.append(f'globals().update({format_value(special, literal_dicts=True)})')
    text = '\n'.join(plain) + '\n' if plain else ''
    formatted, _ = FormatCode(text, style_config=_YAPF_STYLE)
    return formatted

