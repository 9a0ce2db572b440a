"""amp='fp16': a step the grad scaler skipped because its loss is itself NaN/Inf follows nonfinite_loss
('raise' / 'skip') as fp32 and bf16 steps do; an overflow of the scaled gradients alone does not."""
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.engine import Engine, NonFiniteLossError
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import LossHook


def make_engine(nonfinite_loss, gradient_accumulation=1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message="amp='fp16' on the CPU")
        return Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler, amp='fp16',
                      nonfinite_loss=nonfinite_loss, gradient_accumulation=gradient_accumulation)


def batches(n, bad=()):
    g = torch.Generator().manual_seed(1)
    out = [(torch.randn(4, 4, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]
    for i in bad:
        out[i][0][0, 0] = float('nan')
    return out


def params(engine):
    return [p.detach().clone() for p in engine.model.parameters()]


@pytest.mark.parametrize('accumulation', [1, 2])
def test_skip_drops_counts_and_returns_no_loss(accumulation):
    engine = make_engine('skip', accumulation)
    before, scale = params(engine), engine.scaler.get_scale()
    output, label, loss = engine.step(iter(batches(accumulation, bad=[accumulation - 1])))
    assert loss is None and engine.nonfinite_skips == 1  # before: the NaN loss, and no count
    assert output is not None and label is not None
    assert all(torch.equal(a, b) for a, b in zip(params(engine), before))
    assert engine.scaler.get_scale() == scale / 2 and engine.lr_scheduler.last_epoch == 1
    assert all(p.grad is None for p in engine.model.parameters())
    _, _, loss = engine.step(iter(batches(accumulation)))  # a good step trains on
    assert loss is not None and torch.isfinite(loss) and engine.nonfinite_skips == 1
    assert not all(torch.equal(a, b) for a, b in zip(params(engine), before))


def test_raise_stops_before_any_update():
    engine = make_engine('raise')
    before, lr = params(engine), engine.get_lr()
    with pytest.raises(NonFiniteLossError, match=r'loss nan is not finite, learning rate 0\.1; the optimizer '
                                                 r"step was not taken.*nonfinite_loss = 'skip'") as info:
        engine.step(iter(batches(1, bad=[0])))
    assert info.value.local and info.value.lr == lr
    assert all(torch.equal(a, b) for a, b in zip(params(engine), before))
    assert all(p.grad is None for p in engine.model.parameters())


def test_off_returns_the_nan_loss_uncounted():
    engine = make_engine('off')
    before = params(engine)
    _, _, loss = engine.step(iter(batches(1, bad=[0])))
    assert torch.isnan(loss) and engine.nonfinite_skips == 0
    assert all(torch.equal(a, b) for a, b in zip(params(engine), before))  # the scaler skipped it


def test_trainer_epoch_loss_leaves_the_skipped_step_out():
    """The review's case: one NaN sample per epoch; before, the epoch Loss was NaN and nothing counted."""
    engine = make_engine('skip')
    data = batches(3, bad=[1])
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    trainer = Trainer(engine, hooks=[LossHook()])
    trainer.fit(DataLoader(TensorDataset(x, y), batch_size=4), epochs=1)
    assert trainer.states['nonfinite_skips'] == 1 and engine.nonfinite_skips == 1
    epoch_loss = trainer.states['metrics']['train']['Loss'].get_accumulated_value()
    assert torch.isfinite(torch.as_tensor(epoch_loss))
