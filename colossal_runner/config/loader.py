"""Reading config files: formats, ``_base_`` inheritance, ``{{ }}`` substitutions, merging.

Kept apart from :class:`~colossal_runner.config.Config` so the class stays a thin container.
A ``.py`` config is *executed* as Python (it is code, like a setup.py); ``.json`` and
``.yaml``/``.yml`` are parsed with safe loaders. Files are always read as UTF-8.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import traceback
import types
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .base_ref import BaseRefMisuse, BaseRefs
from .config_dict import ConfigDict
from .errors import ConfigError, KeyPart, format_key_path
from .pretty import plain_numbers
from .yaml_io import load_yaml

SUPPORTED_EXTENSIONS = ('.py', '.json', '.yaml', '.yml')
BASE_KEY = '_base_'
DELETE_KEY = '_delete_'
RESERVED_KEYS = ('filename', 'text', 'pretty_text')


def check_extension(ext: str, what: str) -> str:
    """Normalise ``'py'``/``'.py'`` and reject formats we cannot read."""
    ext = ext.lower()
    if ext and not ext.startswith('.'):
        ext = '.' + ext
    if ext not in SUPPORTED_EXTENSIONS:
        raise ConfigError(f'unsupported config format {ext or "(no extension)"!r} for {what}; expected one '
                          f'of {", ".join(SUPPORTED_EXTENSIONS)}. Rename the file or convert it.')
    return ext


def check_reserved_keys(cfg: Dict[str, Any], filename: Optional[str]) -> None:
    """Top-level keys that would be hidden by ``Config`` properties are refused."""
    for key in RESERVED_KEYS:
        if key in cfg:
            raise ConfigError(f'{key!r} is a reserved name (Config has a property of that name, so the '
                              f'value could never be read); rename the key.', filename, [key])


def substitute_predefined(text: str, filename: str) -> str:
    """Replace ``{{ fileDirname }}`` and friends with parts of the config's own path."""
    dirname = osp.dirname(filename)
    basename = osp.basename(filename)
    stem, ext = osp.splitext(basename)
    values = dict(fileDirname=dirname, fileBasename=basename, fileBasenameNoExtension=stem,
                  fileExtname=ext)
    for name, value in values.items():
        # Forward slashes keep Windows paths valid inside Python/JSON/YAML string literals.
        text = re.sub(r'\{\{\s*' + name + r'\s*\}\}', lambda _m, v=value: v.replace('\\', '/'), text)
    return text


def _parse_text(text: str, ext: str, filename: str, refs: BaseRefs) -> Dict[str, Any]:
    """Turn the text of one file (after substitutions) into a plain dict."""
    if ext == '.py':
        # compile() with the real path: a SyntaxError names file and line, tracebacks show the source.
        code = compile(text, filename, 'exec')
        namespace: Dict[str, Any] = {'__file__': filename, '__name__': '__colossal_config__',
                                     **refs.namespace()}
        try:
            exec(code, namespace)
        except BaseRefMisuse as exc:
            raise refs.misuse_error(exc, text) from None
        except Exception as exc:
            exc.add_note(f'raised while executing config {filename}{_config_line(exc, text, filename, refs)}')
            hint = _mmengine_base_hint(exc, namespace)
            if hint:
                exc.add_note(hint)
            raise
        skip = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
        # numpy scalars become the plain numbers they equal, as pretty_text writes them: the merged
        # config shows what ran, and optimizer state holding them saves and loads like any float
        return {k: plain_numbers(v) for k, v in namespace.items()
                if not k.startswith('__') and not isinstance(v, skip)}
    if ext == '.json':
        def no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
            out: Dict[str, Any] = {}
            for k, v in pairs:
                if k in out:
                    raise ConfigError(f'key {k!r} appears twice in one JSON object; keep one.', filename)
                out[k] = v
            return out
        try:
            data = json.loads(text, object_pairs_hook=no_duplicates)
        except json.JSONDecodeError as exc:
            lines = text.splitlines()
            line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ''
            raise ConfigError(f'invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}'
                              f'{refs.json_hint(line)}', filename) from exc
    else:
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, 'problem_mark', None)
            where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
            problem = getattr(exc, 'problem', None) or str(exc)
            raise ConfigError(f'invalid YAML{where}: {problem}', filename) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f'the top level must be a mapping of names to values, got a '
                          f'{type(data).__name__}.', filename)
    return data


def _config_line(exc: BaseException, text: str, filename: str, refs: BaseRefs) -> str:
    """``, line 3: b = 1 / 0``: the config's own line that raised (the deepest, for a function the
    config defines), so that an error from a call deep in a library still points into the file."""
    linenos = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
               if frame.filename == filename]
    lines = text.splitlines()
    if not linenos or not linenos[-1] or linenos[-1] > len(lines):
        return ''
    return f', line {linenos[-1]}: {refs.restore(lines[linenos[-1] - 1]).strip()}'


def _mmengine_base_hint(exc: BaseException, namespace: Dict[str, Any]) -> str:
    """A hint for mmengine's ``model = _base_.model``: here ``_base_`` is only the list of paths."""
    if not isinstance(exc, AttributeError) or BASE_KEY not in namespace:
        return ''
    if getattr(exc, 'obj', None) is not namespace[BASE_KEY]:  # AttributeError.obj: Python 3.10+
        return ''
    name = getattr(exc, 'name', None) or 'x'
    return (f'{BASE_KEY} is the list of base files here, not their values (mmengine\'s '
            f'`{BASE_KEY}.{name}` is not supported): write {{{{ {BASE_KEY}.{name} }}}} for a base value as '
            f'a whole, or only the keys that change, e.g. {name} = dict(key=new_value), which merges '
            f'into the base\'s {name}')


def load_text(text: str, ext: str, filename: Optional[str], use_predefined_variables: bool,
              chain: Sequence[str] = (),
              origins: Optional[Dict[str, Tuple[List[str], List[str]]]] = None
              ) -> Tuple[Dict[str, Any], str]:
    """Load a config from its text, resolving its ``_base_`` files.

    ``filename`` (absolute) locates relative bases and names the file in messages; ``None``
    for text that has no file (``Config.fromstring``), whose bases are relative to the
    working directory. ``chain`` is the files being loaded above this one (cycle check).
    ``origins``, if given, receives for each key two lists of the files it comes through, from
    this one: to the first that sets it, and to the deepest base that has it (for messages: two
    bases whose deepest file is the same are a diamond, whatever they set on the way). Returns
    the merged dict and the combined text of all files (bases first).
    """
    label = filename or '<string>'
    source = text
    if re.search(r'\{\{\s*[\'"]?\s*\$\w', text):
        warnings.warn(f'config {label}: mmengine\'s {{{{$NAME:default}}}} environment-variable syntax is '
                      f'not supported and is left as written; in a .py config use '
                      f"os.environ.get('NAME', 'default') instead.", stacklevel=3)
    if filename is not None and use_predefined_variables:
        text = substitute_predefined(text, filename)
    refs = BaseRefs(text, ext, label)  # `{{ _base_.a.b }}` -> placeholders, swapped once bases are loaded
    own = _parse_text(refs.text, ext, label, refs)

    base_dir = osp.dirname(filename) if filename else os.getcwd()
    base_origins: Dict[str, Tuple[List[str], List[str]]] = {}
    base_dict, base_texts = _load_bases(own.pop(BASE_KEY, None), base_dir, label, use_predefined_variables,
                                        list(chain) + [label], base_origins)
    own = refs.resolve(own, base_dict)
    merged = merge_into(own, base_dict, label, allow_list_keys=False, in_file=True)
    if origins is not None:
        for key in merged:
            first, deepest = base_origins.get(key, ([], []))
            origins[key] = ([label] + ([] if key in own else first), [label] + deepest)
    header = f'# {label}\n'
    return merged, ''.join(base_texts) + header + source + ('' if source.endswith('\n') else '\n')


def _load_bases(bases: Any, base_dir: str, label: str, use_predefined_variables: bool,
                chain: List[str],
                origins: Dict[str, Tuple[List[str], List[str]]]) -> Tuple[Dict[str, Any], List[str]]:
    if bases is None:
        return {}, []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f'_base_ must be a path or a list of paths (relative to the config), got '
                          f'{bases!r}.', label, [BASE_KEY])
    merged: Dict[str, Any] = {}
    texts: List[str] = []
    seen: List[str] = []
    for base in bases:
        path = osp.abspath(osp.join(base_dir, osp.expanduser(base)))
        if path in seen:  # else its keys would be reported as defined in two bases
            raise ConfigError(f'_base_ lists the file {path} twice ({base!r}); list each base file once.',
                              label, [BASE_KEY])
        seen.append(path)
        if path in chain:
            cycle = ' -> '.join(chain[chain.index(path):] + [path])
            raise ConfigError(f'_base_ files form a cycle: {cycle}. Remove one of these _base_ entries.',
                              label, [BASE_KEY])
        if not osp.isfile(path):
            raise FileNotFoundError(f'config {label}: _base_ file {base!r} not found (looked for {path}).')
        ext = check_extension(osp.splitext(path)[1], f'_base_ file {path}')
        with open(path, encoding='utf-8-sig') as f:  # -sig: tolerate an editor's BOM
            base_text = f.read()
        found: Dict[str, Tuple[List[str], List[str]]] = {}
        base_cfg, base_text = load_text(base_text, ext, path, use_predefined_variables, chain, found)
        for key in base_cfg:
            if key in merged:
                raise _two_bases_error(key, origins[key], found[key], label)
            origins[key] = found[key]
            merged[key] = base_cfg[key]
        texts.append(base_text)
    return merged, texts


def _two_bases_error(key: str, one: Tuple[List[str], List[str]], other: Tuple[List[str], List[str]],
                     label: str) -> ConfigError:
    """A key that two bases bring; ``one``/``other``: the files it comes through, base first (to
    the first file that sets it, and to the deepest one that has it)."""
    if one[1][-1] == other[1][-1]:  # a diamond: both bases inherit the file that defines it
        first, second = one[1], other[1]
        if one[0][-1] != first[-1] and other[0][-1] != second[-1]:  # and both set it on the way
            return ConfigError(f'{key!r} is set in both {one[0][-1]} and {other[0][-1]}, which also both '
                               f'bring it in from {first[-1]} ({" -> ".join(first)} and '
                               f'{" -> ".join(second)}); a key may come from only one base. Set it in one of '
                               f'them, and let only one of {first[0]} and {second[0]} inherit {first[-1]}.',
                               label, [key])
        return ConfigError(f'{key!r} is defined in {first[-1]}, which two _base_ files bring in: '
                           f'{" -> ".join(first)} and {" -> ".join(second)}; a key may come from only one '
                           f'base. Let only one of {first[0]} and {second[0]} inherit {first[-1]}.',
                           label, [key])
    first, second = one[0], other[0]
    via = [f' (through {" -> ".join(p)})' if len(p) > 1 else '' for p in (first, second)]
    return ConfigError(f'{key!r} is defined in two _base_ files, {first[-1]}{via[0]} and '
                       f'{second[-1]}{via[1]}; a key may come from only one base. Remove it from one of '
                       f'them.', label, [key])


def _strip_delete(value: Any) -> Any:
    """Drop ``_delete_`` flags from a value that is being set as a whole."""
    if isinstance(value, dict):
        return ConfigDict({k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY})
    if type(value) in (list, tuple):
        return type(value)(_strip_delete(v) for v in value)
    return value


def merge_into(child: Dict[str, Any], base: Any, label: Optional[str], allow_list_keys: bool,
               path: Optional[List[KeyPart]] = None, in_file: bool = False) -> Any:
    """Merge ``child`` onto ``base`` and return the result (``base`` itself is left unchanged).

    Dicts merge key by key; anything else replaces the base value; ``_delete_=True`` in a
    child dict replaces the base dict instead of merging. With ``allow_list_keys``, digit
    keys index into a base list or tuple (``hooks.0.interval`` on the command line).
    ``in_file``: ``child`` is a config file over its bases (for messages: a file cannot index).
    """
    path = list(path or [])
    if isinstance(base, (list, tuple)):
        items = list(base)
        for key, value in child.items():
            if key == DELETE_KEY:
                continue
            if isinstance(key, str) and re.fullmatch(r'-\d+', key):
                if int(key) + len(items) < 0:
                    raise ConfigError(f'index {key} is out of range: the {type(base).__name__} has '
                                      f'{len(items)} items.', label, path + [key])
                dotted = '.'.join(map(str, path + [int(key) + len(items)]))
                raise ConfigError(f'negative indexes are not supported; this {type(base).__name__} has '
                                  f'{len(items)} items, so item {key} is {dotted!r} (indexes count from 0).',
                                  label, path + [key])
            if not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
                index_like = isinstance(key, str) and re.fullmatch(r'\s*\+?\d+\s*', key)  # '+1', ' 1'
                # an index written oddly is meant as that index; a name is meant inside an item
                example = path + [int(key.strip())] if index_like else path + [0, key]
                dotted = '.'.join(map(str, example))
                how = 'an index is plain digits' if index_like else 'its items are addressed by index'
                raise ConfigError(f'this is a {type(base).__name__}, so {how} (e.g. {dotted!r}); got key '
                                  f'{key!r}.', label, path + [key])
            index = int(key)
            if index >= len(items):
                raise ConfigError(f'index {index} is out of range: the {type(base).__name__} has '
                                  f'{len(items)} items.', label, path + [index])
            items[index] = _merge_value(value, items[index], label, allow_list_keys, path + [index], in_file)
        return type(base)(items) if type(base) in (list, tuple) else items
    out = ConfigDict()
    for key, value in base.items():
        dict.__setitem__(out, key, value)
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        out[key] = _merge_value(value, out.get(key, _MISSING), label, allow_list_keys, path + [key],
                                in_file)
    return out


_MISSING = object()


class DottedKeys(dict):
    """The dict a dotted option (``a.b=1``) makes for ``a``: a change below ``a``, not a new value of
    it (messages say so when ``a`` turns out to be a plain value)."""


def _kind(value: Any) -> str:
    """``a number``, ``a string``, ...: what a plain config value is, in words."""
    if isinstance(value, bool):
        return 'True or False'
    if isinstance(value, (int, float)):
        return 'a number'
    return 'a string' if isinstance(value, str) else f'a {type(value).__name__}'


def _merge_value(value: Any, old: Any, label: Optional[str], allow_list_keys: bool,
                 path: List[KeyPart], in_file: bool = False) -> Any:
    if not isinstance(value, dict) or old is _MISSING or old is None or value.get(DELETE_KEY, False):
        return _strip_delete(value)
    mergeable = (dict, list, tuple) if allow_list_keys else (dict,)
    if not isinstance(old, mergeable):
        kind = type(old).__name__
        if in_file and isinstance(old, (list, tuple)):
            # _delete_ would make it a dict, and a file has no list keys: the only fix is the whole list
            raise ConfigError(f'a dict cannot be merged into the base {kind} {old!r}: a config file cannot '
                              f'change single items of a base {kind}; write the whole {kind} here, with '
                              f'the items changed.', label, path)
        if isinstance(value, DottedKeys) and not isinstance(old, (list, tuple)):
            # --cfg-options clip_grad_norm.max_norm=35: a dotted key below a plain value, where
            # _delete_ (the way to swap a value for a dict one gives whole) is no help
            key = format_key_path(path)
            leaves = [v for k, v in value.items() if k != DELETE_KEY]
            example = leaves[0] if len(leaves) == 1 and not isinstance(leaves[0], dict) else old
            raise ConfigError(f'{key} is {_kind(old)} ({old!r}), not a dict, so it has no '
                              f'{", ".join(map(repr, value))} to set: set it directly, e.g. '
                              f'{key}={example!r}.', label, path)
        hint = ' (or allow list keys to index into it)' if isinstance(old, (list, tuple)) else ''
        raise ConfigError(f'a dict cannot be merged into the existing {kind} value {old!r}; '
                          f'add {DELETE_KEY}=True to the dict to replace it{hint}.', label, path)
    return merge_into(value, old, label, allow_list_keys, path, in_file)
