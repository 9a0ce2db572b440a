"""Config.merge_from_dict: what --cfg-options feeds."""
import pytest

from colossal_runner.config import Config, ConfigDict, ConfigError


def make():
    return Config(dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9),
                       hooks=[dict(type='LossHook'), dict(type='SaveCheckpointHook', interval=1)],
                       sizes=(1, 2, 3), model=dict(type='MLP', act=dict(type='ReLU', inplace=True))))


def test_dotted_keys_and_new_keys():
    cfg = make()
    cfg.merge_from_dict({'optimizer.lr': 0.05, 'optimizer.nesterov': True, 'work_dir': 'w', 'a.b.c': 1})
    assert cfg.optimizer == dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True)
    assert cfg.work_dir == 'w' and cfg.a.b.c == 1 and isinstance(cfg.a.b, ConfigDict)


def test_list_and_tuple_indices():
    cfg = make()
    cfg.merge_from_dict({'hooks.1.interval': 5, 'hooks.0.priority': 'LOW', 'sizes.2': 9})
    assert cfg.hooks[1] == dict(type='SaveCheckpointHook', interval=5)
    assert cfg.hooks[0].priority == 'LOW'
    assert cfg.sizes == (1, 2, 9)


def test_dict_values_merge_unless_delete():
    cfg = make()
    cfg.merge_from_dict({'model': dict(act=dict(type='GELU'))})
    assert cfg.model.act == dict(type='GELU', inplace=True)
    cfg.merge_from_dict({'model.act': dict(_delete_=True, type='SiLU')})
    assert cfg.model.act == dict(type='SiLU')
    cfg.merge_from_dict({'model._delete_': True, 'model.type': 'CNN'})
    assert cfg.model == dict(type='CNN')


def test_whole_values_are_replaced_and_options_are_not_aliased():
    cfg = make()
    new_hooks = [dict(type='A')]
    cfg.merge_from_dict({'hooks': new_hooks})
    assert cfg.hooks == [dict(type='A')]
    new_hooks.append(dict(type='B'))
    assert len(cfg.hooks) == 1


def test_errors_name_the_key_path():
    cfg = make()
    with pytest.raises(ConfigError, match=r'key hooks\[5\]: index 5 is out of range: the list has 2 items'):
        cfg.merge_from_dict({'hooks.5.interval': 1})
    with pytest.raises(ConfigError, match=r"key hooks\.type: this is a list.*'hooks\.0\.type'"):
        cfg.merge_from_dict({'hooks.type': 'X'})
    with pytest.raises(ConfigError, match=r'key optimizer\.lr: .*float value 0\.1.*_delete_=True'):
        cfg.merge_from_dict({'optimizer.lr.value': 1})
    with pytest.raises(ConfigError, match=r'key hooks: .*existing list.*allow list keys'):
        cfg.merge_from_dict({'hooks.0.interval': 1}, allow_list_keys=False)
    with pytest.raises(ConfigError, match=r"invalid option key 'a\.\.b'"):
        cfg.merge_from_dict({'a..b': 1})
    with pytest.raises(ConfigError, match=r"'a\.b' reaches into a value that another option sets to 1"):
        cfg.merge_from_dict({'a': 1, 'a.b': 2})
    with pytest.raises(TypeError, match='options must be a dict'):
        cfg.merge_from_dict(['a=1'])
    # a failed merge leaves the config unchanged
    assert cfg.to_dict() == make().to_dict()
