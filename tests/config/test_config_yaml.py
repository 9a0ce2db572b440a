"""YAML configs: YAML 1.2 floats on load, and dumps that load back unchanged."""
import sys

import pytest

from colossal_runner.config import Config


@pytest.mark.parametrize('written, value', [
    ('1e-3', 1e-3), ('1E5', 1e5), ('-2.5e-4', -2.5e-4), ('+3e2', 3e2), ('1.0e3', 1e3), ('.5e1', 5.0),
    ('0.1', 0.1), ('10', 10), ('1_000', 1000), ("'1e-3'", '1e-3'), ('1e', '1e'), ('e3', 'e3'),
])
def test_yaml_scalars_load_like_yaml_1_2_numbers(written, value):
    loaded = Config.fromstring(f'lr: {written}\n', '.yaml').lr
    assert loaded == value and type(loaded) is type(value)


def test_a_yaml_dump_loads_back_to_the_same_values(tmp_path):
    values = {'keep': 'keep {{ fileDirname }} here', 'ref': '{{ _base_.model }}', 'many': 'a{{{{b',
              'multi': 'line\n{{ fileBasename }}\n', '{{ key }}': 1, 'float_text': '1e-3', 'lr': 1e-3,
              'big': 1.5e300, 'n': 3, 'long': 'x ' * 60 + '{{ fileExtname }}' + ' y' * 60}
    cfg = Config(values, filename=str(tmp_path / 'src.yaml'))
    out = tmp_path / 'dumped.yaml'
    cfg.dump(str(out))
    text = out.read_text(encoding='utf-8')
    assert '{{' not in text  # nothing left for a reload to substitute
    reloaded = Config.fromfile(str(out))
    assert reloaded.to_dict() == values
    assert type(reloaded.lr) is float and type(reloaded.float_text) is str
    assert Config.fromstring(cfg.dump(), '.yaml').to_dict() == values  # dump() as text, too


def test_numpy_numbers_dump_to_yaml_and_json_as_the_plain_numbers_they_equal(tmp_path):
    np = pytest.importorskip('numpy')
    values = dict(lr=np.float64(0.25), half=np.float32(0.5), steps=[np.int64(7), (np.int32(2),)],
                  flag=np.bool_(True), name=np.str_('mlp'))
    plain = dict(lr=0.25, half=0.5, steps=[7, [2]], flag=True, name='mlp')
    for ext in ('.yaml', '.json'):
        out = tmp_path / f'dumped{ext}'
        Config(values).dump(str(out))  # used to fail on YAML with a bare RepresenterError
        reloaded = Config.fromfile(str(out)).to_dict()
        assert reloaded == plain
        assert [type(reloaded[k]) for k in ('lr', 'half', 'flag', 'name')] == [float, float, bool, str]
        assert type(reloaded['steps'][0]) is int and type(reloaded['steps'][1][0]) is int


def test_numpy_numbers_in_a_py_config_load_as_plain_numbers(tmp_path):
    pytest.importorskip('numpy')
    base = tmp_path / 'base.py'
    base.write_text('import numpy as np\n'
                    'optimizer = dict(lr=0.003 * np.sqrt(1.0), betas=(np.float32(0.5), 0.9))\n'
                    'steps = [np.int64(3), [np.int16(4)]]\nflag = np.bool_(False)\n')
    child = tmp_path / 'child.yaml'  # a YAML config on a .py base: its dump used to fail
    child.write_text('_base_: ./base.py\n')
    cfg = Config.fromfile(str(child))
    assert type(cfg.optimizer.lr) is float and cfg.optimizer.lr == 0.003
    assert [type(v) for v in cfg.optimizer.betas] == [float, float] and type(cfg.optimizer.betas) is tuple
    assert type(cfg.steps[0]) is int and [type(v) for v in cfg.steps[1]] == [int]
    assert cfg.flag is False
    assert [type(v) for v in Config.fromstring('import numpy as np\ns = {np.int16(4)}', '.py').s] == [int]
    assert Config.fromstring(cfg.dump(), '.yaml').to_dict()['optimizer'] == dict(lr=0.003, betas=[0.5, 0.9])


def test_only_numpy_numbers_are_converted_on_load_and_str_enums_dump_their_value(tmp_path):
    pytest.importorskip('numpy')
    helper = tmp_path / 'cr_cfg_kinds.py'
    helper.write_text('import enum\n\nclass Mode(str, enum.Enum):\n    A = "a"\n\n'
                      'class Milestone(int):\n    pass\n')
    config = tmp_path / 'kinds.py'
    config.write_text('import sys\nsys.path.insert(0, %r)\nimport numpy as np\n'
                      'from cr_cfg_kinds import Milestone, Mode\n'
                      'period = np.timedelta64(30, "m")\nmilestone = Milestone(3)\nmode = Mode.A\n'
                      % str(tmp_path))
    try:
        cfg = Config.fromfile(str(config))  # a timedelta64 is an integer to numpy: it used to fail here
        assert type(cfg.period).__name__ == 'timedelta64'
        assert type(cfg.milestone).__name__ == 'Milestone' and cfg.mode.value == 'a'
        dumped = Config(dict(mode=cfg.mode, milestone=cfg.milestone))
        for ext in ('.json', '.yaml', '.py'):
            out = tmp_path / f'dumped{ext}'
            dumped.dump(str(out))  # a (str, Enum) member used to be written as its name, 'Mode.A'
            assert Config.fromfile(str(out)).to_dict() == dict(mode='a', milestone=3)
    finally:
        sys.modules.pop('cr_cfg_kinds', None)
