"""Loading never runs code hidden in a file: checkpoints (weights-only), YAML/JSON configs (safe loaders)."""
import os
import sys

import pytest
import torch

from colossal_runner.checkpoint import load_checkpoint, save_checkpoint
from colossal_runner.config import Config, ConfigError
from colossal_runner.trainer import Trainer

from ..trainer._toy import make_engine


class Payload:
    """Unpickling this calls os.makedirs(marker): it would create a directory if it ever ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def write_malicious(path, marker):
    # A checkpoint that looks real but carries the payload among its values.
    torch.save({'format': 'colossal_runner/1', 'engine': {'model': Payload(marker)}, 'states': {'epoch': 1}},
               path)


def test_checkpoint_whose_pickle_runs_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = str(tmp_path / 'pwned')
    evil = str(tmp_path / 'epoch_1.pt')
    write_malicious(evil, marker)
    message = (r"cannot read checkpoint .*epoch_1\.pt.: refused, its pickle would import or call "
               r"(os|posix)\.makedirs.*weights_only=True")
    with pytest.raises(ValueError, match=message):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match="refused, its pickle would"):
        Trainer(make_engine()).resume(evil)
    assert not os.path.exists(marker)


def test_directory_resume_skips_a_malicious_newest_file_with_a_warning(tmp_path):
    trainer = Trainer(make_engine())
    save_checkpoint(trainer.state_dict(), str(tmp_path / 'epoch_1.pt'))
    marker = str(tmp_path / 'pwned')
    write_malicious(str(tmp_path / 'epoch_2.pt'), marker)
    os.remove(tmp_path / 'latest.pt')
    with pytest.warns(UserWarning, match=r"skipping unreadable checkpoint .*epoch_2\.pt.*refused"):
        state = load_checkpoint(str(tmp_path))
    assert state['format'] == 'colossal_runner/1'
    assert not os.path.exists(marker)


@pytest.mark.parametrize('payload', [
    '!!python/object/apply:os.makedirs ["{marker}"]',
    '!!python/object/new:os.makedirs ["{marker}"]',
    '!!python/name:os.makedirs',
])
def test_yaml_config_with_python_tags_is_refused(tmp_path, payload):
    marker = str(tmp_path / 'pwned')
    path = tmp_path / 'evil.yaml'
    path.write_text('model:\n  type: MLP\nhooks: ' + payload.format(marker=marker) + '\n', encoding='utf-8')
    with pytest.raises(ConfigError, match=r'evil\.yaml.*could not determine a constructor.*python/'):
        Config.fromfile(str(path))
    assert not os.path.exists(marker)


def test_json_config_is_data_only(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text('{"model": {"type": "MLP", "__class__": "os.makedirs", "args": ["x"]}}', encoding='utf-8')
    cfg = Config.fromfile(str(path))
    assert cfg.model.to_dict() == {'type': 'MLP', '__class__': 'os.makedirs', 'args': ['x']}
    assert not os.path.exists(tmp_path / 'x')


def test_custom_imports_imports_only_the_named_modules(tmp_path, monkeypatch):
    for name in ('crsec_named', 'crsec_other'):
        (tmp_path / f'{name}.py').write_text(f'IMPORTED = "{name}"\n', encoding='utf-8')
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ('crsec_named', 'crsec_other'):
        monkeypatch.delitem(sys.modules, name, raising=False)
    path = tmp_path / 'cfg.yaml'
    path.write_text('custom_imports:\n  imports: [crsec_named]\nmodel: {type: MLP}\n', encoding='utf-8')
    Config.fromfile(str(path), import_custom_modules=False)
    assert 'crsec_named' not in sys.modules
    Config.fromfile(str(path))
    assert 'crsec_named' in sys.modules and 'crsec_other' not in sys.modules
