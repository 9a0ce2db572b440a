"""The bundled datasets take transform / target_transform, as torchvision's datasets do."""
import pytest
import torch

from colossal_runner.data import CharText, Digits, SyntheticClassification, build_dataloader, build_dataset

TEXT = 'the quick brown fox jumps over the lazy dog. ' * 20
BUNDLED = [
    (Digits, dict(split='test')),
    (SyntheticClassification, dict(num_samples=16, num_features=4, num_classes=3)),
    (CharText, dict(block_size=8, text=TEXT)),
]


@pytest.mark.parametrize('cls, kwargs', BUNDLED, ids=lambda v: getattr(v, '__name__', ''))
def test_callables_are_applied_to_each_item(cls, kwargs):
    plain = cls(**kwargs)
    shifted = cls(**kwargs, transform=lambda x: x * 2 + 1, target_transform=lambda y: y + 100)
    for index in (0, len(plain) - 1):
        (x, y), (tx, ty) = plain[index], shifted[index]
        assert torch.equal(tx, x * 2 + 1) and torch.equal(ty, y + 100)
    assert len(shifted) == len(plain)


@pytest.mark.parametrize('cls, kwargs', BUNDLED, ids=lambda v: getattr(v, '__name__', ''))
def test_configs_from_transforms_are_built_and_composed(cls, kwargs):
    """As data.train.dataset.transform in a config: a dict, or a list of dicts composed in order."""
    pytest.importorskip('torchvision')
    plain = cls(**kwargs)
    cfg = dict(type=cls.__name__, **kwargs,
               transform=[dict(type='Lambda', lambd=lambda x: x + 1),
                          dict(type='Lambda', lambd=lambda x: x * 3)],
               target_transform=dict(type='Lambda', lambd=lambda y: -y))
    built = build_dataset(cfg)
    for ds in (built, cls(**{k: v for k, v in cfg.items() if k != 'type'})):  # configs given directly too
        x, y = plain[1]
        tx, ty = ds[1]
        assert torch.equal(tx, (x + 1) * 3) and torch.equal(ty, -y)
    batch_x, batch_y = next(iter(build_dataloader(dict(batch_size=4), built)))
    assert torch.equal(batch_x[1], (plain[1][0] + 1) * 3) and torch.equal(batch_y[1], -plain[1][1])


@pytest.mark.parametrize('cls, kwargs', BUNDLED, ids=lambda v: getattr(v, '__name__', ''))
def test_a_transform_that_is_not_callable_names_the_key(cls, kwargs):
    with pytest.raises(TypeError, match=rf'{cls.__name__} target_transform must be a callable, a '
                                        r"dict\(type=\.\.\.\) from TRANSFORMS.*got str 'flip'"):
        cls(**kwargs, target_transform='flip')
