"""Metrics: values equal a direct computation, no host sync per step, reduction over replicas."""
import math
import os

import pytest
import torch

from colossal_runner.testing import run_distributed
from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.trainer.hooks import AccuracyHook, LossHook, ThroughputHook
from colossal_runner.trainer.metrics import Accuracy, Loss, Metric

from ._toy import make_engine, make_loader


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
    assert len(os.listdir(tmp_path / 'tb')) == 1          # only the logging rank writes
    records = (tmp_path / 'work' / 'metrics.jsonl').read_text().splitlines()
    assert len([r for r in records if '"by": "step"' in r]) == 4   # 8 steps, every 2, one rank
