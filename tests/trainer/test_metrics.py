"""Metrics: values equal a direct computation, no host sync per step, reduction over replicas."""
import math
import os

import pytest
import torch

from colossal_runner.testing import run_distributed
from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.trainer.hooks import AccuracyHook, LossHook, ThroughputHook
from colossal_runner.trainer.metrics import Accuracy, Loss, Metric, Throughput
from colossal_runner.trainer.metrics.loss import loss_weight

from ._toy import make_dataset, make_engine, make_loader


class Direct(BaseHook):
    """Collects every step's output, label and loss, and the metric values at each epoch end."""

    def __init__(self):
        super().__init__('LOWEST')
        self.steps, self.epochs = [], []

    def before_train_epoch(self, runner):
        self.steps = []

    def after_train_iter(self, runner, output, label, loss):
        self.steps.append((output, label, loss))

    def after_train_epoch(self, runner):
        train = runner.states['metrics']['train']
        self.epochs.append(dict(steps=self.steps, loss=train['Loss'].get_accumulated_value(),
                                last_loss=train['Loss'].get_last_step_value(),
                                acc=train['Accuracy'].get_accumulated_value(),
                                last_acc=train['Accuracy'].get_last_step_value(),
                                samples=train['Throughput']._samples))


def test_epoch_values_equal_a_direct_computation():
    direct = Direct()
    Trainer(make_engine(), hooks=[LossHook(), AccuracyHook(), ThroughputHook(), direct]).fit(
        make_loader(20, batch_size=4), epochs=2)
    assert len(direct.epochs) == 2
    for epoch in direct.epochs:
        outputs = torch.cat([o for o, _, _ in epoch['steps']])
        labels = torch.cat([t for _, t, _ in epoch['steps']])
        losses = [loss.item() for _, _, loss in epoch['steps']]
        assert epoch['loss'] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
        assert epoch['last_loss'] == pytest.approx(losses[-1], rel=1e-6)
        assert epoch['acc'] == pytest.approx((outputs.argmax(1) == labels).double().mean().item())
        last_out, last_label, _ = epoch['steps'][-1]
        assert epoch['last_acc'] == pytest.approx((last_out.argmax(1) == last_label).double().mean().item())
        assert epoch['samples'] == 20    # reset each epoch, counts every sample


def test_updates_do_not_synchronize_with_the_host(monkeypatch):
    def forbidden(*args):
        raise AssertionError('a metric update read a tensor value on the host')

    class NoSyncInMetricUpdates(Trainer):
        def call_hook(self, stage, *args):
            if stage not in ('after_train_iter', 'before_train_iter'):
                return super().call_hook(stage, *args)
            with monkeypatch.context() as patch:
                for name in ('item', '__float__', 'tolist', '__bool__', 'cpu'):
                    patch.setattr(torch.Tensor, name, forbidden)
                super().call_hook(stage, *args)

    engine = make_engine()
    trainer = NoSyncInMetricUpdates(engine, hooks=[LossHook(), AccuracyHook(), ThroughputHook(),
                                                   dict(type='LRSchedulerHook')])
    trainer.fit(make_loader(12), epochs=1)
    device_states = [getattr(m, '_sum', getattr(m, '_correct', None))
                     for m in trainer.states['metrics']['train'].values()]
    assert sum(state is not None for state in device_states) == 2  # Loss and Accuracy
    assert all(state.device == engine.device for state in device_states if state is not None)
    assert trainer.states['metrics']['train']['Loss'].get_accumulated_value() > 0


def test_accuracy_topk_sequences_and_errors():
    metric = Accuracy(topk=2)
    scores = torch.tensor([[[0.1, 0.5, 0.4], [0.9, 0.02, 0.08]], [[0.2, 0.3, 0.5], [0.3, 0.25, 0.45]]])
    labels = torch.tensor([[2, 1], [0, 2]])         # (B=2, T=2) labels for (B, T, V) scores
    metric.update(scores, labels, None)
    assert metric.get_accumulated_value() == pytest.approx(2 / 4)
    assert Accuracy.is_better(0.9, 0.8) and not Accuracy.is_better(float('nan'), 0.1)
    with pytest.raises(ValueError, match=r'4 predictions .* but 3 labels'):
        metric.update(scores, torch.tensor([1, 2, 0]), None)
    with pytest.raises(TypeError, match='expects tensors'):
        metric.update([scores], labels, None)
    with pytest.raises(ValueError, match='topk must be a positive int'):
        Accuracy(topk=0)


def test_loss_metric_basics_and_custom_metric_contract():
    loss = Loss()
    assert math.isnan(loss.get_accumulated_value())
    for value in (1.0, 2.0, 6.0):
        loss.update(None, None, torch.tensor(value))
    assert loss.get_accumulated_value() == pytest.approx(3.0) and loss.get_last_step_value() == 6.0
    assert Loss.is_better(1.0, 2.0) and Loss.is_better(1.0, float('nan'))
    loss.reset()
    assert math.isnan(loss.get_last_step_value())
    with pytest.raises(NotImplementedError):
        Metric()


def test_loss_takes_floats_and_tensors_alike():
    """A float (the Engine's host value) and the tensor of the same loss count the same."""
    values = [0.25, 1.5, 3.0, 0.125, 2.0]
    as_tensors, mixed = Loss(defer_steps=2), Loss(defer_steps=2)
    for i, value in enumerate(values):
        as_tensors.update(None, None, torch.tensor(value))
        mixed.update(None, None, value if i % 2 else torch.tensor(value))
        assert mixed.get_last_step_value() == as_tensors.get_last_step_value() == value
        assert mixed.get_accumulated_value() == as_tensors.get_accumulated_value()
    assert mixed.get_accumulated_value() == pytest.approx(sum(values) / len(values))
    with pytest.raises(TypeError, match='a tensor or a float, got str'):
        mixed.update(None, None, 'high')
    mixed.update(None, None, 4)                             # other numbers count as floats
    assert mixed.get_last_step_value() == 4.0
    assert mixed.get_accumulated_value() == pytest.approx((sum(values) + 4) / (len(values) + 1))


@pytest.mark.parametrize('accumulation', [1, 2])
def test_loss_hook_adds_the_value_the_engine_read_for_its_finite_check(accumulation):
    """The plain step reads its loss to the host anyway; LossHook adds that float (no tensor
    work). Steps that read nothing (accumulation over two batches) are added as tensors."""
    engine = make_engine(gradient_accumulation=accumulation)
    direct = Direct()
    trainer = Trainer(engine, hooks=[LossHook(), AccuracyHook(), ThroughputHook(), direct])
    trainer.fit(make_loader(24, batch_size=4), epochs=1)
    losses = [loss for _, _, loss in direct.epochs[0]['steps']]
    metric = trainer.states['metrics']['train']['Loss']
    if accumulation == 1:
        assert engine.host_loss(losses[-1]) == losses[-1].item()
        assert engine.host_loss(losses[-1].clone()) is None      # only that very tensor
        # each batch-mean float weighted by its 4 samples
        assert metric._host_sum == sum(loss.item() * 4 for loss in losses) and metric._sum == 0
        assert metric._count == 24
    else:
        assert engine.host_loss(losses[-1]) is None and metric._host_sum == 0
    assert direct.epochs[0]['loss'] == pytest.approx(sum(loss.item() for loss in losses) / len(losses))


class PerSample(BaseHook):
    """Records each training step's (loss, number of samples)."""

    def __init__(self):
        super().__init__('LOWEST')
        self.steps = []

    def after_train_iter(self, runner, output, label, loss):
        self.steps.append((loss.item(), label.shape[0]))


@pytest.mark.parametrize('path', ['host_float', 'held_tensors', 'each_tensor'])
def test_epoch_loss_is_the_per_sample_mean_with_a_short_last_batch(path):
    """22 samples in batches of 4: five of 4 and one of 2. The epoch loss weights each step's batch
    mean by its samples, for the floats the Engine lends LossHook and for the tensors alike."""
    engine = make_engine(nonfinite_loss='raise' if path == 'host_float' else 'off')
    recorded = PerSample()
    trainer = Trainer(engine, hooks=[LossHook(defer_steps=1 if path == 'each_tensor' else 16), recorded])
    trainer.fit(make_loader(22, batch_size=4), epochs=1)
    metric = trainer.states['metrics']['train']['Loss']
    assert [n for _, n in recorded.steps] == [4, 4, 4, 4, 4, 2]
    assert (metric._host_sum != 0) == (path == 'host_float')
    weighted = sum(loss * n for loss, n in recorded.steps) / 22
    unweighted = sum(loss for loss, _ in recorded.steps) / 6
    assert abs(weighted - unweighted) > 1e-4                      # the two means tell apart here
    assert metric.get_accumulated_value() == pytest.approx(weighted, rel=1e-12)
    assert metric.get_last_step_value() == recorded.steps[-1][0]  # the last step's own mean


def test_test_loss_does_not_depend_on_the_batch_size():
    """The same weights on the same 50 samples: every batch size gives the loss of all samples at once
    (the unweighted mean of batch means moved with the batch size)."""
    engine = make_engine()
    trainer = Trainer(engine, hooks=[LossHook(modes=('test',))])
    data, labels = make_dataset(50, seed=3).tensors
    with torch.no_grad():
        engine.model.eval()
        whole = torch.nn.functional.cross_entropy(engine.model(data), labels).item()
    for batch_size in (1, 7, 16, 32, 50):
        loss = trainer.evaluate(make_loader(50, batch_size=batch_size, seed=3))['Loss']
        assert loss == pytest.approx(whole, rel=1e-6), batch_size


def test_sequence_loss_is_weighted_by_tokens():
    """A language model's loss is the mean over B x T tokens: steps are weighted by the label's
    number of elements, so batches of different lengths give the mean over every token."""
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 5), (3, 4), (1, 7), (4, 1)]
    batches = [(torch.randn(*shape, 11, generator=g), torch.randint(11, shape, generator=g))
               for shape in shapes]
    every_token = torch.nn.functional.cross_entropy(torch.cat([o.reshape(-1, 11) for o, _ in batches]),
                                                    torch.cat([t.reshape(-1) for _, t in batches])).item()
    held, each, floats = Loss(defer_steps=16), Loss(defer_steps=1), Loss()
    for output, label in batches:
        loss = torch.nn.functional.cross_entropy(output.reshape(-1, 11), label.reshape(-1))
        for metric, value in ((held, loss), (each, loss), (floats, loss.item())):
            metric.update(output, label, value)
    for metric in (held, each, floats):
        assert metric.get_accumulated_value() == pytest.approx(every_token, rel=1e-6)
        assert metric.get_last_step_value() == pytest.approx(loss.item())
    assert held._count == each._count == floats._count == 10 + 12 + 7 + 4
    # A structured label counts its first tensor's rows; no label at all counts one per step.
    assert loss_weight({'ids': torch.zeros(3, 5)}) == 3 and loss_weight(None) == 1
    assert loss_weight(torch.tensor(2)) == 1


def _random_steps(num_steps, num_classes=5, seed=0):
    """(scores, labels, loss) per step, batch sizes 1..7; every third step has a time axis."""
    g = torch.Generator().manual_seed(seed)
    steps = []
    for i in range(num_steps):
        batch = 1 + i % 7
        shape = (batch, 2) if i % 3 == 0 else (batch,)
        scores = torch.randn(*shape, num_classes, generator=g)
        labels = torch.randint(num_classes, shape, generator=g)
        steps.append((scores, labels, torch.rand((), generator=g) * 3))
    return steps


def _direct_accuracy(steps, topk):
    scores = torch.cat([s.reshape(-1, s.shape[-1]) for s, _, _ in steps])
    labels = torch.cat([t.reshape(-1) for _, t, _ in steps])
    return (scores.topk(topk, dim=-1).indices == labels[:, None]).any(-1).double().mean().item()


@pytest.mark.parametrize('topk', [1, 3])
def test_counting_held_steps_together_equals_counting_each_step(topk):
    """defer_steps changes when the counting happens, never the values: accumulated and last-step
    values, read at any point (reading counts what is held), equal counting every step at once."""
    steps = _random_steps(40)
    held, each = Accuracy(topk=topk, defer_steps=16), Accuracy(topk=topk, defer_steps=1)
    held_loss, each_loss = Loss(defer_steps=16), Loss(defer_steps=1)
    waiting = 0  # steps held since the last count
    for i, (scores, labels, loss) in enumerate(steps):
        for metric in (held, each, held_loss, each_loss):
            metric.update(scores, labels, loss)
        waiting = 0 if waiting == 15 else waiting + 1  # the 16th held step counts all of them
        assert len(held._pending.items) == len(held_loss._pending.items) == waiting
        assert not each._pending.items and not each_loss._pending.items
        if i % 9 == 0 or i == len(steps) - 1:  # read in the middle of a group of held steps too
            waiting = 0
            done = steps[:i + 1]
            assert held.get_accumulated_value() == each.get_accumulated_value() == pytest.approx(
                _direct_accuracy(done, topk))
            assert held.get_last_step_value() == each.get_last_step_value() == pytest.approx(
                _direct_accuracy(done[-1:], topk))
            # each step's loss weighted by its number of labels (1..7 samples, some with 2 positions)
            mean = sum(float(loss) * labels.numel() for _, labels, loss in done) / sum(
                labels.numel() for _, labels, _ in done)
            each_mean = each_loss.get_accumulated_value()
            assert held_loss.get_accumulated_value() == pytest.approx(each_mean, rel=1e-12)
            assert held_loss.get_accumulated_value() == pytest.approx(mean, rel=1e-6)
            assert held_loss.get_last_step_value() == each_loss.get_last_step_value() == float(done[-1][2])
            assert not held._pending.items and not held_loss._pending.items  # reading counted them
    with pytest.raises(ValueError, match='defer_steps must be a positive int'):
        Accuracy(defer_steps=0)
    with pytest.raises(ValueError, match='defer_steps must be a positive int'):
        LossHook(defer_steps=-1)
    assert AccuracyHook(defer_steps=1).metrics['train'].defer_steps == 1


def test_a_batch_overwritten_in_place_before_it_is_counted_is_an_error_not_a_wrong_count():
    """A loader that reuses its buffers would make held steps count the newest data; the version
    counter catches it, and defer_steps=1 counts such a loader correctly."""
    steps = _random_steps(6, num_classes=3)
    steps = [(s.reshape(-1, 3)[:4], t.reshape(-1)[:4], loss) for s, t, loss in steps if s.shape[0] * (
        s.dim() - 1) >= 4]  # equal shapes, so one buffer fits every step
    out_buffer, label_buffer = torch.empty(4, 3), torch.empty(4, dtype=torch.int64)
    loss_buffer = torch.empty(())
    held, each = Accuracy(defer_steps=16), Accuracy(defer_steps=1)
    held_loss, each_loss = Loss(defer_steps=16), Loss(defer_steps=1)
    for scores, labels, loss in steps:
        out_buffer.copy_(scores), label_buffer.copy_(labels), loss_buffer.copy_(loss)
        for metric in (held, each, held_loss, each_loss):
            metric.update(out_buffer, label_buffer, loss_buffer)
    assert len(steps) >= 2
    with pytest.raises(RuntimeError, match=r'Accuracy: .*modified in place.*defer_steps=1'):
        held.get_accumulated_value()
    with pytest.raises(RuntimeError, match=r'Loss: .*modified in place.*defer_steps=1'):
        held_loss.get_accumulated_value()
    assert each.get_accumulated_value() == pytest.approx(_direct_accuracy(steps, 1))
    assert each_loss.get_accumulated_value() == pytest.approx(sum(float(v) for _, _, v in steps) / len(steps))


def test_held_steps_are_bounded_and_keep_no_autograd_graph():
    metric = Accuracy(defer_steps=16)
    big = torch.randn(1100, 1000)  # over a million scores: counted at once, never held
    labels = torch.randint(1000, (1100,))
    metric.update(big, labels)
    assert not metric._pending.items
    assert metric.get_last_step_value() == pytest.approx(_direct_accuracy([(big, labels, None)], 1))
    weight = torch.randn(3, 3, requires_grad=True)
    scores = torch.randn(4, 3) @ weight  # part of a graph
    metric.update(scores, torch.tensor([0, 1, 2, 0]))
    (held_scores, _), = metric._pending.items
    assert not held_scores.requires_grad and held_scores.grad_fn is None
    # The number of classes changes: the held 3-class step is counted before a 5-class one is held.
    metric.update(torch.randn(2, 5), torch.tensor([4, 4]))
    metric.update(torch.randn(2, 5), torch.tensor([1, 3]))
    assert [held.shape for held, _ in metric._pending.items] == [(2, 5), (2, 5)]
    counted = [(big, labels), (scores, torch.tensor([0, 1, 2, 0]))] + metric._pending.items
    correct = sum((s.argmax(-1) == t).sum().item() for s, t in counted)
    assert metric.get_accumulated_value() == pytest.approx(correct / (1100 + 4 + 2 + 2))


# ---------------------------------------------------------------- data x pipeline parallel
def _parallel_fit(rank, world_size, tmp):
    import torch.distributed as dist
    from torch import nn

    import colossal_runner.models  # noqa: F401  (registers MLP)
    from colossal_runner.data import SyntheticClassification, build_dataloader
    from colossal_runner.distributed import ParallelContext, set_context
    from colossal_runner.engine import Engine
    from colossal_runner.engine.schedule import PipelineSchedule
    from colossal_runner.pipeline import build_pipeline_model
    from colossal_runner.trainer.hooks import (LogMetricByEpochHook, LogMetricByStepHook, LRSchedulerHook,
                                               SaveCheckpointHook, TensorboardHook)

    context = ParallelContext(pipeline=2, data=2)
    set_context(context)

    class Outputs(BaseHook):
        def __init__(self):
            super().__init__()
            self.seen = []

        def before_test_epoch(self, runner):
            self.seen = []

        def after_test_iter(self, runner, output, label, loss):
            self.seen.append(None if output is None else (output, label))

    def engine():
        torch.manual_seed(0)
        stage = build_pipeline_model(dict(type='MLP', in_features=16, hidden=[16], num_classes=4), context)
        optimizer = torch.optim.SGD(stage.parameters(), lr=0.1)
        return Engine(stage, nn.CrossEntropyLoss(), optimizer, step_schedule=PipelineSchedule(2),
                      data_parallel_group=context.data_group)

    def loader(split):
        data = SyntheticClassification(num_samples=32, num_features=16, num_classes=4, split=split)
        return build_dataloader(dict(batch_size=4), data, context=context)

    outputs = Outputs()
    hooks = [LossHook(), AccuracyHook(), ThroughputHook(), LRSchedulerHook(), LogMetricByEpochHook(),
             LogMetricByStepHook(interval=2), TensorboardHook(log_dir=os.path.join(tmp, 'tb')),
             SaveCheckpointHook(checkpoint_dir=os.path.join(tmp, 'ck'), save_best='Accuracy'), outputs]
    trainer = Trainer(engine(), hooks=hooks, work_dir=os.path.join(tmp, 'work'))
    trainer.fit(loader('train'), epochs=2, test_dataloader=loader('test'))
    values = trainer.evaluate(loader('test'))
    best_epoch = [h for h in trainer.hooks if isinstance(h, SaveCheckpointHook)][0].best_epoch
    dist.barrier()
    resumed = Trainer(engine())
    resumed.resume(os.path.join(tmp, 'ck'))
    same = all(torch.equal(a, b) for a, b in zip(resumed.engine.model.parameters(),
                                                trainer.engine.model.parameters()))
    return dict(values=values, best_epoch=best_epoch, resumed_same=same,
                states=(resumed.states['epoch'], resumed.states['iteration']),
                outputs=[None if s is None else (s[0].clone(), s[1].clone()) for s in outputs.seen])


def test_metrics_reduce_over_replicas_and_skip_non_last_stages(tmp_path):
    results = run_distributed(_parallel_fit, 4, str(tmp_path), timeout=150)
    # ranks 1 and 3 are the last stage of replicas 0 and 1; 0 and 2 never see a loss.
    for rank in (0, 2):
        assert all(math.isnan(v) for v in results[rank]['values'].values())
        assert all(s is None for s in results[rank]['outputs'])
    assert results[1]['values'] == results[3]['values']
    outputs = torch.cat([o for r in (1, 3) for o, _ in results[r]['outputs']])
    labels = torch.cat([t for r in (1, 3) for _, t in results[r]['outputs']])
    assert outputs.shape[0] == 32    # the two replicas cover the test set
    assert results[1]['values']['Accuracy'] == pytest.approx(
        (outputs.argmax(1) == labels).double().mean().item())
    assert len({r['best_epoch'] for r in results}) == 1   # every stage agreed on the best epoch
    assert all(r['resumed_same'] and r['states'] == (2, 8) for r in results)
    ck = sorted(os.listdir(tmp_path / 'ck'))
    assert ck == ['best_stage0.pt', 'best_stage1.pt', 'epoch_1_stage0.pt', 'epoch_1_stage1.pt',
                  'epoch_2_stage0.pt', 'epoch_2_stage1.pt', 'latest_stage0.pt', 'latest_stage1.pt']
    # only the logging rank writes: one event file per step and per epoch scalars
    assert sorted(os.listdir(tmp_path / 'tb'))[0] == 'epoch' and len(os.listdir(tmp_path / 'tb')) == 2
    assert len(os.listdir(tmp_path / 'tb' / 'epoch')) == 1
    records = (tmp_path / 'work' / 'metrics.jsonl').read_text().splitlines()
    assert len([r for r in records if '"by": "step"' in r]) == 4   # 8 steps, every 2, one rank


# ---------------------------------------------------------------- data parallel: (sum, count) reduction
def _replica_test_loss(rank, world_size):
    from colossal_runner.data import build_dataloader
    from colossal_runner.distributed import setup_parallel

    from ._toy import make_dataset

    context = setup_parallel(dict(parallel=dict(pipeline=1), seed=0))
    engine = make_engine()              # the same weights on every rank (seeded)
    trainer = Trainer(engine, hooks=[LossHook(modes=('test',)), PerSample()])
    # 22 samples: 11 per replica, in batches of 4, 4, 3 (the unweighted mean would count the 3 as a 4)
    loader = build_dataloader(dict(batch_size=4), make_dataset(22, seed=3), context=context)
    sizes = [labels.shape[0] for _, labels in loader]
    return dict(loss=trainer.evaluate(loader)['Loss'], sizes=sizes,
                params=[p.detach().clone() for p in engine.model.parameters()])


def test_test_loss_over_replicas_equals_the_loss_of_all_samples():
    results = run_distributed(_replica_test_loss, 2, timeout=90)
    assert [r['sizes'] for r in results] == [[4, 4, 3], [4, 4, 3]]
    engine = make_engine()
    data, labels = make_dataset(22, seed=3).tensors
    with torch.no_grad():
        engine.model.eval()
        whole = torch.nn.functional.cross_entropy(engine.model(data), labels).item()
    for r in results:
        assert all(torch.equal(a, b) for a, b in zip(r['params'], engine.model.parameters()))
        assert r['loss'] == pytest.approx(whole, rel=1e-6)
    single = Trainer(engine, hooks=[LossHook(modes=('test',))]).evaluate(
        make_loader(22, batch_size=4, seed=3))
    assert single['Loss'] == pytest.approx(results[0]['loss'], rel=1e-6)   # 1 or 2 processes alike


def test_metric_hooks_save_their_partial_sums_only_when_they_can_be_resumed():
    """LossHook/AccuracyHook state = the epoch and the train metric's partial sums; loading it puts
    them back when that epoch starts again (not another). A metric without state_dict, or a
    data-parallel run (each replica has a part), saves nothing."""
    from colossal_runner.distributed import ParallelContext, get_context, set_context
    from colossal_runner.trainer.hooks import MetricHook

    trainer = Trainer(make_engine(), hooks=[LossHook(), AccuracyHook()])
    trainer.fit(make_loader(20, batch_size=4), epochs=1, max_steps=3)  # 3 of the 5 steps of epoch 1
    loss_hook, accuracy_hook = trainer.hooks
    saved = {h: h.state_dict() for h in trainer.hooks}
    values = {h: h.metrics['train'].get_accumulated_value() for h in trainer.hooks}
    assert saved[loss_hook]['epoch'] == 1 and saved[loss_hook]['train']['count'] == 12  # 3 steps of 4
    assert saved[accuracy_hook]['train']['total'] == 12
    for hook in trainer.hooks:
        fresh = type(hook)()
        fresh.load_state_dict(saved[hook])
        fresh.before_train_epoch(SimpleRunner(epoch=1))
        assert fresh.metrics['train'].get_accumulated_value() == values[hook]
        other = type(hook)()
        other.load_state_dict(saved[hook])
        other.before_train_epoch(SimpleRunner(epoch=2))  # another epoch starts from zero
        assert math.isnan(other.metrics['train'].get_accumulated_value())

    class Stateless(Metric):
        def reset(self):
            self.n = 0

        def update(self, output, label, loss):
            self.n += 1

    assert MetricHook(metric=Stateless).state_dict() == {}
    previous = get_context()
    set_context(ParallelContext(pipeline=1, data=2, rank=0, world_size=2))
    try:
        assert loss_hook.state_dict() == {}
        for rank, expect_sums in ((0, True), (1, False)):  # resumed on 2 replicas: replica 0 takes them
            set_context(ParallelContext(pipeline=1, data=2, rank=rank, world_size=2))
            fresh = LossHook()
            fresh.load_state_dict(saved[loss_hook])
            fresh.before_train_epoch(SimpleRunner(epoch=1))
            assert (fresh.metrics['train']._count == 12) is expect_sums, rank
    finally:
        set_context(previous)


class SimpleRunner:
    def __init__(self, epoch):
        self.states = {'epoch': epoch}


def _throughput_of_unequal_replicas(rank, world_size):
    from colossal_runner.distributed import setup_parallel
    setup_parallel(dict(parallel=dict(pipeline=1), seed=0))
    metric = Throughput()
    if rank < 2:  # the third replica had no test batch: its time is 0
        metric.update(10, 1.0 + rank)
    return metric.get_accumulated_value()


def test_throughput_over_replicas_divides_by_the_slowest_replicas_time():
    # 20 samples, the slowest replica took 2 s: 10 samples/s (the mean time, 1 s, read 20)
    assert run_distributed(_throughput_of_unequal_replicas, 3, timeout=60) == [pytest.approx(10.0)] * 3
