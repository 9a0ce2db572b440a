import pytest
import torch

from colossal_runner.data import Digits, SyntheticClassification
from colossal_runner.registry import DATASETS


def test_digits_split_is_fixed_disjoint_and_stratified():
    train, test = Digits('train'), Digits('test')
    assert len(train) + len(test) == 1797
    assert len(test) == pytest.approx(0.2 * 1797, abs=1)
    # Same split on every build (does not depend on the global RNG).
    torch.manual_seed(123)
    again = Digits('test')
    assert torch.equal(again.data, test.data) and torch.equal(again.targets, test.targets)
    # No test image appears in train.
    train_rows = {tuple(row.tolist()) for row in train.data}
    assert not any(tuple(row.tolist()) in train_rows for row in test.data[:50])
    counts = torch.bincount(test.targets, minlength=10)
    assert counts.min() >= 30, counts  # stratified: every class present in proportion


def test_digits_items_shapes_and_normalisation():
    flat = Digits('train')
    x, y = flat[0]
    assert x.shape == (64,) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(flat.data.mean())) < 1e-4 and abs(float(flat.data.std()) - 1) < 1e-3
    image = Digits('train', flatten=False)
    assert image[0][0].shape == (1, 8, 8)
    assert torch.equal(image[5][0].flatten(), flat[5][0])
    raw = Digits('train', normalize=False)
    assert float(raw.data.max()) == 16.0


def test_digits_bad_split_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\), got 'val'"):
        Digits('val')


def test_datasets_registered_and_built_from_config():
    ds = DATASETS.build(dict(type='Digits', split='test', flatten=False))
    assert isinstance(ds, Digits) and ds.data.shape[1:] == (1, 8, 8)
    synthetic = DATASETS.build(dict(type='SyntheticClassification', num_samples=8))
    assert isinstance(synthetic, SyntheticClassification)


def test_synthetic_is_seeded_and_splits_share_the_task():
    a = SyntheticClassification(64, 8, 3, seed=1)
    b = SyntheticClassification(64, 8, 3, seed=1)
    c = SyntheticClassification(64, 8, 3, seed=2)
    assert torch.equal(a.data, b.data) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.data, c.data)
    test = SyntheticClassification(64, 8, 3, seed=1, split='test')
    assert not torch.equal(a.data, test.data)
    shaped = SyntheticClassification(4, 64, 3, shape=(1, 8, 8))
    assert shaped[0][0].shape == (1, 8, 8)


def test_synthetic_is_learnable_and_generalises():
    torch.manual_seed(0)
    train = SyntheticClassification(512, 16, 4, seed=3)
    test = SyntheticClassification(256, 16, 4, seed=3, split='test')
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(model(train.data), train.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(test.data).argmax(1) == test.targets).float().mean()
    assert acc > 0.9


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_samples=0), 'num_samples must be a positive int, got 0'),
    (dict(num_classes=2.5), 'num_classes must be a positive int, got 2.5'),
    (dict(split='val'), "split must be 'train' or 'test', got 'val'"),
    (dict(num_features=10, shape=(3, 3)), r'shape \(3, 3\) has 9 elements but num_features=10'),
])
def test_synthetic_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticClassification(**kwargs)


@pytest.mark.parametrize('ratio', [0, 1, 1.5, '0.2', True])
def test_digits_test_ratio_is_a_share(ratio):
    with pytest.raises(ValueError, match=rf"Digits test_ratio must be a number in \(0, 1\).*got {ratio!r}"):
        Digits('train', test_ratio=ratio)
