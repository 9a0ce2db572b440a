"""A ``{{ _base_.x.y }}`` reference with a typo gets the closest key at the level where the lookup
failed, not only at the last one."""
import pytest

from colossal_runner.config import Config, ConfigError

BASE = "optimizer = dict(type='SGD', lr=0.1)\nmodel = dict(head=dict(dim=3))\n"


def _load(tmp_path, reference):
    (tmp_path / 'base.py').write_text(BASE)
    (tmp_path / 'child.py').write_text(f"_base_ = './base.py'\nvalue = {{{{ _base_.{reference} }}}}\n")
    return Config.fromfile(str(tmp_path / 'child.py'))


@pytest.mark.parametrize('reference, suggestion', [
    ('optimzer.lr', "Did you mean 'optimizer' ({{ _base_.optimizer.lr }})?"),
    ('model.haed.dim', "Did you mean 'head' ({{ _base_.model.head.dim }})?"),
    ('optimizer.lrr', "Did you mean 'lr'?"),
])
def test_the_closest_key_is_suggested_where_the_lookup_fails(tmp_path, reference, suggestion):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, reference)
    message = str(info.value)
    assert f'{{{{ _base_.{reference} }}}} names a value that no _base_ file defines' in message
    assert message.endswith(suggestion), message
    assert info.value.key_path == 'value'


def test_no_suggestion_when_nothing_is_close_and_a_good_reference_resolves(tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, 'zzz.dim')
    assert 'Did you mean' not in str(info.value)
    assert _load(tmp_path, 'model.head.dim').value == 3
