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
    with pytest.raises(ConfigError, match=r'key optimizer\.lr: optimizer\.lr is a number \(0\.1\), not a '
                                          r'dict.*set it directly, e\.g\. optimizer\.lr=1\.'):
        cfg.merge_from_dict({'optimizer.lr.value': 1})
    with pytest.raises(ConfigError, match=r'key hooks: .*existing list.*allow list keys'):
        cfg.merge_from_dict({'hooks.0.interval': 1}, allow_list_keys=False)
    with pytest.raises(ConfigError, match=r"invalid option key 'a\.\.b'"):
        cfg.merge_from_dict({'a..b': 1})
    with pytest.raises(TypeError, match='options must be a dict'):
        cfg.merge_from_dict(['a=1'])
    # a failed merge leaves the config unchanged
    assert cfg.to_dict() == make().to_dict()


@pytest.mark.parametrize('options', [{'a': 1, 'a.b': 2}, {'a.b': 2, 'a': 1}])
def test_a_key_and_a_dotted_key_beneath_its_scalar_value_conflict_in_either_order(options):
    cfg = make()
    with pytest.raises(ConfigError, match=r"key a\.b: options 'a' and 'a\.b' conflict: 'a' sets a to 1, "
                                          r"which 'a\.b' cannot reach into"):
        cfg.merge_from_dict(options)
    assert cfg.to_dict() == make().to_dict()


def test_a_conflict_inside_a_whole_dict_value_names_the_option_holding_it():
    with pytest.raises(ConfigError, match=r"options 'model' and 'model\.act\.type\.x' conflict: 'model' sets "
                                          r"model\.act\.type to 'GELU'"):
        make().merge_from_dict({'model.act.type.x': 1, 'model': dict(act=dict(type='GELU'))})


@pytest.mark.parametrize('options', [{'optimizer': dict(type='Adam'), 'optimizer.lr': 0.5},
                                     {'optimizer.lr': 0.5, 'optimizer': dict(type='Adam')}])
def test_a_whole_dict_value_and_a_dotted_key_beneath_it_combine_in_either_order(options):
    cfg = make()
    cfg.merge_from_dict(options)
    assert cfg.optimizer == dict(type='Adam', lr=0.5, momentum=0.9)


def test_a_dotted_key_applies_on_top_of_a_whole_value_with_delete():
    cfg = make()
    cfg.merge_from_dict({'optimizer.lr': 0.5, 'optimizer': dict(_delete_=True, type='Adam')})
    assert cfg.optimizer == dict(type='Adam', lr=0.5)


def test_a_negative_list_index_says_which_index_to_write():
    cfg = make()
    with pytest.raises(ConfigError, match=r"key hooks\['-1'\]: negative indexes are not supported; this list "
                                          r"has 2 items, so item -1 is 'hooks\.1'") as info:
        cfg.merge_from_dict({'hooks.-1.interval': 3})
    assert 'hooks.0.-1' not in str(info.value)
    with pytest.raises(ConfigError, match=r"index -3 is out of range: the list has 2 items"):
        cfg.merge_from_dict({'hooks.-3.interval': 3})


def test_a_conflict_under_a_list_names_the_option_as_given():
    cfg = make()
    with pytest.raises(ConfigError) as info:
        cfg.merge_from_dict({'hooks': [dict(type='LossHook')], 'hooks.0.interval': 3})
    assert info.value.key_path == 'hooks.0.interval'  # not hooks['0'].interval, a dict key '0'
    assert "options 'hooks' and 'hooks.0.interval' conflict" in info.value.message


@pytest.mark.parametrize('key', ['+1', ' 1', '1 '])
def test_an_index_written_oddly_is_told_to_be_plain_digits(key):
    with pytest.raises(ConfigError) as info:
        make().merge_from_dict({f'hooks.{key}.interval': 3})
    assert info.value.message == (f"this is a list, so an index is plain digits (e.g. 'hooks.1'); got key "
                                  f'{key!r}.')


def test_a_name_under_a_list_still_suggests_it_inside_an_item():
    with pytest.raises(ConfigError) as info:
        make().merge_from_dict({'hooks.interval': 3})
    assert "its items are addressed by index (e.g. 'hooks.0.interval')" in info.value.message
