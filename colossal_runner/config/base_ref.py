"""``{{ _base_.x }}``: a value of the config's ``_base_`` files, written as a whole value.

A reference is not valid Python, JSON or YAML as written, so before a file is parsed each
one becomes a placeholder that parses as a whole value: a name bound to a :class:`BaseRef`
(``.py``), a quoted string (``.json``) or a tagged scalar (``.yaml``). Once the bases are
loaded, every placeholder is swapped for a copy of the base value it names.

The base value is not known while the file is parsed, so a reference cannot be part of a
string (``'work_dirs/{{ _base_.model.type }}'``) or of an expression
(``{{ _base_.optimizer.lr }} * 2``). Both are errors naming the file, the key and the
reference, instead of leaving an internal placeholder in the config.
"""
from __future__ import annotations

import copy
import re
import traceback
import uuid
from typing import Any, Dict, List, Optional, Tuple

from .config_dict import closest_keys
from .errors import ConfigError, KeyPart

BASE_REF = re.compile(r'\{\{\s*_base_\.([\w.]+?)\s*\}\}')
YAML_TAG = '!colossal_runner_base_ref'

_WHOLE_VALUE = ('a {{ _base_.x }} reference must be a whole, unquoted value, e.g. '
                '`lr = {{ _base_.optimizer.lr }}`')


class BaseRefMisuse(TypeError):
    """A :class:`BaseRef` was computed with while its ``.py`` file ran."""

    def __init__(self, placeholder: str, operation: str) -> None:
        super().__init__(f'{placeholder} used in {operation}')
        self.placeholder = placeholder
        self.operation = operation


class BaseRef:
    """What ``{{ _base_.x }}`` is while its file is parsed; any use other than storing it raises."""

    __slots__ = ('placeholder',)

    def __init__(self, placeholder: str) -> None:
        self.placeholder = placeholder

    def __repr__(self) -> str:
        return f'BaseRef({self.placeholder!r})'

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') and name.endswith('__'):
            raise AttributeError(name)  # protocol probes (copy, pickle) answer plainly
        raise BaseRefMisuse(self.placeholder, f'an attribute access (.{name})')


def _refuse(operation: str):
    def method(self: BaseRef, *args: Any, **kwargs: Any) -> Any:
        raise BaseRefMisuse(self.placeholder, operation)
    return method


_OPERATIONS = {
    'arithmetic': ('add', 'radd', 'sub', 'rsub', 'mul', 'rmul', 'truediv', 'rtruediv', 'floordiv',
                   'rfloordiv', 'mod', 'rmod', 'pow', 'rpow', 'matmul', 'rmatmul', 'neg', 'pos', 'abs',
                   'invert', 'and', 'rand', 'or', 'ror', 'xor', 'rxor', 'lshift', 'rlshift', 'rshift',
                   'rrshift', 'round'),
    'a comparison': ('lt', 'le', 'gt', 'ge', 'eq', 'ne', 'bool'),
    'a conversion or formatting': ('str', 'format', 'int', 'float', 'complex', 'index'),
    'indexing or iteration': ('getitem', 'setitem', 'delitem', 'contains', 'iter', 'len'),
    'a call': ('call',),
}
for _operation, _names in _OPERATIONS.items():
    for _name in _names:
        setattr(BaseRef, f'__{_name}__', _refuse(_operation))
BaseRef.__hash__ = object.__hash__  # hashable by identity (a set member, a key), although == refuses


class BaseRefs:
    """The references of one file: swaps them for placeholders, and placeholders for values.

    Args:
        text: the file's text (after predefined variables).
        ext: its format, ``'.py'``, ``'.json'``, ``'.yaml'`` or ``'.yml'``.
        label: the file, for messages.
    """

    def __init__(self, text: str, ext: str, label: str) -> None:
        self.token = f'__base_ref_{uuid.uuid4().hex}_'  # unique: a base's placeholders never clash
        self.ext = ext
        self.label = label
        self.paths: Dict[str, str] = {}  # placeholder -> dotted path after _base_.
        self.text = BASE_REF.sub(self._placeholder, text)
        self._written = re.compile(f'(?:{re.escape(YAML_TAG)} )?("?)({re.escape(self.token)}\\d+__)\\1')

    def __bool__(self) -> bool:
        return bool(self.paths)

    def _placeholder(self, match: 're.Match[str]') -> str:
        placeholder = f'{self.token}{len(self.paths)}__'
        self.paths[placeholder] = match.group(1)
        if self.ext == '.py':
            return placeholder  # a name, bound to a BaseRef by namespace()
        if self.ext == '.json':
            return f'"{placeholder}"'
        return f'{YAML_TAG} {placeholder}'  # built into a BaseRef by the YAML loader

    def namespace(self) -> Dict[str, BaseRef]:
        """The names a ``.py`` file's placeholders stand for."""
        return {placeholder: BaseRef(placeholder) for placeholder in self.paths}

    def restore(self, text: str) -> str:
        """``text`` with its placeholders written back as ``{{ _base_.x }}`` (for messages)."""
        return self._written.sub(lambda m: f'{{{{ _base_.{self.paths.get(m.group(2), "?")} }}}}', text)

    def json_hint(self, line: str) -> str:
        """Why a JSON line with a placeholder in it does not parse."""
        if self.token not in line:
            return ''
        return (f' ({self.restore(line).strip()!r}: {_WHOLE_VALUE}, not part of a quoted string; write '
                f'the text out in full instead)')

    # ------------------------------------------------------------------ after parsing
    def resolve(self, value: Any, base: Dict[str, Any], path: Optional[List[KeyPart]] = None) -> Any:
        """``value`` with every reference swapped for a copy of the base value it names."""
        path = list(path or [])
        if isinstance(value, BaseRef):
            return self._lookup(value.placeholder, base, path)
        if isinstance(value, str):
            if self.ext == '.json' and value in self.paths:
                return self._lookup(value, base, path)
            if self.token in value:
                raise ConfigError(f'{self._names(value)} is part of a string '
                                  f'({self.restore(value)!r}); {_WHOLE_VALUE}, and is not substituted '
                                  f'inside text. Write the text out in full instead.', self.label, path)
            return value
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(key, BaseRef) or (isinstance(key, str) and self.token in key):
                    shown = key if isinstance(key, str) else key.placeholder
                    raise ConfigError(f'{self._names(shown)} is used as a key; {_WHOLE_VALUE}. Write '
                                      'the key out instead.', self.label, path)
                out[key] = self.resolve(item, base, path + [key])
            return out
        if type(value) in (list, tuple, set, frozenset):
            return type(value)(self.resolve(v, base, path + [i]) for i, v in enumerate(value))
        return value

    def _names(self, text: str) -> str:
        found = [self.paths.get(m.group(2), '?') for m in self._written.finditer(text)]
        return ', '.join(f'{{{{ _base_.{p} }}}}' for p in dict.fromkeys(found))

    def _lookup(self, placeholder: str, base: Dict[str, Any], path: List[KeyPart]) -> Any:
        if placeholder not in self.paths:  # the YAML tag written by hand
            raise ConfigError(f'{YAML_TAG} is internal to {{{{ _base_.x }}}} references; write '
                              f'{{{{ _base_.x }}}} instead.', self.label, path)
        ref = self.paths[placeholder]
        found, target = _lookup(base, ref)
        if not found:
            # suggest at the level where the lookup failed (_base_.optimzer.lr: 'optimizer')
            parts = ref.split('.')
            depth = next(i for i in range(len(parts)) if not _lookup(base, '.'.join(parts[:i + 1]))[0])
            parent = _lookup(base, '.'.join(parts[:depth]))[1] if depth else base
            close = closest_keys(parts[depth], list(parent)) if isinstance(parent, dict) else []
            shown = [repr(c) for c in close]
            if depth < len(parts) - 1:  # above the last level: the whole reference, mended, too
                shown = [f"{c!r} ({{{{ _base_.{'.'.join(parts[:depth] + [c] + parts[depth + 1:])} }}}})"
                         for c in close]
            hint = f" Did you mean {' or '.join(shown)}?" if close else ''
            raise ConfigError(f'{{{{ _base_.{ref} }}}} names a value that no _base_ file defines '
                              f'(top-level base keys: {", ".join(sorted(map(str, base))) or "none"}).{hint}',
                              self.label, path)
        return copy.deepcopy(target)

    def misuse_error(self, exc: BaseRefMisuse, text: str) -> ConfigError:
        """The error for a reference computed with while a ``.py`` file ran, at the line that did it."""
        lines = text.splitlines()
        lineno = next((frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
                       if frame.filename == self.label), None)
        line = lines[lineno - 1] if lineno and lineno <= len(lines) else ''
        assigned = re.match(r'\s*([A-Za-z_]\w*)\s*=(?!=)', line)
        where = f'line {lineno}: ' if lineno else ''
        shown = f' ({self.restore(line).strip()!r})' if line else ''
        return ConfigError(f'{where}{{{{ _base_.{self.paths.get(exc.placeholder, "?")} }}}} is used in '
                           f'{exc.operation}{shown}; {_WHOLE_VALUE}. It is replaced by the base value only '
                           f'after the file has run, so it cannot be computed with, compared, formatted '
                           f'into a string or indexed. Write the value out instead.',
                           self.label, assigned.group(1) if assigned else None)


def _lookup(data: Any, dotted: str) -> Tuple[bool, Any]:
    node = data
    for part in dotted.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node
