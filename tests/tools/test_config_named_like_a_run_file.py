"""A config file named like a file the run writes itself (``final_metrics.json``): its merged dump
goes to ``final_metrics.merged.json``, so that the run's final metrics do not overwrite it."""
import json

import pytest

from colossal_runner import train as train_cli
from colossal_runner.config import Config

from .conftest import E2E


pytestmark = pytest.mark.usefixtures('fresh_logger')


def test_a_config_named_final_metrics_json_keeps_its_dump(tmp_path, capsys):
    config = tmp_path / 'configs' / 'final_metrics.json'
    config.parent.mkdir()
    config.write_text(json.dumps({'_base_': E2E + '/tiny.py', 'max_epochs': 1}))
    work = tmp_path / 'work'
    train_cli.main([str(config), '--work-dir', str(work), '--no-progress'])
    err = capsys.readouterr().err
    dumped = work / 'final_metrics.merged.json'
    assert f'{work / "final_metrics.json"} is a file the run writes itself, so the merged config goes to ' \
           f'{dumped} instead' in err, err
    cfg = Config.fromfile(str(dumped))  # the merged config, whole
    assert cfg.max_epochs == 1 and cfg.model.type == 'MLP'
    metrics = json.loads((work / 'final_metrics.json').read_text())  # the run's own file, untouched
    assert set(metrics) == {'train', 'test', 'measured_at'}


def test_a_config_named_final_metrics_json_in_its_own_work_dir_is_not_overwritten(tmp_path, capsys):
    """The config is the work directory's final_metrics.json: the dump goes to final_metrics.merged.json
    and the final metrics to final_metrics.run.json; the config stays as it was written."""
    work = tmp_path / 'work'
    work.mkdir()
    config = work / 'final_metrics.json'
    text = json.dumps({'_base_': E2E + '/tiny.py', 'max_epochs': 1, 'work_dir': str(work)})
    config.write_text(text)
    train_cli.main([str(config), '--no-progress'])
    err = capsys.readouterr().err
    moved = work / 'final_metrics.run.json'
    assert f'{config} is a config file this run read, so the final metrics go to {moved} instead' in err, err
    assert config.read_text() == text
    assert Config.fromfile(str(work / 'final_metrics.merged.json')).max_epochs == 1
    assert set(json.loads(moved.read_text())) == {'train', 'test', 'measured_at'}
    # a resume with nothing left to train names that file
    train_cli.main([str(config), '--no-progress', '--resume'])
    assert 'final_metrics.run.json is kept' in capsys.readouterr().err
    assert config.read_text() == text
