"""``ConfigDict``: an addict ``Dict`` whose missing keys are errors, not silent new dicts."""
from __future__ import annotations

import difflib
from typing import Any, List, Optional

from addict import Dict

from .errors import KeyPart, format_key_path

# Where a ConfigDict was last reached from (``cfg.optimizer`` -> ['optimizer']), so that a missing
# key is named by its full path. An instance attribute, set when a parent hands the dict out.
_PATH_ATTR = '__colossal_key_path'


def closest_keys(name: Any, keys: List[Any], n: int = 3) -> List[str]:
    """The keys of a dict that look most like ``name`` (for "did you mean" messages)."""
    by_text = {str(k): k for k in keys}
    return difflib.get_close_matches(str(name), list(by_text), n=n, cutoff=0.6)


def _missing_message(name: Any, keys: List[Any], parent: Optional[List[KeyPart]] = None) -> str:
    """``parent``: the key path of the dict that lacks ``name``, when known (``None`` at the top)."""
    def full(key: Any) -> str:
        return format_key_path(list(parent or []) + [key])
    msg = f'no key {full(name)!r} in this config'
    close = closest_keys(name, keys)
    if close:
        msg += f"; did you mean {' or '.join(repr(full(k)) for k in close)}?"
    else:
        msg += '.'
    shown = sorted(map(str, keys))
    if len(shown) > 20:
        shown = shown[:20] + ['...']
    where = f' in {format_key_path(parent)}' if parent else ''
    return msg + f" Available keys{where}: {', '.join(shown) if shown else '(none)'}."


class ConfigDict(Dict):
    """A dict with attribute access (``cfg.optimizer.lr``) for config values.

    Unlike a plain addict ``Dict``, reading a missing key raises (``AttributeError`` for
    attribute access, so ``hasattr``/``getattr(..., default)`` work; ``KeyError`` for item
    access) and names the closest existing keys, so a typo fails where it is made.

    A plain dict stored into it (``cfg.myhook = h``) is stored as a ``ConfigDict`` *copy*, so
    that ``cfg.myhook.interval`` works (mmcv's ``Config`` does the same); change the stored
    value through the config (``cfg.myhook.interval = 3``), or store a ``ConfigDict``, which
    is kept as it is. ``setdefault`` returns the stored value, so
    ``cfg.setdefault('extra', {})['x'] = 1`` changes ``cfg.extra``.
    """

    def __missing__(self, name: Any) -> Any:
        raise KeyError(_missing_message(name, list(self.keys()), self.__dict__.get(_PATH_ATTR)))

    def __getitem__(self, name: Any) -> Any:
        return self._handed_out(name, super().__getitem__(name))

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') and name.endswith('__'):
            # Python asks for protocol attributes (__deepcopy__, __frozen, ...) this way;
            # answer fast and plainly.
            raise AttributeError(name)
        try:
            value = dict.__getitem__(self, name)
        except KeyError:
            message = _missing_message(name, list(self.keys()), self.__dict__.get(_PATH_ATTR))
            raise AttributeError(message) from None
        return self._handed_out(name, value)

    def _handed_out(self, name: Any, value: Any) -> Any:
        """``value``, which a read of ``name`` returns; a ConfigDict learns its key path from it."""
        if isinstance(value, ConfigDict):
            object.__setattr__(value, _PATH_ATTR, self._path_to(name))
        elif type(value) in (list, tuple) and value and isinstance(value[0], ConfigDict):
            # hooks[2]: the dicts of a list of dicts, a level down (a list of other things is not
            # walked: reading a long list item by item would cost its length each time)
            path = self._path_to(name)
            for i, item in enumerate(value):
                if isinstance(item, ConfigDict):
                    object.__setattr__(item, _PATH_ATTR, path + [i])
        return value

    def _path_to(self, name: Any) -> List[KeyPart]:
        """The key path of this dict's entry ``name`` (built only for a value that keeps it)."""
        return list(self.__dict__.get(_PATH_ATTR) or []) + [name]

    def __setitem__(self, name: Any, value: Any) -> None:
        super().__setitem__(name, _to_config_dict(value))

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)  # what was stored (a ConfigDict copy of a plain dict)

    def __copy__(self) -> 'ConfigDict':
        other = self.__class__()
        dict.update(other, self)
        return other

    def __reduce__(self):
        # Rebuild from a plain dict of the items: simpler and sturdier than addict's
        # __getstate__, which returns the object itself.
        return self.__class__, (dict(self),)


def _to_config_dict(value: Any) -> Any:
    """Make plain dicts (also inside lists/tuples) ConfigDicts; leave everything else alone."""
    if isinstance(value, dict) and not isinstance(value, ConfigDict):
        return ConfigDict(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return type(value)(_to_config_dict(v) for v in value) if type(value) in (list, tuple) else value
    return value
