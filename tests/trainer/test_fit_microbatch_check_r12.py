"""Trainer.fit / evaluate on a pipeline schedule refuse, before any step, a DataLoader whose batches
the schedule cannot split into equal microbatches (they used to fail at the epoch's last step)."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.data import unsplittable_batch
from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.engine import Engine
from colossal_runner.engine.schedule import PipelineSchedule
from colossal_runner.pipeline import build_pipeline_model
from colossal_runner.trainer import Trainer


@pytest.fixture(autouse=True)
def _reset_context():
    yield
    set_context(None)


def _loader(samples, batch_size, drop_last=False):
    data = TensorDataset(torch.randn(samples, 8), torch.randint(0, 3, (samples,)))
    return DataLoader(data, batch_size=batch_size, drop_last=drop_last)


def _stage_trainer():
    set_context(ParallelContext(2, rank=0, world_size=2))
    stage = build_pipeline_model(dict(type='MLP', in_features=8, hidden=[16], num_classes=3))
    engine = Engine(stage, torch.nn.CrossEntropyLoss(), torch.optim.SGD(stage.parameters(), lr=0.1),
                    step_schedule=PipelineSchedule(4))
    return Trainer(engine), stage


def test_unsplittable_batch_says_which_setting_fixes_it():
    assert unsplittable_batch(_loader(30, 8), 4) == (
        'the last batch has 6 samples (30 per rank, batch_size=8), which num_microbatches=4 does not '
        'divide', 'drop_last')
    assert unsplittable_batch(_loader(30, 6), 4)[1] == 'batch_size'
    assert unsplittable_batch(_loader(30, 8, drop_last=True), 4) == ('', '')
    assert unsplittable_batch(_loader(28, 8), 4) == ('', '')  # a last batch of 4 splits
    assert unsplittable_batch(_loader(30, 8), 1) == ('', '')  # no pipeline split


def test_fit_refuses_a_last_batch_the_schedule_cannot_split_before_any_step():
    trainer, stage = _stage_trainer()
    before = [p.clone() for p in stage.parameters()]
    with pytest.raises(ValueError, match=r'the train dataloader: the last batch has 6 samples .*pass '
                                         r'drop_last=True to the DataLoader'):
        trainer.fit(_loader(30, 8), epochs=1)
    assert trainer.states['iteration'] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, stage.parameters()))
    with pytest.raises(ValueError, match=r'the test dataloader: batch_size=6 is not divisible by '
                                         r'num_microbatches=4.*a multiple of 4'):
        trainer.fit(_loader(32, 8), epochs=1, test_dataloader=_loader(12, 6))


def test_evaluate_refuses_it_too():
    trainer, _ = _stage_trainer()
    with pytest.raises(ValueError, match='the test dataloader: the last batch has 2 samples'):
        trainer.evaluate(_loader(10, 4))
