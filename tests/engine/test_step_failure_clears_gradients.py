"""A step that raises leaves no gradients behind: the next step, in this fit or the next, starts clean."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.engine import Engine
from colossal_runner.trainer import Trainer


class FailsAtCall(nn.Module):
    """An MLP whose forward raises ``error`` at its ``fail_at``-th call."""

    def __init__(self, fail_at=None, error=RuntimeError):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        self.calls, self.fail_at, self.error = 0, fail_at, error

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error('bad batch')
        return self.net(x)


class FailingSGD(torch.optim.SGD):
    """Its step raises once, after the backward pass has filled the gradients."""
    armed = True

    def step(self, closure=None):
        if self.armed:
            self.armed = False
            raise RuntimeError('optimizer step failed')
        return super().step(closure)


def _batches(n):
    gen = torch.Generator().manual_seed(1)
    return iter([(torch.randn(4, 8, generator=gen), torch.randint(3, (4,), generator=gen)) for _ in range(n)])


def _loader():
    gen = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(16, 8, generator=gen), torch.randint(3, (16,), generator=gen))
    return DataLoader(data, batch_size=4)


@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_a_model_raising_in_the_second_micro_step_leaves_no_gradients(error):
    """Before, only StopIteration cleared the first micro-step's gradients."""
    model = FailsAtCall(fail_at=2, error=error)
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    gradient_accumulation=2)
    with pytest.raises(error):
        engine.step(_batches(2))
    assert all(p.grad is None for p in model.parameters())


def test_a_plain_step_raising_after_backward_leaves_no_gradients():
    """The plain path (one micro-step, no AMP, no clipping) has the same gap before zero_grad."""
    model = FailsAtCall()
    engine = Engine(model, nn.CrossEntropyLoss(), FailingSGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match='optimizer step failed'):
        engine.step(_batches(1))
    assert all(p.grad is None for p in model.parameters())


def test_a_fit_after_a_failed_accumulation_step_trains_as_from_clean_gradients():
    """The reviewer's case: fit raises in the second micro-step of its second step; the next fit's
    first step must not add the left-over gradients in."""
    def run(clear_by_hand):
        model = FailsAtCall(fail_at=4)  # the 2nd micro-step of the 2nd optimizer step
        engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                        gradient_accumulation=2)
        trainer = Trainer(engine, hooks=[dict(type='LossHook')])
        with pytest.raises(RuntimeError, match='bad batch'):
            trainer.fit(_loader(), epochs=1)
        if clear_by_hand:
            for p in model.parameters():
                p.grad = None
        trainer.fit(_loader(), epochs=1)
        return [p.detach().clone() for p in model.parameters()]

    for got, want in zip(run(False), run(True)):
        assert torch.equal(got, want)
