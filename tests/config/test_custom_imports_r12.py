"""custom_imports: which module failed and why, and one warning per config file and module."""
import sys
import uuid
import warnings

import pytest

from colossal_runner.config import Config
from colossal_runner.config.config import import_custom


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write modules with fresh names into a folder on sys.path; returns a writer (text -> name)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(text):
        name = f'cr_r12_{uuid.uuid4().hex[:8]}'
        (tmp_path / f'{name}.py').write_text(text, encoding='utf-8')
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def _config(tmp_path, imports, allow_failed=False):
    cfg_file = tmp_path / f'cfg_{uuid.uuid4().hex[:8]}.py'
    cfg_file.write_text(f'custom_imports = dict(imports={imports!r}, allow_failed_imports={allow_failed})\n',
                        encoding='utf-8')
    return cfg_file


def test_a_module_whose_own_dependency_is_missing_says_so(tmp_path, modules):
    missing = f'cr_r12_not_installed_{uuid.uuid4().hex[:8]}'
    name = modules(f'import {missing}\n')
    cfg_file = _config(tmp_path, [name])
    with pytest.raises(ModuleNotFoundError, match=missing) as info:
        Config.fromfile(cfg_file)
    notes = ' '.join(info.value.__notes__)
    assert f"{name!r} was found, but it imports {missing!r}, which is not installed" in notes
    assert str(cfg_file) in notes and 'PYTHONPATH' not in notes


def test_a_module_that_is_not_found_still_says_where_it_was_looked_for(tmp_path):
    name = f'cr_r12_absent_{uuid.uuid4().hex[:8]}'
    with pytest.raises(ModuleNotFoundError) as info:
        Config.fromfile(_config(tmp_path, [name]))
    notes = ' '.join(info.value.__notes__)
    assert f'make sure {name!r} is importable from the working directory' in notes
    assert 'was found' not in notes


def test_a_failing_from_import_in_the_module_says_the_module_was_found(tmp_path, modules):
    name = modules('from os import no_such_name_r12\n')
    with pytest.raises(ImportError) as info:
        Config.fromfile(_config(tmp_path, [name]))
    assert f"{name!r} was found, but an import in it failed" in ' '.join(info.value.__notes__)


def test_any_other_error_while_importing_a_module_names_it_and_the_config(tmp_path, modules):
    name = modules('x = undefined_name_r12\n')
    cfg_file = _config(tmp_path, [name], allow_failed=True)  # not an import failure: not skipped
    with pytest.raises(NameError, match='undefined_name_r12') as info:
        Config.fromfile(cfg_file)
    assert info.value.__notes__ == [f"(raised while importing {name!r}, named by custom_imports in config "
                                    f"{cfg_file})"]


def test_the_allowed_failure_warning_is_given_once_per_config_file_and_module(tmp_path):
    name = f'cr_r12_absent_{uuid.uuid4().hex[:8]}'
    cfg_file = _config(tmp_path, [name], allow_failed=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cfg = Config.fromfile(cfg_file, import_custom_modules=False)
        import_custom(cfg.custom_imports, cfg.filename)  # tools/train.py's load
        copy = Config(cfg.to_dict(), cfg_text=cfg.text, filename=cfg.filename)
        import_custom(copy.custom_imports, copy.filename)  # initialize()'s copy of it
        other = _config(tmp_path, [name], allow_failed=True)
        Config.fromfile(other)  # another config naming it: its own warning
    found = [str(w.message) for w in caught if name in str(w.message)]
    assert len(found) == 2 and all('allow_failed_imports=True' in m for m in found)
