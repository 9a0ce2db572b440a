"""``Config``: a config file loaded into attribute-accessible dicts (mmcv 1.x public API).

Users coming from mmcv keep their habits: ``Config.fromfile``, ``_base_``, ``_delete_``,
``{{ _base_.x }}``, ``merge_from_dict`` for ``--cfg-options``, ``pretty_text``, ``dump``.
Differences are fixes: missing keys raise and suggest the closest ones, ``_base_`` cycles are
reported instead of recursing forever, ``pretty_text`` always loads back, files are UTF-8.
"""
from __future__ import annotations

import copy
import importlib
import json
import os
import os.path as osp
import sys
import warnings
from typing import Any, Dict, Iterator, List, Optional, Union

from .config_dict import ConfigDict
from .errors import ConfigError, KeyPart
from .loader import (RESERVED_KEYS, DottedKeys, check_extension, check_reserved_keys, load_text, merge_into)
from .pretty import plain_number
from .pretty import pretty_text as _pretty_text
from .yaml_io import dump_yaml


class Config:
    """A loaded config: attribute and item access to its values, plus where it came from.

    Args:
        cfg_dict: the values (a dict; nested dicts become :class:`ConfigDict` s).
        cfg_text: the source text, shown by :attr:`text`; read from ``filename`` if omitted.
        filename: the file the config came from, if any.

    Example::

        cfg = Config.fromfile('configs/digits/mlp.py')
        cfg.optimizer.lr            # attribute access
        cfg['optimizer']['lr']      # item access
        cfg.merge_from_dict({'optimizer.lr': 0.05, 'hooks.0.interval': 10})
        print(cfg.pretty_text)
    """

    def __init__(self, cfg_dict: Optional[Dict[str, Any]] = None, cfg_text: Optional[str] = None,
                 filename: Optional[str] = None) -> None:
        if cfg_dict is None:
            cfg_dict = {}
        elif not isinstance(cfg_dict, dict):
            raise TypeError(f'cfg_dict must be a dict, got {type(cfg_dict).__name__}: {cfg_dict!r}.')
        check_reserved_keys(cfg_dict, filename)
        filename = str(filename) if filename is not None else None
        if cfg_text is None:
            if filename is not None and osp.isfile(filename):
                with open(filename, encoding='utf-8-sig') as f:
                    cfg_text = f.read()
            else:
                cfg_text = ''
        super().__setattr__('_cfg_dict', ConfigDict(cfg_dict))
        super().__setattr__('_filename', filename)
        super().__setattr__('_text', cfg_text)
        # the format given to fromstring (dump()'s without a file); mangled, so that a config's own
        # `_format = ...` stays reachable as cfg._format
        super().__setattr__('_Config__text_format', None)

    # ------------------------------------------------------------------ loading
    @staticmethod
    def fromfile(filename: Union[str, 'os.PathLike[str]'], use_predefined_variables: bool = True,
                 import_custom_modules: bool = True) -> 'Config':
        """Load a ``.py``/``.json``/``.yaml``/``.yml`` file and its ``_base_`` files.

        A ``.py`` config is executed as Python: only load configs you trust.
        ``use_predefined_variables`` substitutes ``{{ fileDirname }}``, ``{{ fileBasename }}``,
        ``{{ fileBasenameNoExtension }}`` and ``{{ fileExtname }}``; ``import_custom_modules``
        imports what ``custom_imports`` names (so their classes register themselves).
        """
        path = osp.abspath(osp.expanduser(str(filename)))
        if not osp.isfile(path):
            raise FileNotFoundError(f'config file not found: {filename} (looked for {path}).')
        ext = check_extension(osp.splitext(path)[1], f'config file {path}')
        with open(path, encoding='utf-8-sig') as f:  # -sig: tolerate an editor's BOM
            text = f.read()
        cfg_dict, cfg_text = load_text(text, ext, path, use_predefined_variables)
        check_reserved_keys(cfg_dict, path)
        if import_custom_modules and cfg_dict.get('custom_imports'):
            import_custom(cfg_dict['custom_imports'], path)
        return Config(cfg_dict, cfg_text=cfg_text, filename=path)

    @staticmethod
    def fromstring(cfg_str: str, file_format: str) -> 'Config':
        """Load a config from text in the given format (``'.py'``, ``'.json'``, ``'.yaml'``, ``'.yml'``).

        ``_base_`` paths are relative to the working directory; predefined variables are
        left as written (there is no file). ``custom_imports`` is not imported.
        """
        if not isinstance(cfg_str, str):
            raise TypeError(f'cfg_str must be a str, got {type(cfg_str).__name__}.')
        ext = check_extension(file_format, 'Config.fromstring')
        if ext != '.py' and 'dict(' in cfg_str:
            warnings.warn(f'file_format is {ext!r} but the text contains "dict(": is it a .py config?',
                          stacklevel=2)
        cfg_dict, _ = load_text(cfg_str, ext, None, use_predefined_variables=False)
        check_reserved_keys(cfg_dict, None)
        cfg = Config(cfg_dict, cfg_text=cfg_str)
        super(Config, cfg).__setattr__('_Config__text_format', ext)
        return cfg

    # ------------------------------------------------------------------ properties
    @property
    def filename(self) -> Optional[str]:
        """The absolute path the config was loaded from (``None`` if it was not)."""
        return self._filename

    @property
    def text(self) -> str:
        """The source text: each ``_base_`` file, then the config itself, each under a ``# path`` line."""
        return self._text

    @property
    def pretty_text(self) -> str:
        """The merged config as formatted ``.py`` source that ``fromfile`` loads back to an equal config.

        A value that is not plain data (a class, a function, a tensor) is a ConfigError naming its key.
        """
        return _pretty_text(self._cfg_dict, self.filename)

    def to_dict(self) -> Dict[str, Any]:
        """The values as plain nested dicts (a copy), inside lists and tuples too."""
        return copy.deepcopy(_plain_dicts(self._cfg_dict))

    # ------------------------------------------------------------------ writing
    def dump(self, file: Optional[Union[str, 'os.PathLike[str]']] = None) -> Optional[str]:
        """Write the config to ``file`` in the format its extension names, or return it as text.

        Without ``file`` the text is in the format of :attr:`filename`, or the one given to
        :meth:`fromstring` (``.py`` when there is neither). ``.json`` and ``.yaml`` hold plain
        data only: tuples are written as lists.
        """
        if file is None:
            ext = osp.splitext(self.filename)[1].lower() if self.filename else (self.__text_format or '.py')
            return self._dump_text(ext if ext in ('.json', '.yaml', '.yml') else '.py')
        ext = check_extension(osp.splitext(str(file))[1], f'dump target {file}')
        text = self._dump_text(ext)
        with open(file, 'w', encoding='utf-8') as f:
            f.write(text)
        return None

    def _dump_text(self, ext: str) -> str:
        if ext == '.py':
            return self.pretty_text
        data = _plain_data(self._cfg_dict, [], self.filename, str_keys=ext == '.json')
        if ext == '.json':
            # '{{' only occurs inside JSON strings; escaping it keeps reloads from substituting it.
            return json.dumps(data, indent=4, ensure_ascii=False).replace('{{', '{\\u007b') + '\n'
        return dump_yaml(data)

    # ------------------------------------------------------------------ merging
    def merge_from_dict(self, options: Dict[str, Any], allow_list_keys: bool = True) -> None:
        """Merge ``{'optimizer.lr': 0.05, 'hooks.0.interval': 10}`` (what ``--cfg-options`` gives).

        Dotted keys reach into nested dicts (new keys are created); with ``allow_list_keys`` a
        digit part indexes into a list. A dict value merges into the existing dict unless it
        holds ``_delete_=True``, in which case it replaces it. A key and dotted keys beneath it
        (``'optimizer'`` and ``'optimizer.lr'``) combine the same way in any order: the whole
        value first, then the dotted keys on top; a dotted key beneath a value that is not a
        dict (``'a': 1`` and ``'a.b': 2``) is an error naming both.
        """
        if not isinstance(options, dict):
            raise TypeError(f'options must be a dict of dotted keys to values, got {type(options).__name__}.')
        for full_key in options:
            if not isinstance(full_key, str) or not full_key or any(not p for p in full_key.split('.')):
                raise ConfigError(f'invalid option key {full_key!r}: expected dotted names like '
                                  f"'optimizer.lr' or 'hooks.0.interval'.", self.filename)
        nested: Dict[str, Any] = {}
        # Shallower keys first, so the order of the options does not matter: a whole value
        # ('optimizer': dict(type='SGD')) is set before the dotted keys beneath it
        # ('optimizer.lr': 0.1) change it, whichever of the two was given first.
        for full_key in sorted(options, key=lambda k: k.count('.')):
            parts = full_key.split('.')
            node = nested
            for depth, part in enumerate(parts[:-1]):
                node = node.setdefault(part, DottedKeys())
                if not isinstance(node, dict):
                    other = next(key for key in ('.'.join(parts[:i]) for i in range(depth + 1, 0, -1))
                                 if key in options)  # the option whose value holds this one
                    raise ConfigError(f'options {other!r} and {full_key!r} conflict: {other!r} sets '
                                      f"{'.'.join(parts[:depth + 1])} to {node!r}, which {full_key!r} cannot "
                                      f'reach into. Give only one of them (or write the change into the '
                                      f'value of {other!r}).',
                                      self.filename, full_key)
            node[parts[-1]] = copy.deepcopy(options[full_key])
        check_reserved_keys(nested, self.filename)
        merged = merge_into(nested, self._cfg_dict, self.filename, allow_list_keys)
        super().__setattr__('_cfg_dict', ConfigDict(merged))

    # ------------------------------------------------------------------ dict protocol
    def __getattr__(self, name: str) -> Any:
        if name == '_cfg_dict' or (name.startswith('__') and name.endswith('__')):
            raise AttributeError(name)  # not set up yet (e.g. mid-unpickling) or a protocol probe
        return getattr(self._cfg_dict, name)

    def __getitem__(self, name: Any) -> Any:
        return self._cfg_dict[name]

    def __setattr__(self, name: str, value: Any) -> None:
        self.__setitem__(name, value)

    def __setitem__(self, name: Any, value: Any) -> None:
        if name in RESERVED_KEYS:
            raise ConfigError(f'{name!r} is a reserved name (a read-only Config property); use another key.',
                              self.filename, [name])
        self._cfg_dict[name] = value

    def setdefault(self, name: Any, default: Any = None) -> Any:
        """``cfg[name]``, after storing ``default`` there if it is missing; returns the stored value."""
        if name not in self._cfg_dict:
            self[name] = default  # through __setitem__: reserved names are refused
        return self._cfg_dict[name]

    def __delattr__(self, name: str) -> None:
        del self._cfg_dict[name]

    def __delitem__(self, name: Any) -> None:
        del self._cfg_dict[name]

    def __len__(self) -> int:
        return len(self._cfg_dict)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cfg_dict)

    def __contains__(self, name: Any) -> bool:
        return name in self._cfg_dict

    def __repr__(self) -> str:
        return f'Config (path: {self.filename}): {self._cfg_dict.to_dict()!r}'

    # ------------------------------------------------------------------ copy / pickle
    def __getstate__(self) -> tuple:
        return self._cfg_dict, self._filename, self._text, self.__text_format

    def __setstate__(self, state: tuple) -> None:
        cfg_dict, filename, text = state[:3]
        super().__setattr__('_cfg_dict', cfg_dict)
        super().__setattr__('_filename', filename)
        super().__setattr__('_text', text)
        # 3 items: pickled before the format was kept
        super().__setattr__('_Config__text_format', state[3] if len(state) > 3 else None)

    def __copy__(self) -> 'Config':
        other = self.__class__.__new__(self.__class__)
        other.__setstate__(self.__getstate__())
        return other

    def __deepcopy__(self, memo: dict) -> 'Config':
        other = self.__class__.__new__(self.__class__)
        memo[id(self)] = other
        other.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return other


def _plain_dicts(value: Any) -> Any:
    """``value`` with every dict a plain dict, also inside lists and tuples (addict's
    ``to_dict`` converts only the dicts directly in a list)."""
    if isinstance(value, dict):
        return {k: _plain_dicts(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain_dicts(v) for v in value)
    return value


def _plain_data(value: Any, path: List[KeyPart], filename: Optional[str], str_keys: bool = False) -> Any:
    """Plain JSON/YAML data for ``value``; say where a value is that these formats cannot hold.

    ``str_keys``: JSON's keys are strings, and json would turn ``0`` or ``True`` into ``'0'`` or
    ``'true'`` silently, so a config that loads back different; refuse other keys instead.
    """
    if isinstance(value, dict):
        for k in value:
            if str_keys and not isinstance(k, str):
                raise ConfigError(f'the key {k!r} ({type(k).__name__}) cannot be written to JSON, whose '
                                  f'keys are strings only (the dump would not load back the same); dump to a '
                                  f'.py or .yaml file, or make the key a str.', filename, path + [k])
        return {k: _plain_data(v, path + [k], filename, str_keys) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v, path + [i], filename, str_keys) for i, v in enumerate(value)]
    value = plain_number(value)  # numpy's float64, float32, int64, bool_: the plain number they equal
    if isinstance(value, str):
        # a subclass (numpy's str_, a (str, Enum) member) is a str to JSON but nothing to YAML's
        # dumper; str.__str__ gives its text, where str() gives an Enum member's name
        return str.__str__(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise ConfigError(f'a {type(value).__name__} ({value!r}) cannot be written to JSON/YAML; dump to a .py '
                      'file or replace it with plain data.', filename, path)


_REPORTED_FAILED_IMPORTS: set = set()  # (config file, module name) whose failed import was warned about


def import_custom(custom_imports: Any, filename: Optional[str]) -> None:
    """Import the modules ``custom_imports = dict(imports=[...], allow_failed_imports=False)`` names.

    Modules already imported are not imported again, so calling this once more after
    ``--cfg-options`` changed ``custom_imports`` imports only what was added. The working
    directory is searched too (after everything else on ``sys.path``), as with ``python -m``:
    ``python tools/train.py`` and ``colossal-train`` put only their own folder on ``sys.path``.
    """
    if not isinstance(custom_imports, dict):
        raise ConfigError(f"custom_imports must be dict(imports=['module', ...]), got {custom_imports!r}.",
                          filename, ['custom_imports'])
    unknown = set(custom_imports) - {'imports', 'allow_failed_imports'}
    if unknown:
        raise ConfigError(f'unknown keys {sorted(unknown)} in custom_imports; expected imports and '
                          'allow_failed_imports.', filename, ['custom_imports'])
    imports = custom_imports.get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(imports, (list, tuple)):
        raise ConfigError(f'custom_imports.imports must be a module name or a list of them, got {imports!r}.',
                          filename, ['custom_imports', 'imports'])
    allow_failed = custom_imports.get('allow_failed_imports', False)
    for i, name in enumerate(imports):
        if not isinstance(name, str) or not name:
            raise ConfigError(f'expected a module name (a str like "my_project.hooks"), got {name!r}.',
                              filename, ['custom_imports', 'imports', i])
    cwd = _working_directory_on_path()
    where = f'custom_imports in config {filename or "(dict)"}'
    for name in imports:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if allow_failed:
                # tools/train.py imports a config's modules, then initialize() again: one warning
                if (filename, name) not in _REPORTED_FAILED_IMPORTS:
                    _REPORTED_FAILED_IMPORTS.add((filename, name))
                    warnings.warn(f'custom_imports: could not import {name!r} ({exc}); skipped because '
                                  'allow_failed_imports=True.', stacklevel=2)
                continue
            missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
            if isinstance(exc, ModuleNotFoundError) and (missing is None or missing == name
                                                         or name.startswith(missing + '.')):
                exc.add_note(f'{where}: make sure {name!r} is importable from the working directory ({cwd}) '
                             f'or PYTHONPATH, or set allow_failed_imports=True')
            elif missing is not None:  # the module was found, and something it imports was not
                exc.add_note(f'({where}: {name!r} was found, but it imports {missing!r}, which is not '
                             f'installed or not on the path: install it, or fix that import in {name!r})')
            else:  # the module was found: a `from x import y` in it failed
                exc.add_note(f'({where}: {name!r} was found, but an import in it failed)')
            raise
        except Exception as exc:  # the module's own code raised: say which module, and why it ran
            exc.add_note(f'(raised while importing {name!r}, named by {where})')
            raise


def _working_directory_on_path() -> str:
    """Append the working directory to ``sys.path`` unless it is there already; return it.

    Appended, not prepended: a file in the working directory never hides an installed package
    that the run imports later.
    """
    cwd = os.getcwd()
    if not any(osp.abspath(entry or os.curdir) == cwd for entry in sys.path if isinstance(entry, str)):
        sys.path.append(cwd)
    return cwd
