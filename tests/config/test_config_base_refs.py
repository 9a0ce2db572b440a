"""{{ _base_.x }}: whole values are swapped for base values; any other use is an error saying where."""
import textwrap

import pytest

from colossal_runner.config import Config, ConfigError

BASE = "model = dict(type='MLP', hidden=[8, 4])\noptimizer = dict(type='SGD', lr=0.1)\n"


def write(tmp_path, name, text):
    (tmp_path / 'base.py').write_text(BASE, encoding='utf-8')
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding='utf-8')
    return str(path)


@pytest.mark.parametrize('name, text', [
    ('whole.py', """\
        _base_ = './base.py'
        lr = {{ _base_.optimizer.lr }}
        nested = dict(sizes=[{{ _base_.model.hidden.1 }}, 2], model={{ _base_.model }})
        """),
    ('whole.yaml', """\
        _base_: ./base.py
        lr: {{ _base_.optimizer.lr }}
        nested:
          sizes: [{{ _base_.model.hidden.1 }}, 2]
          model: {{ _base_.model }}
        """),
    ('whole.json', """\
        {"_base_": "./base.py", "lr": {{ _base_.optimizer.lr }},
         "nested": {"sizes": [{{ _base_.model.hidden.1 }}, 2], "model": {{ _base_.model }}}}
        """),
])
def test_whole_value_references_are_replaced_in_every_format(tmp_path, name, text):
    cfg = Config.fromfile(write(tmp_path, name, text))
    assert cfg.lr == 0.1 and cfg.nested.sizes == [4, 2]
    assert cfg.nested.model == dict(type='MLP', hidden=[8, 4])
    assert '__base_ref' not in repr(cfg.to_dict())


@pytest.mark.parametrize('name, text, key, shown', [
    ('single.py', "_base_ = './base.py'\nwork_dir = 'work_dirs/{{ _base_.model.type }}_run'\n", 'work_dir',
     'work_dirs/{{ _base_.model.type }}_run'),
    ('double.py', "_base_ = './base.py'\nrun = dict(name=\"x{{ _base_.model.type }}\")\n", 'run.name',
     'x{{ _base_.model.type }}'),
    ('quoted.yaml', "_base_: ./base.py\na: '{{ _base_.optimizer.lr }}'\n", 'a', '{{ _base_.optimizer.lr }}'),
    ('plain.yaml', "_base_: ./base.py\na: lr {{ _base_.optimizer.lr }}\n", 'a',
     'lr {{ _base_.optimizer.lr }}'),
])
def test_a_reference_inside_a_string_is_an_error_naming_file_key_and_reference(tmp_path, name, text, key,
                                                                              shown):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        Config.fromfile(path)
    message = str(info.value)
    assert message.startswith(f'config {path}, key ')
    assert info.value.key_path == key
    assert 'is part of a string' in message and repr(shown) in message
    assert 'must be a whole, unquoted value' in message
    assert '__base_ref' not in message


def test_a_reference_inside_a_json_string_is_explained_in_the_syntax_error(tmp_path):
    path = write(tmp_path, 'in_string.json', '{"_base_": "./base.py",\n "a": "x{{ _base_.model.type }}"}\n')
    with pytest.raises(ConfigError, match=r'invalid JSON at line 2.*x\{\{ _base_\.model\.type \}\}.*'
                                          r'must be a whole, unquoted value') as info:
        Config.fromfile(path)
    assert '__base_ref' not in str(info.value)


@pytest.mark.parametrize('line, operation', [
    ('lr2 = {{ _base_.optimizer.lr }} * 2', 'arithmetic'),
    ('lr2 = 1 + {{ _base_.optimizer.lr }}', 'arithmetic'),
    ("lr2 = f'{ {{ _base_.optimizer.lr }} }'", 'a conversion or formatting'),
    ('lr2 = {{ _base_.model }}["type"]', 'indexing or iteration'),
    ('lr2 = 1 if {{ _base_.optimizer.lr }} > 0 else 2', 'a comparison'),
])
def test_a_reference_used_in_an_expression_is_an_error_naming_the_line_and_key(tmp_path, line, operation):
    path = write(tmp_path, 'expr.py', f"_base_ = './base.py'\n{line}\n")
    with pytest.raises(ConfigError) as info:
        Config.fromfile(path)
    message = str(info.value)
    assert info.value.filename == path and info.value.key_path == 'lr2'
    assert 'line 2: {{ _base_.' in message and f'is used in {operation}' in message
    assert repr(line) in message and 'must be a whole, unquoted value' in message
    assert '__base_ref' not in message


def test_a_reference_as_a_key_is_an_error(tmp_path):
    path = write(tmp_path, 'key.py', "_base_ = './base.py'\nd = { {{ _base_.model.type }}: 1}\n")
    with pytest.raises(ConfigError, match=r"key d: \{\{ _base_\.model\.type \}\} is used as a key"):
        Config.fromfile(path)
