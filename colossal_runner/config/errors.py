"""One error type for bad configs, and a helper that turns it into one clear line for tools.

Config problems are user input, so they are ``ValueError`` s: :class:`ConfigError` carries the
file and the key path (``hooks[2].type``) so the message can point at the exact spot. Tools wrap
their config-loading code in :func:`config_error_exit` so a bad config prints one line and exits
with status 2 instead of a traceback (``--debug`` keeps the traceback).
"""
from __future__ import annotations

import contextlib
import keyword
import sys
from typing import Iterable, Iterator, Optional, Sequence, Union

KeyPart = Union[str, int]


def format_key_path(parts: Iterable[KeyPart]) -> str:
    """Write a key path the way Python reads it: ``['hooks', 2, 'type']`` -> ``hooks[2].type``."""
    out = ''
    for part in parts:
        if isinstance(part, int):
            out += f'[{part}]'
        elif isinstance(part, str) and part.isidentifier() and not keyword.iskeyword(part):
            out += f'.{part}' if out else part
        else:
            out += f'[{part!r}]'
    return out


class ConfigError(ValueError):
    """A config that cannot be loaded, merged or written, with where the problem is.

    Args:
        message: what was received, what was expected and how to fix it.
        filename: the config file concerned, if any.
        key_path: where in the config, e.g. ``'hooks[2].type'`` (a sequence of keys is
            formatted with :func:`format_key_path`).
    """

    def __init__(self, message: str, filename: Optional[str] = None,
                 key_path: Union[str, Sequence[KeyPart], None] = None) -> None:
        if key_path is not None and not isinstance(key_path, str):
            key_path = format_key_path(key_path)
        self.message = message
        self.filename = filename
        self.key_path = key_path or None
        where = []
        if filename:
            where.append(f'config {filename}')
        if self.key_path:
            where.append(f'key {self.key_path}')
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def __reduce__(self):
        # Exceptions pickle their ``args``; ours has keyword fields, so say how to rebuild it
        # (errors cross process boundaries in distributed runs).
        return type(self), (self.message, self.filename, self.key_path)


def format_config_error(exc: BaseException) -> str:
    """One line describing ``exc``, for tools that load a config given by the user."""
    if isinstance(exc, SyntaxError):
        where = f'{exc.filename}:{exc.lineno}' if exc.lineno else f'{exc.filename}'
        text = f'{where}: syntax error: {exc.msg}'
    elif isinstance(exc, (ConfigError, FileNotFoundError)):
        text = str(exc)
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and ' ' in str(exc.args[0]):
        # str(KeyError) is the repr of its argument: right for a bare key ('lr'), but a sentence
        # gets quotes around it and its own quotes escaped
        text = f'KeyError: {exc.args[0]}'
    else:
        text = f'{type(exc).__name__}: {exc}'
    notes = getattr(exc, '__notes__', None) or []
    if notes:
        text += ' (' + '; '.join(_unwrapped(str(n).strip()) for n in notes) + ')'
    return ' '.join(text.split('\n'))


def _unwrapped(note: str) -> str:
    """``note`` without the parentheses around all of it, if it has them: the notes are put in
    one pair together (``(a) and (b)`` keeps its own)."""
    if not (note.startswith('(') and note.endswith(')')):
        return note
    depth = 0
    for i, char in enumerate(note):
        depth += {'(': 1, ')': -1}.get(char, 0)
        if depth == 0 and i < len(note) - 1:
            return note  # the first parenthesis closes before the end
    return note[1:-1]


@contextlib.contextmanager
def config_error_exit(debug: bool = False, prog: Optional[str] = None, status: int = 2) -> Iterator[None]:
    """Turn any exception raised while loading a config into one line on stderr and exit ``status``.

    Wrap only the config loading/merging in it (not training): every error there is the
    user's config or command line, and a traceback would bury the one useful line. With
    ``debug=True`` the exception propagates unchanged, traceback and all.

    Example::

        with config_error_exit(debug=args.debug, prog='train.py'):
            cfg = Config.fromfile(args.config)
            cfg.merge_from_dict(args.cfg_options or {})
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - everything here is a config problem, see docstring
        if debug:
            raise
        name = prog or 'error'
        print(f'{name}: error: {format_config_error(exc)} (rerun with --debug for the traceback)',
              file=sys.stderr)
        raise SystemExit(status) from None
