"""A class defined again (a notebook cell run twice, a reloaded module) replaces its registered
predecessor; another class under the same name is still refused."""
import builtins
import importlib
import logging
import sys

import pytest

from colossal_runner.registry import Registry

CELL = '''
@reg.register_module()
class CellThing:
    version = {version}
'''


def _run_cell(reg, version):
    """Run the cell's source as a notebook does: the class is defined in __main__."""
    namespace = {'reg': reg, '__name__': '__main__'}
    exec(CELL.format(version=version), namespace)
    return namespace['CellThing']


def test_running_a_cell_again_replaces_the_class(project_log):
    reg = Registry('widget', scope='test')
    first = _run_cell(reg, 1)
    logger = logging.getLogger('colossal_runner.registry.registry')
    level = logger.level
    logger.setLevel(logging.DEBUG)  # the note is a debug one
    try:
        second = _run_cell(reg, 2)
    finally:
        logger.setLevel(level)
    assert first is not second and first.__qualname__ == second.__qualname__ == 'CellThing'
    assert reg.get('CellThing') is second and reg.build(dict(type='CellThing')).version == 2
    assert "'CellThing' in the widget registry: __main__.CellThing is defined again" in project_log.text


def test_another_class_of_the_same_name_is_still_refused():
    reg = Registry('widget', scope='test')
    first = _run_cell(reg, 1)

    class CellThing:  # same name, but defined here: another class
        pass

    with pytest.raises(KeyError, match=r"'CellThing' is already registered in the widget registry "
                                       r"\(by __main__\.CellThing\)\. Pick another name, or pass force=True"):
        reg.register_module(module=CellThing)
    assert reg.get('CellThing') is first


def test_a_function_defined_again_replaces_it_too():
    reg = Registry('widget', scope='test')
    for scale in (2, 3):
        namespace = {'reg': reg, '__name__': 'my_notebook'}
        exec(f'@reg.register_module()\ndef scaled(x):\n    return x * {scale}\n', namespace)
    assert reg.build(dict(type='scaled', x=5)) == 15


def _config_class(reg, filename):
    """A class as a config file defines it: every config file runs as the module __colossal_config__."""
    namespace = {'reg': reg, '__name__': '__colossal_config__'}
    source = '@reg.register_module()\nclass Mark:\n    def __init__(self):\n        self.origin = __file__\n'
    namespace['__file__'] = filename
    exec(compile(source, filename, 'exec'), namespace)
    return namespace['Mark']


def test_a_base_config_files_class_does_not_replace_its_childs():
    reg = Registry('widget', scope='test')
    child = _config_class(reg, '/configs/child.py')
    with pytest.raises(KeyError, match="'Mark' is already registered"):
        _config_class(reg, '/configs/_base_/base.py')
    assert reg.get('Mark') is child
    again = _config_class(reg, '/configs/child.py')  # the same file loaded again replaces it
    assert reg.get('Mark') is again


def test_a_decorated_first_method_does_not_hide_which_config_file_defined_the_class():
    # the decorator's wrapper was compiled in torch's file: the method itself says which config file
    source = ('import torch\n@reg.register_module()\nclass Net:\n    @torch.no_grad()\n'
              '    def origin(self):\n        return __file__\n')
    reg = Registry('widget', scope='test')
    for filename in ('/configs/child.py', '/configs/_base_/base.py'):
        namespace = {'reg': reg, '__name__': '__colossal_config__', '__file__': filename}
        try:
            exec(compile(source, filename, 'exec'), namespace)
        except KeyError as exc:
            assert "'Net' is already registered" in str(exc) and filename.endswith('base.py')
    assert reg.get('Net')().origin() == '/configs/child.py'


def test_a_reloaded_module_replaces_a_class_without_methods_of_its_own(tmp_path, monkeypatch):
    reg = Registry('widget', scope='test')
    monkeypatch.setattr(builtins, '_methodless_test_registry', reg, raising=False)
    (tmp_path / 'methodless.py').write_text('import builtins\nreg = builtins._methodless_test_registry\n'
                                            '@reg.register_module()\nclass Plain(dict):\n    pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module('methodless')
        first = reg.get('Plain')
        importlib.reload(module)  # before: "already registered" (no method to tell its file by)
        assert reg.get('Plain') is module.Plain is not first
    finally:
        sys.modules.pop('methodless', None)
