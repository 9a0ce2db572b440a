import pickle

import pytest
import torch
from torch import nn

from colossal_runner.models import MLP, SequenceCrossEntropyLoss, SimpleCNN, TinyGPT
from colossal_runner.registry import LOSSES, MODELS

CONFIGS = [
    (dict(type='MLP', in_features=64, hidden=[32, 16], num_classes=10, dropout=0.1), (5, 64)),
    (dict(type='SimpleCNN', in_channels=1, channels=[8, 16], image_size=8, hidden=32), (5, 1, 8, 8)),
    (dict(type='TinyGPT', vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16), None),
]


def _input(shape):
    if shape is None:
        return torch.randint(30, (5, 12))
    return torch.randn(*shape)


@pytest.mark.parametrize('cfg, shape', CONFIGS, ids=lambda c: c['type'] if isinstance(c, dict) else '')
def test_models_are_sequential_and_layers_are_picklable(cfg, shape):
    model = MODELS.build(dict(cfg))
    assert isinstance(model, nn.Sequential) and len(model) >= 3
    out = model(_input(shape))
    expected = (5, 10) if shape is not None else (5, 12, 30)
    assert out.shape == expected
    # Running the children one by one is the same as running the model (what a pipeline does).
    x = _input(shape)
    model.eval()
    y = x
    for layer in model:
        y = layer(y)
    assert torch.equal(y, model(x))
    for layer in model:
        pickle.loads(pickle.dumps(layer))


@pytest.mark.parametrize('cfg, shape', CONFIGS, ids=lambda c: c['type'] if isinstance(c, dict) else '')
def test_meta_build_then_reset_in_order_equals_direct_build(cfg, shape):
    """The pipeline builds on the meta device and materialises layer by layer with each
    module's reset_parameters: the models must use only those default initialisations."""
    torch.manual_seed(7)
    direct = MODELS.build(dict(cfg))
    with torch.device('meta'):
        lazy = MODELS.build(dict(cfg))
    torch.manual_seed(7)
    for layer in lazy:
        layer.to_empty(device='cpu')
        for module in layer.modules():
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
    for (name, a), b in zip(direct.state_dict().items(), lazy.state_dict().values()):
        assert torch.equal(a, b), name


def test_same_seed_same_model():
    torch.manual_seed(3)
    a = TinyGPT(20, 8, 1, 2, 8)
    torch.manual_seed(3)
    b = TinyGPT(20, 8, 1, 2, 8)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = TinyGPT(vocab_size=11, block_size=10, n_layer=2, n_head=2, n_embd=16).eval()
    x = torch.randint(11, (2, 10))
    changed = x.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    a, b = model(x), model(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    with pytest.raises(ValueError, match='sequence length 11 exceeds block_size 10'):
        model(torch.zeros(1, 11, dtype=torch.long))


def test_gpt_learns_a_repeating_sequence():
    torch.manual_seed(0)
    model = TinyGPT(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=16)
    seq = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    x, y = seq[:, :-1], seq[:, 1:]
    loss_fn = SequenceCrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = loss_fn(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_sequence_cross_entropy_flattens():
    loss = LOSSES.build(dict(type='SequenceCrossEntropyLoss', ignore_index=-100))
    assert isinstance(loss, SequenceCrossEntropyLoss)
    logits, target = torch.randn(2, 3, 7), torch.randint(7, (2, 3))
    expected = nn.functional.cross_entropy(logits.reshape(6, 7), target.reshape(6))
    assert torch.allclose(loss(logits, target), expected)


@pytest.mark.parametrize('build, message', [
    (lambda: MLP(in_features=0), 'MLP in_features must be a positive int, got 0'),
    (lambda: MLP(hidden=[8, -1]), r'MLP hidden\[1\] must be a positive int, got -1'),
    (lambda: MLP(activation='Relu'), "activation 'Relu' is not a torch.nn module"),
    (lambda: SimpleCNN(channels=[]), 'at least one conv block'),
    (lambda: SimpleCNN(channels=[4, 4], pool=[True]), 'pool has 1 entries but channels has 2'),
    (lambda: SimpleCNN(image_size=1, channels=[4, 4]), 'image_size=1 is too small'),
    (lambda: TinyGPT(vocab_size=10, n_embd=10, n_head=4), 'n_embd=10 must be divisible by n_head=4'),
    (lambda: TinyGPT(vocab_size=0), 'TinyGPT vocab_size must be a positive int, got 0'),
])
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()
