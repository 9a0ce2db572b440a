"""YAML for configs: PyYAML's safe loader and dumper with two fixes.

* Floats follow YAML 1.2: PyYAML implements YAML 1.1, where ``1e-3`` (no dot) and ``1.0e3``
  (no exponent sign) are strings, so ``lr: 1e-3`` would fail later as a str. The dumper uses
  the same rule, so a string that now reads as a float (``'1e-3'``) is written quoted.
* ``{{`` in a string is written as ``{\\x7b`` in a double-quoted scalar (an escape YAML reads
  back as ``{``), so reloading a dumped config cannot take the text for a ``{{ fileDirname }}``
  or ``{{ _base_.x }}`` substitution; the JSON dump does the same with ``\\u007b``.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from .base_ref import YAML_TAG, BaseRef

_FLOAT_TAG = 'tag:yaml.org,2002:float'
# The YAML 1.2 floats with an exponent that YAML 1.1's rule misses; the rest it already reads.
_EXPONENT_FLOAT = re.compile(r'^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$')
_FIRST_CHARS = list('-+0123456789.')


class ConfigYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and ``{{ _base_.x }}`` placeholders as :class:`BaseRef` s."""


class ConfigYamlDumper(yaml.SafeDumper):
    """SafeDumper that quotes what :class:`ConfigYamlLoader` would not read back as the same string."""


def _construct_base_ref(loader: yaml.SafeLoader, node: yaml.Node) -> BaseRef:
    return BaseRef(loader.construct_scalar(node))


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Double quotes so that the '{{' -> '{\x7b' escape in dump_yaml is valid YAML.
    return dumper.represent_scalar('tag:yaml.org,2002:str', value, style='"' if '{{' in value else None)


ConfigYamlLoader.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, _FIRST_CHARS)
ConfigYamlLoader.add_constructor(YAML_TAG, _construct_base_ref)
ConfigYamlDumper.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, _FIRST_CHARS)
ConfigYamlDumper.add_representer(str, _represent_str)


def load_yaml(text: str) -> Any:
    """Parse config YAML (safe: no code runs)."""
    return yaml.load(text, Loader=ConfigYamlLoader)  # noqa: S506 - a SafeLoader subclass


def dump_yaml(data: Any) -> str:
    """Config YAML for plain ``data``, which :func:`load_yaml` reads back to equal data."""
    text = yaml.dump(data, Dumper=ConfigYamlDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False)
    # Every '{{' is inside a double-quoted scalar (see _represent_str): block style writes no
    # braces but an empty '{}', and the emitter never folds a line between two plain characters.
    return text.replace('{{', '{\\x7b')
