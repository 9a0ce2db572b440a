"""NoPipelineSchedule: every batch form reaches the model and the criterion intact."""
from collections import namedtuple

import pytest
import torch
from torch import nn

from colossal_runner.engine import Engine, NoPipelineSchedule
from colossal_runner.registry import SCHEDULES

Pair = namedtuple('Pair', 'image mask')


class Recorder(nn.Module):
    """Sums whatever it is given through a linear layer, and records how it was called."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.calls = []

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        leaves = [t for t in _leaves((args, kwargs))]
        return self.linear(sum(leaves))


def _leaves(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)


def run_one(data, label, criterion=None):
    model = Recorder()
    labels = []

    def default_criterion(out, lab):
        labels.append(lab)
        return sum(out.sum() * 0 + t.float().mean() for t in _leaves(lab)) + out.pow(2).mean()

    engine = Engine(model, criterion or default_criterion, torch.optim.SGD(model.parameters(), lr=0.1))
    output, returned_label, loss = engine.step(iter([(data, label)]))
    return model.calls, labels, output, returned_label, loss


def t(*shape, value=1.0):
    return torch.full(shape, value)


def test_tensor_batch_calls_model_x():
    (args, kwargs), = run_one(t(3, 4), t(3))[0]
    assert len(args) == 1 and kwargs == {} and torch.equal(args[0], t(3, 4))


def test_tuple_and_list_batches_call_model_with_positional_args():
    for container in (tuple, list):
        calls, labels, output, label, _ = run_one(container([t(3, 4), t(3, 4, value=2.)]), [t(3), t(3)])
        (args, kwargs), = calls
        assert len(args) == 2 and kwargs == {} and torch.equal(args[1], t(3, 4, value=2.))
        assert isinstance(labels[0], list) and len(labels[0]) == 2 and isinstance(label, list)
        assert output.shape == (3, 2)


def test_dict_batch_calls_model_with_keywords():
    calls, labels, _, _, _ = run_one({'image': t(3, 4), 'mask': t(3, 4, value=0.)}, {'cls': t(3)})
    (args, kwargs), = calls
    assert args == () and sorted(kwargs) == ['image', 'mask']
    assert sorted(labels[0]) == ['cls']


def test_nested_batch_keeps_its_structure_all_the_way():
    data = {'views': [t(2, 4), (t(2, 4, value=3.), Pair(t(2, 4), t(2, 4, value=0.)))], 'note': 'keep'}
    label = {'target': t(2), 'aux': [t(2, value=5.), 'tag']}
    calls, labels, output, returned_label, loss = run_one(data, label)
    (_, kwargs), = calls
    inner = kwargs['views'][1]
    assert isinstance(inner, tuple) and isinstance(inner[1], Pair)
    assert torch.equal(inner[0], t(2, 4, value=3.))
    assert kwargs['note'] == 'keep'
    assert labels[0]['aux'][1] == 'tag' and torch.equal(labels[0]['aux'][0], t(2, value=5.))
    assert returned_label['aux'][1] == 'tag'
    assert output.shape == (2, 2) and loss.dim() == 0


def test_dict_form_of_the_batch_itself():
    model = Recorder()
    engine = Engine(model, lambda out, lab: out.pow(2).mean(), torch.optim.SGD(model.parameters(), lr=0.1))
    _, label, _ = engine.step(iter([{'data': t(3, 4), 'label': t(3, value=7.)}]))
    assert torch.equal(label, t(3, value=7.))


def test_forward_only_without_loss_needs_no_criterion():
    model = Recorder()
    engine = Engine(model, None, None)
    schedule = NoPipelineSchedule()
    with torch.no_grad():
        output, label, loss = schedule.forward_backward_step(engine, iter([(t(3, 4), t(3))]),
                                                             forward_only=True, return_loss=False)
    assert loss is None and output.shape == (3, 2) and torch.equal(label, t(3))
    with pytest.raises(ValueError, match='the engine has no criterion'):
        schedule.forward_backward_step(engine, iter([(t(3, 4), t(3))]), forward_only=False)


def test_training_step_leaves_gradients_and_detached_output():
    model = Recorder()
    engine = Engine(model, lambda out, lab: out.pow(2).mean(), torch.optim.SGD(model.parameters(), lr=0.1))
    output, _, loss = NoPipelineSchedule().forward_backward_step(engine, iter([(t(3, 4), t(3))]),
                                                                 forward_only=False)
    assert not output.requires_grad and not loss.requires_grad
    assert all(p.grad is not None for p in model.parameters())


def test_registered_in_schedules():
    assert SCHEDULES.get('NoPipelineSchedule') is NoPipelineSchedule
