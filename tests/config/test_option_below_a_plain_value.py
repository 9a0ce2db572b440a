"""``--cfg-options clip_grad_norm.max_norm=35`` where clip_grad_norm is a number: the error says to
set the value directly, not to add ``_delete_=True`` (no help on the command line); a config file
merging a dict over a base's number keeps the ``_delete_`` advice, which fixes it there."""
import pytest

from colossal_runner.config import Config, ConfigError


def test_a_dotted_option_below_a_number_says_to_set_the_number(tmp_path):
    config = tmp_path / 'run.py'
    config.write_text('clip_grad_norm = 0.0\noptimizer = dict(type="SGD", lr=0.1)\n')
    cfg = Config.fromfile(str(config))
    with pytest.raises(ConfigError) as info:
        cfg.merge_from_dict({'clip_grad_norm.max_norm': 35})
    err = info.value
    assert err.filename == str(config) and err.key_path == 'clip_grad_norm'
    assert "clip_grad_norm is a number (0.0), not a dict, so it has no 'max_norm' to set: set it directly, " \
           "e.g. clip_grad_norm=35." in str(err)
    assert '_delete_' not in str(err)
    with pytest.raises(ConfigError, match=r"optimizer.type is a string \('SGD'\), not a dict.*e.g. "
                                          r"optimizer.type='SGD'"):
        cfg.merge_from_dict({'optimizer.type.name.x': 1})  # deeper than one level: the current value
    with pytest.raises(ConfigError, match=r'is True or False \(True\)'):
        Config(dict(flag=True)).merge_from_dict({'flag.on': 1})


def test_a_config_file_merging_a_dict_over_a_bases_number_keeps_the_delete_advice(tmp_path):
    (tmp_path / 'base.py').write_text('clip_grad_norm = 0.0\n')
    (tmp_path / 'child.py').write_text("_base_ = './base.py'\nclip_grad_norm = dict(max_norm=35)\n")
    with pytest.raises(ConfigError, match=r'a dict cannot be merged into the existing float value 0.0; '
                                          r'add _delete_=True to the dict to replace it'):
        Config.fromfile(str(tmp_path / 'child.py'))


def test_a_whole_dict_given_in_code_over_a_number_keeps_the_delete_advice():
    cfg = Config(dict(a=1))
    with pytest.raises(ConfigError, match=r'a dict cannot be merged into the existing int value 1; add '
                                          r'_delete_=True to the dict to replace it'):
        cfg.merge_from_dict({'a': dict(type='X', k=1)})
    cfg.merge_from_dict({'a': dict(type='X', k=1, _delete_=True)})  # the advice works
    assert cfg.a == dict(type='X', k=1)
