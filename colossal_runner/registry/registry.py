"""String-keyed registries that build objects from ``dict(type=...)`` configs.

The public behaviour follows mmcv 1.x's ``Registry`` so that users' habits carry over,
with clearer errors: an unknown name suggests the closest registered ones, registering
a name twice says where the first one lives, and an exception raised while building
keeps its own type and traceback (mmcv re-wraps it and hides the cause).
"""
from __future__ import annotations

import difflib
import enum
import importlib
import inspect
import logging
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

_logger = logging.getLogger(__name__)


def _closest(name: str, candidates: Iterable[Union[str, Tuple[str, str]]], n: int = 3) -> List[str]:
    """Names from ``candidates`` that look like ``name`` (case-insensitive), best first. A candidate
    may be a pair ``(name, shown)``, matched by name and suggested as shown (``'scope.Name'``)."""
    lowered: Dict[str, List[str]] = {}
    for c in candidates:
        bare, shown = (c, c) if isinstance(c, str) else c
        lowered.setdefault(bare.lower(), []).append(shown)
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return list(dict.fromkeys(shown for h in hits for shown in lowered[h]))[:n]


def build_from_cfg(cfg: Mapping, registry: 'Registry', default_args: Optional[Mapping] = None) -> Any:
    """Build an object from ``cfg``: pop ``type`` and call it with the remaining keys.

    ``type`` may be a registered name (``'SGD'``, ``'scope.Name'``), a class or a function.
    ``default_args`` fill the keys that ``cfg`` leaves out.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f'cfg must be a dict, got {type(cfg).__name__}: {cfg!r}. '
                        f"Expected something like dict(type='Name', ...).")
    if default_args is not None and not isinstance(default_args, Mapping):
        raise TypeError(f'default_args must be a dict or None, got {type(default_args).__name__}')
    if 'type' not in cfg and (default_args is None or 'type' not in default_args):
        raise KeyError(f'`cfg` or `default_args` must contain the key "type" naming what to build '
                       f'in registry {registry.name!r}; got keys {sorted(map(str, cfg))}')
    if not isinstance(registry, Registry):
        raise TypeError(f'registry must be a Registry, got {type(registry).__name__}')

    args = dict(cfg)
    if default_args is not None:
        for key, value in default_args.items():
            args.setdefault(key, value)
    obj_type = args.pop('type')
    if isinstance(obj_type, str):
        obj_cls = registry.get(obj_type)
        if obj_cls is None:
            raise KeyError(registry._unknown_message(obj_type))
    elif callable(obj_type):
        obj_cls = obj_type
    else:
        raise TypeError(f'type must be a str, a class or a function, got {type(obj_type).__name__}: '
                        f'{obj_type!r}')
    try:
        return obj_cls(**args)
    except Exception as exc:  # keep the original type and traceback, add what was being built
        name = getattr(obj_cls, '__name__', repr(obj_cls))
        if hasattr(exc, 'add_note'):
            hint = _argument_hint(obj_cls, args, registry) if isinstance(exc, TypeError) else ''
            exc.add_note(f'(raised while building {name!r} from registry {registry.name!r}{hint})')
        raise


def _argument_hint(obj_cls: Any, args: Mapping, registry: 'Registry') -> str:
    """``; did you mean 'hidden' for 'hiden'?`` for arguments the signature does not take, or the
    registry's advice for an argument it knows (see ``Registry(argument_hints=...)``)."""
    try:
        params = inspect.signature(obj_cls).parameters
    except (TypeError, ValueError):  # a builtin or extension type without a readable signature
        return ''
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return ''
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    advice = {}
    for reg in reversed(registry._chain()):  # a child's advice overrides its parents'
        advice.update(reg._argument_hints)
    hints, notes = [], []
    for key in args:
        if isinstance(key, str) and key not in params:
            if key in advice:  # a close name would mislead here (by_epoch -> last_epoch)
                notes.append(advice[key])
                continue
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            if close:
                hints.append(f'{close[0]!r} for {key!r}')
    if hints:
        notes.append(f'did you mean {", ".join(hints)}?')
    return f'; {" ".join(notes)} It takes: {", ".join(names)}' if notes else ''


def _buildable(obj: Any) -> bool:
    """Whether a fall-back module's attribute is something a config could build (not an Enum
    of weights, a module or a constant)."""
    is_enum = inspect.isclass(obj) and issubclass(obj, enum.Enum)
    return callable(obj) and not inspect.ismodule(obj) and not is_enum


def _where(obj: Any) -> str:
    """``'module.QualName'`` of a class or function."""
    return f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", "?")}'


def _same_definition(old: Any, new: Any) -> bool:
    """Whether ``new`` is ``old`` defined again: another object of the same module and qualified name
    (a notebook cell run twice, ``importlib.reload``), not another class that happens to share the
    name, nor the same object registered twice."""
    keys = ('__module__', '__qualname__')
    if old is new or not all(getattr(old, k, None) is not None
                             and getattr(old, k, None) == getattr(new, k, None) for k in keys):
        return False
    if old.__module__ == '__main__':  # a notebook: a cell edited and run again has another file name
        return True
    # Elsewhere the file must be the same too: every config file runs as the module
    # '__colossal_config__', and a _base_ file's class must not silently replace its child's.
    file = _defining_file(old)
    return file is not None and file == _defining_file(new)


def _defining_file(obj: Any) -> Optional[str]:
    """The file a function, or the first method of a class, was compiled from (through decorators
    such as ``@torch.no_grad()``); else the file of its module; None if neither is known (a config
    file's class without methods)."""
    for value in ([obj] if callable(obj) and hasattr(obj, '__code__') else list(vars(obj).values())
                  if isinstance(obj, type) else []):
        value = getattr(value, '__func__', getattr(value, 'fget', value))  # static/class methods, properties
        if callable(value):
            value = inspect.unwrap(value)  # a decorator's wrapper was compiled in the decorator's file
        code = getattr(value, '__code__', None)
        if code is not None:
            return code.co_filename
    return getattr(sys.modules.get(getattr(obj, '__module__', None) or ''), '__file__', None)


def _shown(names: List[str], limit: int = 20) -> str:
    """At most ``limit`` names, then how many more there are."""
    if not names:
        return '(none)'
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


class Registry:
    """Map strings to classes or functions.

    Args:
        name: what the registry holds (``'model'``), used in messages.
        build_func: how ``build`` turns a config into an object; ``build_from_cfg``
            by default, or the parent's when a parent is given.
        parent: a registry to search when a name is not found here; ``'scope.Name'``
            looks in the child registered under ``scope``.
        scope: this registry's scope name; the package of the caller by default.
        fallback: a module (or a dotted path to one, imported on first use) whose
            public attributes are found by name when nothing is registered under it,
            e.g. ``torch.optim`` for OPTIMIZERS.
        fallback_filter: ``filter(name, obj) -> bool``, which fall-back attributes belong in this
            registry (LOSSES takes torch.nn's losses, not its layers); all buildable ones by default.
        builtins: dotted paths of the modules that register this registry's built-in
            entries. They are imported before the first registration from anywhere else and
            before the first lookup, so built-ins are always registered first: a user's
            ``register_module(name='MLP', force=True)`` replaces the built-in ``MLP`` instead
            of colliding with it when the built-in registers later.
        argument_hints: ``{argument: advice}`` for arguments that users bring from other
            frameworks and that this registry's classes do not take: a build that passes one
            fails with this advice rather than a guess at a similar name (LR_SCHEDULERS explains
            mmcv's ``by_epoch``). Children and builds through a child see their parents' too.
    """

    def __init__(self, name: str, build_func: Optional[Callable] = None,
                 parent: Optional['Registry'] = None, scope: Optional[str] = None,
                 fallback: Union[str, Iterable[str], None] = None,
                 builtins: Union[str, Iterable[str], None] = None,
                 fallback_filter: Optional[Callable[[str, Any], bool]] = None,
                 argument_hints: Optional[Mapping[str, str]] = None):
        self._name = name
        self._argument_hints = dict(argument_hints or {})
        self._fallback_filter = fallback_filter
        self._builtins = [builtins] if isinstance(builtins, str) else list(builtins or [])
        self._builtins_imported = not self._builtins
        self._module_dict: Dict[str, Any] = {}
        self._children: Dict[str, 'Registry'] = {}
        self._scope = scope if scope is not None else self.infer_scope()
        if isinstance(fallback, str):
            fallback = [fallback]
        self._fallbacks = list(fallback or [])
        if build_func is None:
            self.build_func = parent.build_func if parent is not None else build_from_cfg
        else:
            self.build_func = build_func
        if parent is not None:
            if not isinstance(parent, Registry):
                raise TypeError(f'parent must be a Registry, got {type(parent).__name__}')
            parent._add_children(self)
        self._parent = parent

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def module_dict(self) -> Dict[str, Any]:
        self._import_builtins()
        return self._module_dict

    @property
    def children(self) -> Dict[str, 'Registry']:
        return self._children

    @property
    def parent(self) -> Optional['Registry']:
        return self._parent

    def __len__(self) -> int:
        self._import_builtins()
        return len(self._module_dict)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(name={self._name}, items={self.module_dict})'

    @staticmethod
    def infer_scope() -> str:
        """The top-level package of the module that creates the registry."""
        # sys._getframe, not inspect.stack(): the latter reads source files for every frame
        # and cost about a second per process start.
        name = sys._getframe(2).f_globals.get('__name__') or '__main__'
        return name.split('.')[0]

    @staticmethod
    def split_scope_key(key: str):
        """``'scope.Name'`` -> ``('scope', 'Name')``; ``'Name'`` -> ``(None, 'Name')``."""
        scope, sep, rest = key.partition('.')
        if sep:
            return scope, rest
        return None, key

    def _import_builtins(self) -> None:
        """Import the modules of the built-in entries, once; their own registrations pass through."""
        if self._builtins_imported:
            return
        self._builtins_imported = True  # first: the modules register here while they are imported
        try:
            for path in self._builtins:
                importlib.import_module(path)
        except BaseException:
            self._builtins_imported = False
            raise

    # ------------------------------------------------------------------ lookup
    def _get_local(self, key: str):
        if key in self._module_dict:
            return self._module_dict[key]
        for path in self._fallbacks:
            try:
                module = importlib.import_module(path) if isinstance(path, str) else path
            except ImportError:  # e.g. torchvision not installed: the fall-back is simply absent
                continue
            obj = getattr(module, key, None)
            if obj is not None and not key.startswith('_') and callable(obj) and self._offers(key, obj):
                return obj
        return None

    def _offers(self, name: str, obj: Any) -> bool:
        return self._fallback_filter is None or bool(self._fallback_filter(name, obj))

    def get(self, key: str):
        """The class or function registered as ``key``, or ``None``.

        ``'scope.Name'`` looks in the registry of that scope (this one, a child, or via
        the root); a plain name looks here, then in the parents.
        """
        if not isinstance(key, str):
            raise TypeError(f'registry keys are strings, got {type(key).__name__}: {key!r}')
        self._import_builtins()
        scope, real_key = self.split_scope_key(key)
        if scope is None or scope == self._scope:
            found = self._get_local(real_key)
            if found is not None:
                return found
            if scope is None and self._parent is not None:
                return self._parent.get(key)
            return None
        if scope in self._children:
            return self._children[scope].get(real_key)
        root = self
        while root._parent is not None:
            root = root._parent
        if root is not self:
            return root.get(key)
        # A dotted name that is not a scope may still be a fall-back attribute.
        return self._get_local(key) if '.' not in real_key else None

    def _fallback_names(self) -> Dict[str, List[str]]:
        """``{module path: the names a config can use from it}`` for each importable fall-back."""
        out: Dict[str, List[str]] = {}
        for path in self._fallbacks:
            try:
                module = importlib.import_module(path) if isinstance(path, str) else path
            except ImportError:
                continue
            out[getattr(module, '__name__', str(path))] = sorted(
                n for n in dir(module) if not n.startswith('_') and _buildable(getattr(module, n, None))
                and self._offers(n, getattr(module, n)))
        return out

    def _sources(self, here: str = 'registered here') -> List[Tuple[str, List[str]]]:
        """``(where, names)`` for every place a plain name is looked up, in lookup order: this
        registry and its fall-backs, then each parent and its fall-backs."""
        sources = []
        registry: Optional[Registry] = self
        while registry is not None:
            registry._import_builtins()
            where = (here if registry is self
                     else f'registered in the parent registry {registry.name!r} (scope {registry.scope})')
            sources.append((where, sorted(registry._module_dict)))
            sources += [(f'from {path}', names) for path, names in registry._fallback_names().items()]
            registry = registry._parent
        return sources

    def _all_names(self) -> List[str]:
        return [name for _, names in self._sources() for name in names]

    def _chain(self) -> List['Registry']:
        """This registry and its parents, in lookup order."""
        chain, registry = [], self
        while registry is not None:
            chain.append(registry)
            registry = registry._parent
        return chain

    def _scoped(self) -> Dict[str, 'Registry']:
        """``{scope: registry}`` that a ``'scope.Name'`` key reaches from here, as :meth:`get` looks."""
        root = self._chain()[-1]
        return {root.scope: root, **root._children, self._scope: self, **self._children}

    def _unknown_message(self, key: str) -> str:
        """Why ``key`` is not found, the closest names (in any scope reachable from here) and
        everything available."""
        scope, name = self.split_scope_key(key)
        scoped = self._scoped()
        target = scoped.get(scope) if scope is not None else self
        problem = ''
        if target is not None:
            here = f'registered in scope {scope!r}' if scope is not None else 'registered here'
            sources = target._sources(here)
            prefix = f'{scope}.' if scope is not None else ''
            candidates = [(n, prefix + n) for _, names in sources for n in names]
            if scope is None:  # a name registered only in another scope's registry needs 'scope.Name'
                chain = self._chain()
                for other, registry in scoped.items():
                    if all(registry is not r for r in chain) and registry._module_dict:
                        names = sorted(registry._module_dict)
                        sources.append((f"in scope {other!r} (as '{other}.Name')", names))
                        candidates += [(n, f'{other}.{n}') for n in names]
            close = _closest(name, candidates)
        else:  # no registry has this scope: a misspelled scope, or a dotted name that is not one
            problem = (f' No registry of scope {scope!r} is reachable from it; the scopes are '
                       f'{", ".join(repr(s) for s in sorted(scoped))}.')
            sources = self._sources()
            close = [f'{s}.{n}' for s in _closest(scope, scoped)
                     for n in ([name] if scoped[s].get(name) is not None
                               else _closest(name, scoped[s]._all_names()))]
            close = (close + _closest(name, self._all_names()))[:3]
        hint = f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''
        available = [f'{where}: {_shown(names)}' for where, names in sources]
        return (f'{key!r} is not in the {self._name} registry.{problem}{hint} Available names, '
                f'{"; ".join(available)}. To use your own class, decorate it with '
                f'.register_module() of the {self._name} registry in a module that is imported, '
                f"e.g. through custom_imports = dict(imports=['my_module']) in the config.")

    def build(self, cfg: Mapping, default_args: Optional[Mapping] = None) -> Any:
        """Build an object from ``cfg`` with this registry's build function."""
        return self.build_func(cfg, registry=self, default_args=default_args)

    # ------------------------------------------------------------------ registration
    def _add_children(self, registry: 'Registry') -> None:
        if registry.scope in self._children:
            raise KeyError(f'scope {registry.scope!r} already has a child registry in {self._name!r}')
        self._children[registry.scope] = registry

    def _register_module(self, module: Any, module_name=None, force: bool = False) -> None:
        if not (inspect.isclass(module) or inspect.isfunction(module) or callable(module)):
            raise TypeError(f'only a class or a function can be registered, got {type(module).__name__}')
        self._import_builtins()
        if module_name is None:
            module_name = module.__name__
        names = [module_name] if isinstance(module_name, str) else list(module_name)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f'registered names must be strings, got {type(name).__name__}: {name!r}')
            if not force and name in self._module_dict:
                existing = self._module_dict[name]
                if _same_definition(existing, module):
                    # a notebook cell run again, or a module reloaded: the new definition replaces the old
                    _logger.debug(f'{name!r} in the {self._name} registry: {_where(module)} is defined '
                                  f'again; the new definition replaces the earlier one')
                    self._module_dict[name] = module
                    continue
                where = getattr(existing, '__module__', '?')
                raise KeyError(f'{name!r} is already registered in the {self._name} registry '
                               f'(by {where}.{getattr(existing, "__qualname__", name)}). '
                               f'Pick another name, or pass force=True to replace it.')
            self._module_dict[name] = module

    def register_module(self, name: Union[str, List[str], None] = None, force: bool = False,
                        module: Any = None):
        """Register a class or function, as a decorator or a call.

        ``name`` is a string or a list of aliases (the object's ``__name__`` by default);
        ``force=True`` replaces an existing entry. As in mmcv 1.x, ``@REG.register_module``
        (no parentheses) and ``REG.register_module(Cls)`` register ``Cls`` under its own name.
        """
        if not isinstance(force, bool):
            raise TypeError(f'force must be a bool, got {type(force).__name__}')
        if module is None and (inspect.isclass(name) or inspect.isfunction(name)):
            # mmcv 1.x habits: @REG.register_module without parentheses, REG.register_module(Cls)
            self._register_module(name, None, force)
            return name
        if name is not None and not isinstance(name, (str, list, tuple)):
            raise TypeError(f'name must be None, a str or a list of str, got {type(name).__name__}')
        if module is not None:
            self._register_module(module, name, force)
            return module

        def _register(obj):
            self._register_module(obj, name, force)
            return obj

        return _register
