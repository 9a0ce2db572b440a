"""How tools/train.py and tools/test.py load, check and write the config: custom_imports after
--cfg-options, the merged-config dump beside the user's own files, the logging section."""
import logging
import os.path as osp
import sys
import textwrap
import uuid
import warnings

import pytest

from colossal_runner.config import Config, ConfigError
from colossal_runner.config.config import import_custom
from colossal_runner.registry import HOOKS
from colossal_runner.train import dump_config, load_user_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'tests', 'data', 'e2e', 'tiny.py')


@pytest.fixture
def missing_import_config(tmp_path):
    config = tmp_path / 'needs_missing.py'
    config.write_text(f"_base_ = {TINY!r}\ncustom_imports = dict(imports=['cr_no_such_module_tt'])\n",
                      encoding='utf-8')
    return str(config)


def test_cfg_options_can_drop_or_allow_a_custom_import_before_it_is_made(missing_import_config):
    with pytest.raises(ImportError, match='cr_no_such_module_tt'):  # the file's own imports are made
        load_user_config(missing_import_config, {})
    cfg = load_user_config(missing_import_config, {'custom_imports.imports': []})
    assert cfg.custom_imports.imports == []
    with pytest.warns(UserWarning, match="could not import 'cr_no_such_module_tt'.*allow_failed_imports"):
        cfg = load_user_config(missing_import_config, {'custom_imports.allow_failed_imports': True})
    with warnings.catch_warnings(record=True) as again:  # initialize() imports them once more (from its
        warnings.simplefilter('always')                     # own copy of the config), and a second load
        import_custom(dict(cfg.custom_imports), cfg.filename)  # of the file: no second word
        load_user_config(missing_import_config, {'custom_imports.allow_failed_imports': True})
    assert not [w for w in again if 'cr_no_such_module_tt' in str(w.message)]


def test_a_module_added_by_cfg_options_is_registered_when_the_config_is_loaded(tmp_path, monkeypatch):
    # tools/test.py looks up the hooks' types right after loading, before initialize()
    name, hook = f'cr_tt_hooks_{uuid.uuid4().hex[:8]}', f'Hook{uuid.uuid4().hex[:8]}'
    (tmp_path / f'{name}.py').write_text(textwrap.dedent(f"""
        from colossal_runner.registry import HOOKS
        from colossal_runner.trainer.hooks import BaseHook

        @HOOKS.register_module()
        class {hook}(BaseHook):
            pass
        """), encoding='utf-8')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_user_config(TINY, {'custom_imports.imports': [name]})
        assert HOOKS.get(hook) is not None
    finally:
        HOOKS.module_dict.pop(hook, None)
        sys.modules.pop(name, None)


def test_the_launcher_reads_the_parallel_settings_without_importing(missing_import_config):
    from colossal_runner.distributed.launch import _load_config
    cfg = _load_config(missing_import_config)  # initialize() imports them, after the options
    assert cfg.custom_imports.imports == ['cr_no_such_module_tt']


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _logger():
    logger = logging.getLogger(f'test_dump_{uuid.uuid4().hex}')
    logger.setLevel(logging.INFO)
    records = Records()
    logger.addHandler(records)
    return logger, records


def test_the_dump_does_not_overwrite_the_config_in_its_own_folder(tmp_path):
    config = tmp_path / 'run.py'
    source = "work_dir = '{{ fileDirname }}'\n_base_ = 'base.py'\nlr = 0.5\n"
    config.write_text(source, encoding='utf-8')
    (tmp_path / 'base.py').write_text('lr = 0.1\nepochs = 2\n', encoding='utf-8')
    cfg = Config.fromfile(config)
    logger, records = _logger()
    path = dump_config(cfg, cfg.work_dir, logger)
    assert config.read_text(encoding='utf-8') == source
    assert path == str(tmp_path / 'run.merged.py')
    assert Config.fromfile(path).to_dict() == cfg.to_dict()
    assert records.messages == [f'{config} is a config file this run read, so the merged config goes to '
                                f'{path} instead']


def test_the_dump_does_not_overwrite_a_base_file_of_the_same_name(tmp_path):
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'mlp.yaml').write_text('lr: 0.1\n', encoding='utf-8')
    (tmp_path / 'sub' / 'mlp.yaml').write_text("_base_: '../mlp.yaml'\nlr: 0.5\n", encoding='utf-8')
    cfg = Config.fromfile(tmp_path / 'sub' / 'mlp.yaml')
    path = dump_config(cfg, str(tmp_path), _logger()[0])
    assert (tmp_path / 'mlp.yaml').read_text(encoding='utf-8') == 'lr: 0.1\n'
    assert path == str(tmp_path / 'mlp.merged.yaml') and Config.fromfile(path).lr == 0.5


def test_the_dump_goes_to_the_config_name_in_another_work_dir(tmp_path):
    cfg = Config.fromfile(TINY)
    logger, records = _logger()
    path = dump_config(cfg, str(tmp_path / 'run'), logger)
    assert path == str(tmp_path / 'run' / 'tiny.py') and records.messages == []


def test_a_json_config_with_integer_keys_is_dumped_as_a_plain_py_that_reruns(tmp_path):
    (tmp_path / 'weights.py').write_text('class_weights = {0: 1.0, 1: 2.0}\n', encoding='utf-8')
    (tmp_path / 'cfg.json').write_text('{"_base_": ["weights.py"], "max_epochs": 1}', encoding='utf-8')
    logger, records = _logger()
    path = dump_config(Config.fromfile(tmp_path / 'cfg.json'), str(tmp_path / 'run'), logger)
    assert path == str(tmp_path / 'run' / 'cfg.py')
    assert Config.fromfile(path).class_weights == {0: 1.0, 1: 2.0}  # no "written as strings" header
    assert not any('no config text' in m for m in records.messages)
    assert any('JSON keys must be strings' in m for m in records.messages)


@pytest.mark.parametrize('logging_cfg, key_path, message', [
    (dict(levl='DEBUG'), 'logging.levl',
     "unknown key 'levl' (did you mean 'level'?); logging takes only level and progress: rename or "
     'remove it'),
    (dict(level='DEBUGG'), 'logging.level',
     "unknown log level 'DEBUGG'; expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)"),
    (dict(progress='no'), 'logging.progress', "expected True or False, got 'no'"),
    ('DEBUG', 'logging', "expected a dict like dict(level='INFO', progress=True), got 'DEBUG'"),
])
def test_a_bad_logging_section_is_a_config_error_naming_file_and_key(tmp_path, logging_cfg, key_path,
                                                                     message):
    from colossal_runner.initialize import initialize
    config = tmp_path / 'c.py'
    config.write_text(f'_base_ = {TINY!r}\nlogging = {logging_cfg!r}\n', encoding='utf-8')
    with pytest.raises(ConfigError) as info:
        initialize(str(config), work_dir=str(tmp_path / 'run'), log_file=False)
    assert (info.value.filename, info.value.key_path, info.value.message) == (str(config), key_path, message)


def test_a_logging_level_in_any_case_sets_the_level(tmp_path):
    from colossal_runner.initialize import initialize
    logger = logging.getLogger('colossal_runner')
    before = logger.level
    try:
        initialize(TINY, cfg_options={'logging': dict(level='debug', progress=False)},
                   work_dir=str(tmp_path / 'run'), log_file=False)
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)
