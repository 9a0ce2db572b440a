"""Writing a config back as Python source that loads to an equal config.

mmcv's ``pretty_text`` writes every dict as ``dict(k=v)``, which breaks on keys that are
not identifiers and on some strings. Here every value is written with ``repr``-safe literals
(strings through ``repr``, so quotes and newlines survive), dicts as ``dict(k=v)`` only when
every key can be a keyword argument and as ``{...}`` otherwise; yapf lays the result out.
"""
from __future__ import annotations

import enum
import inspect
import keyword
import math
import numbers
import sys
import unicodedata
from typing import Any, Dict, List, Optional, Tuple

from yapf.yapflib.yapf_api import FormatCode

from .errors import ConfigError, KeyPart, format_key_path

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


def format_value(value: Any, literal_dicts: bool = False, path: Optional[List[KeyPart]] = None,
                 unwritable: Optional[List[Tuple[str, Any]]] = None) -> str:
    """Python source for ``value``. ``literal_dicts`` forces ``{...}`` (no ``dict`` calls).

    A value that is not plain data (a class, a function, a tensor, ``torch.float32``) has no
    source that loads back, so it is a :class:`ConfigError` naming ``path``; with a list as
    ``unwritable`` it is written as a string naming it instead, and ``(key path, value)`` is
    appended to the list.
    """
    path = list(path or [])
    if isinstance(value, dict):
        items = list(value.items())
        if not literal_dicts and all(_is_kwarg(k) for k, _ in items):
            return 'dict(' + ', '.join(f'{k}={format_value(v, False, path + [k], unwritable)}'
                                       for k, v in items) + ')'
        return '{' + ', '.join(f'{format_value(k, literal_dicts, path + [k], unwritable)}: '
                               f'{format_value(v, literal_dicts, path + [k], unwritable)}'
                               for k, v in items) + '}'
    if isinstance(value, (list, set, frozenset)) or type(value) is tuple:  # not a namedtuple
        if isinstance(value, (set, frozenset)):
            try:
                ordered = sorted(value)
            except TypeError:
                ordered = list(value)
        else:
            ordered = list(value)
        inner = ', '.join(format_value(v, literal_dicts, path + [i], unwritable)
                          for i, v in enumerate(ordered))
        if isinstance(value, list):
            return f'[{inner}]'
        if isinstance(value, tuple):
            return f'({inner},)' if len(value) == 1 else f'({inner})'
        text = '{' + inner + '}' if inner else 'set()'
        return f'frozenset({text})' if isinstance(value, frozenset) else text
    if isinstance(value, str):
        # Escape the second brace of '{{' so that reloading cannot take the text for a
        # {{ _base_.x }} or {{ fileDirname }} substitution (\x7b is '{' to Python).
        # str.__str__: a (str, Enum) member's value, where str() gives its name ('Mode.A')
        return repr(str.__str__(value)).replace('{{', '{\\x7b')
    value = plain_number(value)  # numpy's bool_ too, which is not a number to the checks below
    if value is None or type(value) in (bool, bytes):
        return repr(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, enum.Enum)):
        # subclasses and registered types too (numpy's int64, float32), written as the plain
        # number they equal
        if isinstance(value, numbers.Integral):
            return int.__repr__(int(value))
        number = float(value)
        return float.__repr__(number) if math.isfinite(number) else f"float('{number}')"
    if type(value) in (complex, range):  # their repr is Python that loads back equal
        return repr(value)
    if unwritable is None:
        raise ConfigError(_unwritable_message(value), None, path)
    unwritable.append((format_key_path(path), value))
    return repr(describe(value))


def plain_number(value: Any, subclasses: bool = True) -> Any:
    """The plain ``bool`` / ``int`` / ``float`` that a numpy scalar (or, with ``subclasses``, a
    subclass of int or float) equals; any other value unchanged.

    ``lr = 0.1 * np.sqrt(2)`` is a ``numpy.float64``: it trains like a float, but it ends up in
    optimizer state that ``torch.load(weights_only=True)`` refuses, and YAML cannot write it.
    numpy's ``timedelta64`` and ``datetime64`` count as integers to numpy but are not numbers here.
    """
    if type(value) in (bool, int, float) or isinstance(value, enum.Enum):
        return value
    np = sys.modules.get('numpy')  # not imported: there are no numpy scalars to convert
    if np is not None and isinstance(value, np.generic):
        if isinstance(value, np.bool_):  # first: numpy's bool is no int
            return bool(value)
        if isinstance(value, np.integer) and not isinstance(value, np.timedelta64):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        return value
    if subclasses and isinstance(value, int):
        return int(value)
    if subclasses and isinstance(value, float):
        return float(value)
    return value


def plain_numbers(value: Any) -> Any:
    """``value`` with every numpy scalar inside dicts, lists, tuples and sets made the plain number it
    equals (:func:`plain_number`); user subclasses of int and float keep their type."""
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if type(value) in (list, tuple, set, frozenset):  # not a namedtuple
        return type(value)(plain_numbers(v) for v in value)
    return plain_number(value, subclasses=False)


def describe(value: Any) -> str:
    """``torch.nn.modules.loss.CrossEntropyLoss`` for a class or function, the repr otherwise."""
    name, module = getattr(value, '__qualname__', None), getattr(value, '__module__', None)
    if isinstance(name, str) and isinstance(module, str) and (inspect.isclass(value) or callable(value)):
        return f'{module}.{name}'
    return repr(value)


def _unwritable_message(value: Any) -> str:
    kind = 'class' if inspect.isclass(value) else 'function' if callable(value) else type(value).__name__
    name = getattr(value, '__name__', None)
    fix = (f'name it by the string a registry knows it by instead of the object (e.g. {name!r})'
           if callable(value) and isinstance(name, str) else 'replace it with plain data (e.g. a string)')
    return (f'a {kind} ({describe(value)}) has no config text: a written config holds plain data only '
            f'(str, numbers, bool, None, and lists, tuples, sets and dicts of them), and Python source for '
            f'it would not load back. To write the config, {fix}.')


def pretty_text(cfg: Dict[str, Any], filename: Optional[str] = None,
                unwritable: Optional[List[Tuple[str, Any]]] = None) -> str:
    """The config as a formatted ``.py`` file: one ``name = value`` line per top-level key.

    A value that is not plain data is a :class:`ConfigError` naming ``filename`` and its key
    path, unless ``unwritable`` is a list (see :func:`format_value`).
    """
    plain: List[str] = []
    special: Dict[Any, Any] = {}
    try:
        for key, value in cfg.items():
            if _is_kwarg(key) and key not in _NAMES_USED and not key.startswith('__'):
                plain.append(f'{key} = {format_value(value, path=[key], unwritable=unwritable)}')
            else:
                special[key] = value
        if special:
            plain.append(f'globals().update({format_value(special, True, unwritable=unwritable)})')
    except ConfigError as exc:
        raise ConfigError(exc.message, filename, exc.key_path) from None
    text = '\n'.join(plain) + '\n' if plain else ''
    formatted, _ = FormatCode(text, style_config=_YAPF_STYLE)
    return formatted

