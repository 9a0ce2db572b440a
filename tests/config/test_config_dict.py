"""ConfigDict and Config access: attributes, items, missing keys, copy and pickle."""
import copy
import pickle

import pytest

from colossal_runner.config import Config, ConfigDict


def make():
    return Config(dict(model=dict(type='MLP', hidden=[dict(width=4)]), optimizer=dict(lr=0.1)),
                  filename=None)


def test_attribute_and_item_access_and_dict_methods():
    cfg = make()
    assert cfg.model.type == 'MLP' and cfg['model']['type'] == 'MLP'
    assert cfg.model.hidden[0].width == 4  # dicts inside lists become ConfigDicts too
    assert set(cfg.keys()) == {'model', 'optimizer'} and len(cfg) == 2
    assert list(cfg) == ['model', 'optimizer'] and 'model' in cfg
    assert cfg.get('missing', 5) == 5
    cfg.optimizer.lr = 0.2
    cfg['new'] = dict(a=1)
    cfg.other = {'b': {'c': 2}}
    assert cfg.optimizer.lr == 0.2 and cfg.new.a == 1 and cfg.other.b.c == 2
    assert isinstance(cfg.other.b, ConfigDict)
    del cfg.new
    assert 'new' not in cfg


def test_setdefault_returns_the_stored_value():
    cfg = make()
    cfg.setdefault('extra', {})['x'] = 1
    assert cfg.extra == {'x': 1} and cfg.extra.x == 1
    cfg.model.setdefault('act', dict(type='ReLU'))['inplace'] = True
    assert cfg.model.act == dict(type='ReLU', inplace=True)
    assert cfg.setdefault('optimizer', {}) is cfg.optimizer and cfg.optimizer.lr == 0.1  # existing: unchanged
    with pytest.raises(ValueError, match="'text' is a reserved name"):
        cfg.setdefault('text', {})


def test_a_stored_plain_dict_is_a_config_dict_copy_and_a_stored_config_dict_is_kept():
    cfg = make()
    hook = dict(type='LossHook')
    cfg.myhook = hook
    hook['interval'] = 3  # documented: the config holds a copy, with attribute access
    assert cfg.myhook == dict(type='LossHook') and isinstance(cfg.myhook, ConfigDict)
    cfg.myhook.interval = 3  # change it through the config
    assert cfg.myhook.interval == 3
    shared = ConfigDict(type='LossHook')
    cfg.other = shared
    shared.interval = 5
    assert cfg.other is shared and cfg.other.interval == 5


def test_missing_attribute_names_the_key_and_the_closest_ones():
    cfg = make()
    with pytest.raises(AttributeError, match=r"no key 'optimiser'.*did you mean 'optimizer'.*Available keys: "
                                             r"model, optimizer"):
        cfg.optimiser
    with pytest.raises(AttributeError, match=r"no key 'optimizer\.lrr'.*did you mean 'optimizer\.lr'\? "
                                             r"Available keys in optimizer: lr"):
        cfg.optimizer.lrr
    with pytest.raises(KeyError, match=r"no key 'model\.tpye'.*did you mean 'model\.type'"):
        cfg.model['tpye']
    assert not hasattr(cfg.model, 'nope')
    assert getattr(cfg.optimizer, 'momentum', 0.9) == 0.9
    # a failed read does not create the key (plain addict would)
    assert 'lrr' not in cfg.optimizer


def test_config_dict_copy_deepcopy_and_pickle():
    d = ConfigDict(a=dict(b=[1, dict(c=2)]))
    shallow = copy.copy(d)
    assert shallow == d and shallow.a is d.a and type(shallow) is ConfigDict
    deep = copy.deepcopy(d)
    deep.a.b[1].c = 3
    assert d.a.b[1].c == 2 and isinstance(deep.a, ConfigDict)
    loaded = pickle.loads(pickle.dumps(d))
    assert loaded == d and isinstance(loaded.a.b[1], ConfigDict)
    assert loaded.a.b[1].c == 2


def test_config_copy_deepcopy_and_pickle_keep_values_filename_and_text():
    cfg = Config(dict(a=dict(b=1)), cfg_text='a = dict(b=1)\n', filename='/x/cfg.py')
    for other in (copy.copy(cfg), copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert other.to_dict() == {'a': {'b': 1}}
        assert other.filename == '/x/cfg.py' and other.text == 'a = dict(b=1)\n'
    shallow = copy.copy(cfg)
    deep = copy.deepcopy(cfg)
    deep.a.b = 2
    assert cfg.a.b == 1
    shallow.a.b = 3
    assert cfg.a.b == 3


def test_constructor_checks_its_input_and_repr_names_the_file():
    with pytest.raises(TypeError, match=r'cfg_dict must be a dict, got list'):
        Config([1, 2])
    cfg = Config(dict(a=1), filename='/x/cfg.py')
    assert repr(cfg) == "Config (path: /x/cfg.py): {'a': 1}"
    assert Config().to_dict() == {}


def test_missing_key_without_a_close_one_ends_its_sentence_and_names_the_full_path():
    cfg = Config(dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9), hooks=[dict(type='LossHook')]))
    with pytest.raises(KeyError) as info:
        cfg['optimizer']['xyz']
    assert info.value.args[0] == ("no key 'optimizer.xyz' in this config. Available keys in optimizer: lr, "
                                  'momentum, type.')
    with pytest.raises(AttributeError, match=r"no key 'hooks\[0\]\.typ' in this config; did you mean "
                                             r"'hooks\[0\]\.type'\? Available keys in hooks\[0\]: type\."):
        cfg.hooks[0].typ
