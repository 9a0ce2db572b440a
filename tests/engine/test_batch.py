from collections import namedtuple

import pytest
import torch

from colossal_runner.engine.batch import (batch_size_of, call_model, concat_batches, split_batch,
                                          to_device, unpack_batch)

Pair = namedtuple('Pair', 'x y')


def test_unpack_batch_forms_and_errors():
    assert unpack_batch((1, 2)) == (1, 2)
    assert unpack_batch([1, 2]) == (1, 2)
    assert unpack_batch({'data': 1, 'label': 2}) == (1, 2)
    with pytest.raises(TypeError, match=r'received a tuple of length 3.*return \(input, target\)'):
        unpack_batch((1, 2, 3))
    with pytest.raises(TypeError, match='received a Tensor'):
        unpack_batch(torch.zeros(2))


def test_a_dict_batch_error_lists_its_keys_and_points_at_collate_fn():
    with pytest.raises(TypeError, match=r"received a dict with the keys \['mask', 'x', 'y'\].*"
                                        r'collate_fn \(dataloader\.collate_fn in a config\)'):
        unpack_batch({'x': 1, 'y': 2, 'mask': 3})


def test_to_device_keeps_structure():
    batch = {'a': [torch.zeros(2), (torch.ones(1), 'tag')], 'p': Pair(torch.zeros(1), 3)}
    moved = to_device(batch, torch.device('meta'))
    assert moved['a'][0].device.type == 'meta' and moved['a'][1][0].device.type == 'meta'
    assert moved['a'][1][1] == 'tag' and isinstance(moved['a'][1], tuple)
    assert isinstance(moved['p'], Pair) and moved['p'].y == 3
    # a tensor already on the device comes back as the same object; 'cpu' as a string moves too
    cpu = torch.zeros(2)
    assert to_device(cpu, torch.device('cpu')) is cpu and to_device(cpu, 'cpu').equal(cpu)
    assert to_device(batch, torch.device('cpu'))['a'][0] is batch['a'][0]


def test_call_model_by_data_type():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, *args, **kwargs):
            seen.append((len(args), sorted(kwargs)))
            return 0

    probe = Probe()
    call_model(probe, torch.zeros(1))
    call_model(probe, (torch.zeros(1), torch.zeros(1)))
    call_model(probe, {'x': torch.zeros(1), 'mask': None})
    assert seen == [(1, []), (2, []), (0, ['mask', 'x'])]


def test_split_and_concat_round_trip():
    batch = (torch.arange(12.).view(6, 2), {'ids': torch.arange(6), 'name': 'b'}, Pair(torch.arange(6), 1))
    parts = split_batch(batch, 3)
    assert len(parts) == 3
    assert torch.equal(parts[1][0], torch.tensor([[4., 5.], [6., 7.]]))
    assert parts[2][1]['name'] == 'b' and isinstance(parts[2][2], Pair)
    joined = concat_batches(parts)
    assert torch.equal(joined[0], batch[0]) and torch.equal(joined[1]['ids'], batch[1]['ids'])
    assert torch.equal(joined[2].x, batch[2].x)
    assert batch_size_of(batch) == 6
    assert torch.equal(concat_batches([torch.tensor(1.), torch.tensor(2.)]), torch.tensor([1., 2.]))


def test_split_errors():
    with pytest.raises(ValueError, match='batch of size 5 into 2 equal microbatches'):
        split_batch(torch.zeros(5), 2)
    # a last batch of 6 from batch_size=8: the advice is not "use a multiple of 4", which 8 already is
    with pytest.raises(ValueError) as info:
        split_batch(torch.zeros(6), 4)
    message = str(info.value)
    assert 'make the batch size a multiple' not in message
    assert "If the DataLoader's batch_size already is, this is the smaller last batch of an epoch: set " \
        'drop_last=True' in message
    assert 'Otherwise use a batch_size that 4 divides' in message
    with pytest.raises(ValueError, match='cannot split a scalar into 2 microbatches'):
        split_batch(torch.tensor(1.0), 2)
    with pytest.raises(ValueError, match='num_chunks must be >= 1'):
        split_batch(torch.zeros(4), 0)
    with pytest.raises(TypeError, match='no tensor found'):
        batch_size_of(['a'])
