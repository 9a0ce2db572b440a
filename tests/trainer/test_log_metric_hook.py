"""LogMetricByStepHook / TensorboardHook: a step dropped for a NaN/Inf loss gets no per-step record."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.testing import run_distributed
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import LogMetricByStepHook, LossHook, MetricHook, TensorboardHook

from ._toy import make_dataset, make_engine


def _poisoned_loader(bad_batches, num_batches=4, batch_size=4, seed=0):
    data, labels = make_dataset(num_batches * batch_size, seed).tensors
    data = data.clone()
    for b in bad_batches:
        data[b * batch_size] = float('nan')
    return DataLoader(TensorDataset(data, labels), batch_size=batch_size)


def test_a_dropped_step_gets_no_per_step_record(tmp_path, project_log):
    """Before, the dropped step 2 was logged with step 1's values (the metrics leave it out)."""
    trainer = Trainer(make_engine(nonfinite_loss='skip'),
                      hooks=[LossHook(), LogMetricByStepHook(interval=1), TensorboardHook(interval=1)],
                      work_dir=str(tmp_path))
    trainer.fit(_poisoned_loader([1]), epochs=1)
    assert trainer.states['nonfinite_skips'] == 1
    records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
    assert [r['iteration'] for r in records] == [1, 3, 4]
    assert len({r['Loss'] for r in records}) == 3
    assert not [line for line in project_log.lines if 'step 2 train:' in line]
    events = EventAccumulator(str(tmp_path / 'tensorboard'))
    events.Reload()
    assert [e.step for e in events.Scalars('train/Loss')] == [1, 3, 4]


def _pipeline_replicas(rank, world_size, work_dir):
    """2 pipeline stages x 2 replicas; replica 1's batch is NaN at step 2, so every rank drops it.
    The per-step hooks read the metrics (a collective over each stage's replicas) on every rank."""
    import colossal_runner.models  # noqa: F401  (registers MLP)
    from colossal_runner.distributed.context import ParallelContext, set_context
    from colossal_runner.engine.schedule import PipelineSchedule
    from colossal_runner.engine import Engine
    from colossal_runner.pipeline import build_pipeline_model
    context = ParallelContext(pipeline=2)
    set_context(context)
    try:
        torch.manual_seed(0)
        mlp = dict(type='MLP', in_features=8, hidden=(8, 8, 8), num_classes=3)
        model = build_pipeline_model(mlp, context)
        engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                        step_schedule=PipelineSchedule(2), data_parallel_group=context.data_group,
                        nonfinite_loss='skip')
        loader = _poisoned_loader([1] if context.dp_rank == 1 else [], seed=context.dp_rank)
        hooks = [LossHook(), LogMetricByStepHook(interval=1), TensorboardHook(interval=1)]
        trainer = Trainer(engine, hooks=hooks, work_dir=work_dir)
        trainer.fit(loader, epochs=1)
        records = None
        if context.is_logging_rank:
            records = [json.loads(line) for line in open(f'{work_dir}/metrics.jsonl')]
        return dict(logging=context.is_logging_rank, skips=trainer.states['nonfinite_skips'], records=records)
    finally:
        set_context(None)


def test_pipeline_and_data_parallel_ranks_drop_the_same_step_and_the_last_stage_logs_the_others(tmp_path):
    results = run_distributed(_pipeline_replicas, 4, str(tmp_path), timeout=120)
    assert [r['skips'] for r in results] == [1] * 4
    logging = [r for r in results if r['logging']]
    assert len(logging) == 1  # last stage of replica 0
    records = logging[0]['records']
    assert [r['iteration'] for r in records] == [1, 3, 4]
    assert all(isinstance(r['Loss'], float) for r in records)  # a value on the stage with the loss


@pytest.mark.parametrize('name', ['epoch', 'iteration', 'mode', 'by'])
def test_a_metric_named_like_a_record_key_is_refused_when_attached(name):
    """Before, the run crashed at its first log: dict() got multiple values for keyword argument."""
    trainer = Trainer(make_engine(), hooks=[LogMetricByStepHook(interval=1)])
    with pytest.raises(ValueError, match=f"a metric cannot be named '{name}': mode, by, epoch, iteration are "
                                         f"the keys .* give this MetricHook another name=") as info:
        trainer.register_hook(MetricHook(metric=dict(type='Loss'), name=name))
    assert 'metrics.jsonl' in str(info.value) and name not in trainer.states['metrics']['train']


def test_a_metric_class_named_like_a_record_key_says_where_to_rename_it():
    from colossal_runner.trainer.metrics import Loss

    class Epoch(Loss):
        name = 'epoch'

    class EpochHook(MetricHook):
        def __init__(self):
            super().__init__(metric=Epoch)

    with pytest.raises(ValueError, match="EpochHook takes no name=: set another name on its metric class"):
        Trainer(make_engine(), hooks=[EpochHook()])
