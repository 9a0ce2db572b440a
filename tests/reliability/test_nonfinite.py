"""A NaN/Inf loss stops the run naming where (default), is skipped and counted (nonfinite_loss='skip'),
or is not looked for at all (nonfinite_loss='off': no host read, no all-reduce)."""
import os

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.checkpoint import load_checkpoint
from colossal_runner.engine import Engine, NonFiniteLossError
from colossal_runner.testing import run_distributed
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import LossHook, SaveCheckpointHook


def make_engine(nonfinite_loss='raise', seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    return Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler,
                  nonfinite_loss=nonfinite_loss)


def poisoned_loader(bad_batches, num_batches=6, batch_size=4, value=float('nan')):
    """Batches whose inputs are NaN/Inf at the given 0-based batch indices (no shuffling)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(num_batches * batch_size, 4, generator=g)
    y = torch.randint(0, 2, (num_batches * batch_size,), generator=g)
    for b in bad_batches:
        x[b * batch_size] = value
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def params(engine):
    return [p.detach().clone() for p in engine.model.parameters()]


def test_default_stops_with_epoch_iteration_and_lr_and_keeps_last_good_weights(tmp_path):
    engine = make_engine()
    saver = SaveCheckpointHook(interval=1, by_epoch=False, checkpoint_dir=str(tmp_path))
    trainer = Trainer(engine, hooks=[LossHook(), saver])
    # 6 batches per epoch: batch 2 of epoch 2 is global iteration 6 + 3 = 9.
    loader = poisoned_loader([])
    trainer.fit(loader, epochs=1)
    good = params(engine)
    lr = engine.get_lr()
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(poisoned_loader([2]), epochs=2)
    message = str(info.value)
    assert 'non-finite loss (nan) at epoch 2, iteration 9 (step 3 of the epoch)' in message
    assert f'learning rate {engine.get_lr():.6g}' in message and engine.get_lr() != lr
    assert "nonfinite_loss = 'skip'" in message and 'Lower the learning rate' in message
    # The step was not taken, and no checkpoint of the bad iteration was written.
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    assert trainer.states['iteration'] == 8
    assert not os.path.exists(tmp_path / 'iter_9.pt') and os.path.exists(tmp_path / 'iter_8.pt')
    assert all(p.grad is None for p in engine.model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(good, params(engine)))  # epoch 2 did train


def test_inf_loss_raises_from_the_engine_alone():
    engine = make_engine()
    engine.criterion = lambda out, label: nn.functional.cross_entropy(out, label) * float('inf')
    before = params(engine)
    with pytest.raises(NonFiniteLossError, match=r'loss inf is not finite, learning rate 0\.05'):
        engine.step(iter(poisoned_loader([])))
    assert all(torch.equal(a, b) for a, b in zip(before, params(engine)))


def test_skip_drops_the_step_counts_it_and_resumes_the_count(tmp_path):
    # A clean run and a run with two poisoned batches: the skipped steps leave the weights alone,
    # so the skipping run equals a clean run over the same batches minus the skipped ones.
    skipping = make_engine('skip')
    saver = SaveCheckpointHook(interval=1, checkpoint_dir=str(tmp_path))
    trainer = Trainer(skipping, hooks=[LossHook(), saver])
    trainer.fit(poisoned_loader([1, 4]), epochs=1)
    assert trainer.states['nonfinite_skips'] == 2 and skipping.nonfinite_skips == 2
    assert trainer.states['iteration'] == 6
    assert skipping.lr_scheduler.last_epoch == 6          # the LR schedule follows the iterations
    loss = trainer.states['metrics']['train']['Loss'].get_accumulated_value()
    assert torch.isfinite(torch.as_tensor(loss))          # metrics leave the skipped steps out

    reference = make_engine('raise')
    clean = poisoned_loader([])
    batches = [b for i, b in enumerate(clean) if i not in (1, 4)]
    for i, batch in enumerate(batches):
        reference.step(iter([batch]))
        if i in (0, 2):  # the skipped steps still advance the scheduler
            reference.lr_scheduler.step()
    for a, b in zip(params(reference), params(skipping)):
        assert torch.equal(a, b)

    state = load_checkpoint(str(tmp_path / 'epoch_1.pt'))
    assert state['states']['nonfinite_skips'] == 2
    resumed = Trainer(make_engine('skip'))
    resumed.resume(str(tmp_path))
    assert resumed.states['nonfinite_skips'] == 2


def test_bad_nonfinite_setting_is_refused():
    model = nn.Linear(2, 2)
    expected = r"nonfinite_loss must be one of \['raise', 'skip', 'off'\].*got 'ignore'"
    with pytest.raises(ValueError, match=expected):
        Engine(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), nonfinite_loss='ignore')


class CountItems:
    """Counts ``Tensor.item`` calls (the host reads of a scalar) while installed."""

    def __init__(self, monkeypatch):
        self.calls = 0
        item = torch.Tensor.item

        def counted(tensor):
            self.calls += 1
            return item(tensor)
        monkeypatch.setattr(torch.Tensor, 'item', counted)


@pytest.mark.parametrize('accumulation', [1, 2])  # the plain step, and the general path
def test_off_reads_nothing_and_trains_on(monkeypatch, accumulation):
    engines = {mode: make_engine(mode) for mode in ('raise', 'off')}
    for engine in engines.values():
        engine.gradient_accumulation = accumulation
    # The iterators are made first: a DataLoader's iterator reads its seed with item().
    batches = {mode: iter(poisoned_loader([], num_batches=2 * accumulation)) for mode in engines}
    poisoned = iter(poisoned_loader([0], num_batches=accumulation))
    items = CountItems(monkeypatch)
    # Clean batches: 'off' does the same arithmetic as the checked default, without reading the loss.
    results = {mode: [engine.step(batches[mode])[2] for _ in range(2)] for mode, engine in engines.items()}
    assert items.calls == 2 * accumulation  # each micro-step's loss in 'raise'; none in 'off'
    for a, b in zip(params(engines['raise']), params(engines['off'])):
        assert torch.equal(a, b)
    assert [float(v) for v in results['raise']] == [float(v) for v in results['off']]
    # A NaN batch: no error, no skip, the loss comes back NaN and the update makes the weights NaN.
    items.calls = 0
    off = engines['off']
    output, _, loss = off.step(poisoned)
    assert items.calls == 0 and off.nonfinite_skips == 0
    assert torch.isnan(loss) and output is not None
    assert any(torch.isnan(p).any() for p in off.model.parameters())


def test_off_in_a_trainer_counts_the_loss_from_tensors():
    # The Engine has no host float to lend LossHook (Engine.host_loss gives None): the metric adds
    # the tensors, and reads the same mean as with the check on.
    means, lent = {}, {}
    for mode in ('raise', 'off'):
        engine = make_engine(mode)
        host_loss, given = engine.host_loss, lent.setdefault(mode, [])

        def recorded(loss, host_loss=host_loss, given=given):
            given.append(host_loss(loss))
            return given[-1]
        engine.host_loss = recorded
        trainer = Trainer(engine, hooks=[LossHook()])  # LossHook looks host_loss up when attached
        trainer.fit(poisoned_loader([]), epochs=1)
        means[mode] = trainer.states['metrics']['train']['Loss'].get_accumulated_value()
    assert len(lent['raise']) == 6 and all(type(v) is float for v in lent['raise'])
    assert lent['off'] == [None] * 6
    assert means['off'] == pytest.approx(means['raise'], rel=1e-12)


def _replicas(rank, world_size):
    """Rank 1's batch is NaN at step 2: with 'skip' both replicas skip; with 'raise' both raise;
    with 'off' both take the (NaN) update without agreeing on anything."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    out = {}
    all_reduce = dist.all_reduce
    for mode in ('skip', 'raise', 'off'):
        engine = make_engine(mode)
        engine.model = DistributedDataParallel(engine.model)  # DDP's own gradient all-reduce is C++
        loader = poisoned_loader([1] if rank == 1 else [], num_batches=3)
        data_iter = iter(loader)
        before = None
        agreements = out[mode + '_all_reduces'] = []
        dist.all_reduce = lambda *args, **kwargs: (agreements.append(1), all_reduce(*args, **kwargs))[1]
        try:
            for step in range(3):
                if step == 1:
                    before = params(engine)
                engine.step(data_iter)
                if step == 1:
                    out[mode + '_unchanged'] = all(torch.equal(a, b) for a, b in zip(before, params(engine)))
        except NonFiniteLossError as exc:
            out[mode + '_error'] = str(exc)
        finally:
            dist.all_reduce = all_reduce
        out[mode + '_params'] = params(engine)
        out[mode + '_skips'] = engine.nonfinite_skips
    return out


def test_data_parallel_replicas_take_the_same_decision():
    results = run_distributed(_replicas, 2, timeout=90)
    for rank in (0, 1):
        r = results[rank]
        assert r['skip_unchanged'] and r['skip_skips'] == 1
        assert 'raise_error' in r, f'rank {rank} did not stop'
    assert 'loss nan is not finite' in results[1]['raise_error']
    assert 'the loss on another rank is not finite' in results[0]['raise_error']
    for a, b in zip(results[0]['skip_params'], results[1]['skip_params']):
        assert torch.equal(a, b)  # the replicas did not diverge
    for rank in (0, 1):
        r = results[rank]
        # one agreement per step with the check ('skip': 3 steps, 'raise': 2), none without it
        assert len(r['skip_all_reduces']) == 3 and len(r['raise_all_reduces']) == 2, (rank, r)
        assert r['off_all_reduces'] == [] and 'off_error' not in r and r['off_skips'] == 0
        assert not r['off_unchanged']  # the NaN step was taken: DDP averaged rank 1's NaN gradients in
        assert all(torch.isnan(p).all() for p in r['off_params'])


def _pipeline_stages(rank, world_size):
    """Two pipeline stages: only the last sees the loss; both must skip (or stop) together."""
    from colossal_runner.distributed.context import ParallelContext, set_context
    from colossal_runner.engine.schedule import PipelineSchedule
    from colossal_runner.pipeline import build_pipeline_model
    torch.set_num_threads(1)
    context = ParallelContext(pipeline=2)
    set_context(context)
    out = {}
    for mode in ('skip', 'raise', 'off'):
        torch.manual_seed(0)
        stage = build_pipeline_model(dict(type='MLP', in_features=4, hidden=(8, 8), num_classes=2), context)
        engine = Engine(stage, nn.CrossEntropyLoss(), torch.optim.SGD(stage.parameters(), lr=0.1),
                        step_schedule=PipelineSchedule(2), nonfinite_loss=mode)
        started = out.setdefault('early_agreements', [])
        begin = engine.begin_loss_agreement  # the schedule starts the agreement during the step
        engine.begin_loss_agreement = lambda bad, begin=begin: (started.append(float(bad)), begin(bad))
        checks = out[mode + '_checks'] = []
        check = engine._loss_is_finite  # where the step waits for the agreement
        engine._loss_is_finite = lambda *args, check=check: (checks.append(1), check(*args))[1]
        data_iter = iter(poisoned_loader([1], num_batches=3))
        try:
            engine.step(data_iter)
            before = params(engine)
            engine.step(data_iter)
            out[mode + '_unchanged'] = all(torch.equal(a, b) for a, b in zip(before, params(engine)))
            engine.step(data_iter)
            out[mode + '_moved'] = not all(torch.equal(a, b) for a, b in zip(before, params(engine)))
        except NonFiniteLossError as exc:
            out[mode + '_error'] = str(exc)
        out[mode + '_skips'] = engine.nonfinite_skips
        out[mode + '_nan'] = any(torch.isnan(p).any() for p in engine.model.parameters())
    return out


def test_pipeline_stages_take_the_same_decision():
    import colossal_runner.models  # noqa: F401  (registers MLP)
    results = run_distributed(_pipeline_stages, 2, timeout=90)
    for rank in (0, 1):
        r = results[rank]
        assert r['skip_unchanged'] and r['skip_moved'] and r['skip_skips'] == 1, (rank, r)
        assert 'raise_error' in r and r['raise_skips'] == 0, (rank, r)
    assert 'the loss on another rank is not finite' in results[0]['raise_error']   # stage 0 has no loss
    assert 'loss nan is not finite' in results[1]['raise_error']
    # one early agreement per training step on each stage ('skip': 3 steps, 'raise': 2, 'off':
    # none); only the last stage, which has the losses, flags the poisoned second step
    assert results[0]['early_agreements'] == [0.0] * 5
    assert results[1]['early_agreements'] == [0.0, 1.0, 0.0, 0.0, 1.0]
    for rank in (0, 1):
        r = results[rank]
        assert len(r['skip_checks']) == 3 and len(r['raise_checks']) == 2 and r['off_checks'] == [], (rank, r)
        # 'off' takes the poisoned step: the NaN reaches both stages' weights through the gradients
        assert not r['off_unchanged'] and r['off_moved'] and r['off_skips'] == 0 and 'off_error' not in r
        assert r['off_nan'] and not r['skip_nan'] and not r['raise_nan']
