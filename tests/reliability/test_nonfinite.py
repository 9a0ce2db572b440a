"""A NaN/Inf loss stops the run naming where (default) or is skipped and counted (nonfinite_loss='skip')."""
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
    with pytest.raises(ValueError, match=r"nonfinite_loss must be one of \['raise', 'skip'\].*got 'ignore'"):
        Engine(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), nonfinite_loss='ignore')


def _replicas(rank, world_size):
    """Rank 1's batch is NaN at step 2: with 'skip' both replicas skip; with 'raise' both raise."""
    torch.set_num_threads(1)
    out = {}
    for mode in ('skip', 'raise'):
        engine = make_engine(mode)
        engine.model = DistributedDataParallel(engine.model)
        loader = poisoned_loader([1] if rank == 1 else [], num_batches=3)
        data_iter = iter(loader)
        before = None
        try:
            for step in range(3):
                if step == 1:
                    before = params(engine)
                engine.step(data_iter)
                if step == 1:
                    out[mode + '_unchanged'] = all(torch.equal(a, b) for a, b in zip(before, params(engine)))
        except NonFiniteLossError as exc:
            out[mode + '_error'] = str(exc)
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


def _pipeline_stages(rank, world_size):
    """Two pipeline stages: only the last sees the loss; both must skip (or stop) together."""
    from colossal_runner.distributed.context import ParallelContext, set_context
    from colossal_runner.engine.schedule import PipelineSchedule
    from colossal_runner.pipeline import build_pipeline_model
    torch.set_num_threads(1)
    context = ParallelContext(pipeline=2)
    set_context(context)
    out = {}
    for mode in ('skip', 'raise'):
        torch.manual_seed(0)
        stage = build_pipeline_model(dict(type='MLP', in_features=4, hidden=(8, 8), num_classes=2), context)
        engine = Engine(stage, nn.CrossEntropyLoss(), torch.optim.SGD(stage.parameters(), lr=0.1),
                        step_schedule=PipelineSchedule(2), nonfinite_loss=mode)
        started = out.setdefault('early_agreements', [])
        begin = engine.begin_loss_agreement  # the schedule starts the agreement during the step
        engine.begin_loss_agreement = lambda bad, begin=begin: (started.append(float(bad)), begin(bad))
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
    # one early agreement per training step on each stage ('skip': 3 steps, 'raise': 2); only
    # the last stage, which has the losses, flags the poisoned second step
    assert results[0]['early_agreements'] == [0.0] * 5
    assert results[1]['early_agreements'] == [0.0, 1.0, 0.0, 0.0, 1.0]
