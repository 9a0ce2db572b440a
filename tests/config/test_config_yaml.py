"""YAML configs: YAML 1.2 floats on load, and dumps that load back unchanged."""
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
