"""pretty_text and dump: the written config loads back to an equal one."""
import json
import math
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colossal_runner.config import Config, ConfigError


def assert_same(a, b, where='cfg'):
    """Equal values of the same kinds (list vs tuple, bool vs int, dicts of any mapping type)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        # order is kept inside values; top-level keys that cannot be assigned are written last
        assert (list(a) == list(b)) if where != 'cfg' else (set(a) == set(b)), where
        for k in a:
            assert_same(a[k], b[k], f'{where}[{k!r}]')
        return
    assert type(a) is type(b), f'{where}: {type(a).__name__} vs {type(b).__name__}'
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def reload_py(cfg, tmp_path, name='dumped.py'):
    target = tmp_path / name
    target.write_text(cfg.pretty_text, encoding='utf-8')
    return Config.fromfile(target)


def test_pretty_text_is_readable_python():
    cfg = Config(dict(model=dict(type='MLP', hidden=[32, 16]), sizes=(1,), empty=dict(), none=None))
    text = cfg.pretty_text
    assert "model = dict(type='MLP', hidden=[32, 16])" in text
    assert re.search(r'^sizes = \(1, ?\)$', text, re.M)
    assert 'empty = dict()' in text and 'none = None' in text


def test_awkward_keys_and_strings_round_trip(tmp_path):
    cfg = Config({
        'odd': {'with-dash': 1, 'class': 2, 3: 'three', '': 'empty', 'a b': [1, (2,)], 'x.y': None},
        'quotes': 'it\'s "quoted"\nand\ttabbed \\ back',
        'braces': 'keep {{ fileDirname }} and {{ _base_.x }} as written',
        'floats': [float('inf'), -0.5, 1e-300], 'sets': {3, 1}, 'frozen': frozenset({'a'}),
        'my-key': 1, 'lambda': 2, 'dict': dict(a=1), 'float': 3.5, 'globals': 'g', 'ª': {'ª': 1},
    })
    text = cfg.pretty_text
    assert 'globals().update(' in text  # keys that cannot be assigned are written last, together
    for loaded in (reload_py(cfg, tmp_path), Config.fromstring(text, '.py')):
        assert_same(cfg.to_dict(), loaded.to_dict())


def test_loaded_file_round_trips(tmp_path):
    cfg = Config.fromfile(__file__.rsplit('/', 2)[0] + '/data/config/runnable.py')
    assert_same(cfg.to_dict(), reload_py(cfg, tmp_path).to_dict())


def test_dump_by_extension_and_to_text(tmp_path):
    cfg = Config(dict(a=dict(b=[1, 2], c=(3, 4)), s='Grüße {{ x }}', n=None, f=0.5, t=True))
    assert cfg.dump() == cfg.pretty_text
    cfg.dump(tmp_path / 'out.py')
    assert_same(Config.fromfile(tmp_path / 'out.py').to_dict(), cfg.to_dict())
    as_lists = dict(a=dict(b=[1, 2], c=[3, 4]), s='Grüße {{ x }}', n=None, f=0.5, t=True)
    for ext in ('json', 'yaml', 'yml'):
        assert cfg.dump(tmp_path / f'out.{ext}') is None
        text = (tmp_path / f'out.{ext}').read_text(encoding='utf-8')
        assert 'Grüße' in text
        assert_same(Config.fromfile(tmp_path / f'out.{ext}').to_dict(), as_lists)
    assert json.loads((tmp_path / 'out.json').read_text(encoding='utf-8')) == as_lists
    assert yaml.safe_load((tmp_path / 'out.yaml').read_text(encoding='utf-8')) == as_lists
    # without a target, the format of the file the config came from
    from_json = Config.fromfile(tmp_path / 'out.json')
    assert json.loads(from_json.dump()) == as_lists
    assert yaml.safe_load(Config.fromfile(tmp_path / 'out.yaml').dump()) == as_lists


def test_dump_errors_name_the_key_path_and_allowed_formats(tmp_path):
    cfg = Config(dict(model=dict(layers=[1, {'act': object}])))
    pattern = r'key model\.layers\[1\]\.act: a type .* cannot be written to JSON/YAML'
    with pytest.raises(ConfigError, match=pattern):
        cfg.dump(tmp_path / 'x.json')
    with pytest.raises(ConfigError, match=r"unsupported config format '\.toml'.*expected one of"):
        cfg.dump(tmp_path / 'x.toml')


# directives and reserved names are not data: they do not survive loading, by design
RESERVED = {'filename', 'text', 'pretty_text', '_base_', '_delete_', 'custom_imports'}
keys = st.one_of(st.text(max_size=8), st.integers(-5, 1000)).filter(lambda k: k != '_delete_')
top_keys = st.text(max_size=8).filter(lambda k: k not in RESERVED and not k.startswith('__'))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                    st.floats(allow_nan=False), st.frozensets(st.integers(0, 9), max_size=3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
                            st.dictionaries(keys, inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(top_keys, values, max_size=4))
def test_pretty_text_round_trip_property(data):
    cfg = Config(data)
    loaded = Config.fromstring(cfg.pretty_text, '.py')
    assert_same(cfg.to_dict(), loaded.to_dict())


@pytest.mark.parametrize('key', ['A·', 'é', 'ª'])
def test_non_ascii_identifier_keys_round_trip(key, tmp_path):
    # 'A·' is a valid Python identifier that yapf's tokenizer rejects; 'ª' NFKC-normalises to 'a'.
    cfg = Config({key: None, 'nested': {key: [1, 'two']}})
    path = tmp_path / 'cfg.py'
    path.write_text(cfg.pretty_text, encoding='utf-8')
    loaded = Config.fromfile(str(path))
    assert loaded.to_dict() == cfg.to_dict()


def test_values_without_config_text_are_an_error_naming_the_key(tmp_path):
    """Before, a class fell back to its repr and yapf failed on it ('invalid syntax'); torch.float32
    was written as torch.float32, which does not load back."""
    import torch

    def my_collate(batch):
        return batch

    cases = [
        (dict(loss=dict(type=torch.nn.CrossEntropyLoss)), 'loss.type',
         r"a class \(torch\.nn\.modules\.loss\.CrossEntropyLoss\) has no config text.*'CrossEntropyLoss'"),
        (dict(data=dict(train=dict(dataloader=dict(collate_fn=my_collate)))),
         'data.train.dataloader.collate_fn',
         r"a function \(.*my_collate\) has no config text.*'my_collate'"),
        (dict(amp=dict(dtypes=[torch.float32])), 'amp.dtypes[0]',
         r'a dtype \(torch\.float32\) has no config'),
        ({'odd-key': {'w': torch.tensor([1.0])}}, "['odd-key'].w", r'a Tensor \(tensor\(\[1\.\]\)\)'),
    ]
    for data, key, message in cases:
        cfg = Config(data, filename=str(tmp_path / 'c.py'))
        for write in (lambda: cfg.pretty_text, lambda: cfg.dump(tmp_path / 'out.py')):
            with pytest.raises(ConfigError, match=message) as info:
                write()
            assert info.value.key_path == key and info.value.filename == str(tmp_path / 'c.py')


def test_numbers_of_number_subclasses_are_written_as_the_plain_numbers_they_equal():
    np = pytest.importorskip('numpy')
    cfg = Config(dict(lr=np.float64(0.25), steps=[np.float64('inf')], flag=True, n=3, k=np.int64(7),
                      half=np.float32(0.5), z=1 + 2j, r=range(3)))
    loaded = Config.fromstring(cfg.pretty_text, '.py')
    assert loaded.to_dict() == dict(lr=0.25, steps=[math.inf], flag=True, n=3, k=7, half=0.5, z=1 + 2j,
                                    r=range(3))
    assert type(loaded.lr) is float and type(loaded.k) is int


def test_unwritable_values_can_be_written_as_strings_naming_them():
    import torch

    from colossal_runner.config.pretty import pretty_text
    found = []
    text = pretty_text(dict(loss=dict(type=torch.nn.MSELoss), lr=0.1), unwritable=found)
    assert found == [('loss.type', torch.nn.MSELoss)]
    assert Config.fromstring(text, '.py').to_dict() == dict(
        loss=dict(type='torch.nn.modules.loss.MSELoss'), lr=0.1)


def test_to_dict_gives_plain_dicts_inside_nested_lists_and_tuples():
    from colossal_runner.config import ConfigDict
    values = Config(dict(a=[[dict(x=1)]], b=([dict(y=1)],), c=dict(d=[(dict(z=[dict(w=2)]),)]))).to_dict()

    def dict_types(value):
        if isinstance(value, dict):
            return [type(value)] + [t for v in value.values() for t in dict_types(v)]
        if isinstance(value, (list, tuple)):
            return [t for v in value for t in dict_types(v)]
        return []
    assert set(dict_types(values)) == {dict}
    assert not any(issubclass(t, ConfigDict) for t in dict_types(values))
    assert values == dict(a=[[dict(x=1)]], b=([dict(y=1)],), c=dict(d=[(dict(z=[dict(w=2)]),)]))
    assert isinstance(values['b'], tuple)  # only the dicts change
    assert yaml.safe_load(yaml.safe_dump(values))['a'] == [[{'x': 1}]]


@pytest.mark.parametrize('values, key_path, key', [
    (dict(w={0: 1.0}), 'w[0]', '0 (int)'), (dict(b={True: 1}), 'b[True]', 'True (bool)'),
    (dict(n=[{None: 1}]), 'n[0][None]', 'None (NoneType)'),
    (dict(t={(1, 2): 1}), 't[(1, 2)]', '(1, 2) (tuple)'),
])
def test_a_json_dump_refuses_keys_that_are_not_strings(tmp_path, values, key_path, key):
    cfg = Config(values)
    with pytest.raises(ConfigError) as info:
        cfg.dump(tmp_path / 'x.json')
    assert info.value.key_path == key_path
    assert info.value.message.startswith(f'the key {key} cannot be written to JSON, whose keys are strings '
                                         f'only')
    assert not (tmp_path / 'x.json').exists()
    if not key_path.startswith('t'):  # YAML keeps such keys (a tuple key it cannot read back)
        cfg.dump(tmp_path / 'x.yaml')
        assert Config.fromfile(tmp_path / 'x.yaml').to_dict() == values


@pytest.mark.parametrize('fmt, text', [('yaml', 'a: 1\n'), ('.yml', 'a: 1\n'), ('json', '{"a": 1}'),
                                       ('py', 'a = 1\n')])
def test_dump_without_a_file_uses_the_format_given_to_fromstring(fmt, text):
    cfg = Config.fromstring(text, fmt)
    out = cfg.dump()
    ext = '.' + fmt.lstrip('.')
    assert Config.fromstring(out, ext).to_dict() == {'a': 1}
    if ext == '.json':
        assert json.loads(out) == {'a': 1}
    elif ext != '.py':
        assert yaml.safe_load(out) == {'a': 1} and '=' not in out
    import copy
    import pickle
    assert copy.deepcopy(cfg).dump() == out and pickle.loads(pickle.dumps(cfg)).dump() == out


def test_a_configs_own_underscore_format_key_stays_reachable_as_an_attribute():
    cfg = Config.fromstring("_format = 'NCHW'\n", 'py')
    assert cfg._format == cfg['_format'] == 'NCHW' and cfg.dump() == "_format = 'NCHW'\n"
