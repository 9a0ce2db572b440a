"""Trainer.fit / evaluate / predict, states, progress and logs."""
import json
import logging
import math
import os
import re
import sys
from types import SimpleNamespace

import pytest
import torch

from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.trainer.hooks import AccuracyHook, LossHook, SaveCheckpointHook

from ._toy import make_dataset, make_engine, make_loader


class Counter(BaseHook):
    def __init__(self):
        super().__init__()
        self.epochs, self.tests, self.iters = [], [], 0

    def after_train_iter(self, runner, output, label, loss):
        self.iters += 1

    def after_train_epoch(self, runner):
        self.epochs.append(runner.states['epoch'])

    def after_test(self, runner):
        self.tests.append(runner.states['epoch'])


def test_max_steps_stops_mid_epoch_and_test_interval():
    counter = Counter()
    trainer = Trainer(make_engine(), hooks=[counter])
    trainer.fit(make_loader(20, batch_size=4), epochs=10, max_steps=12, test_dataloader=make_loader(8),
                test_interval=2)
    assert trainer.states['iteration'] == 12 and counter.iters == 12
    assert trainer.states['steps_per_epoch'] == 5 and trainer.states['max_steps'] == 12
    assert counter.epochs == [1, 2, 3]          # the third epoch ends early
    assert counter.tests == [2]                 # every test_interval epochs only
    assert trainer.states['max_epochs'] == 10


def test_a_hook_that_lowers_max_steps_stops_the_run_before_the_next_step():
    class StopAt7(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            if runner.states['iteration'] == 7:
                runner.states['max_steps'] = 7  # an early-stopping hook

    counter = Counter()
    trainer = Trainer(make_engine(), hooks=[StopAt7(), counter])
    trainer.fit(make_loader(20, batch_size=4), epochs=10)
    assert trainer.states['iteration'] == 7 and counter.iters == 7
    assert counter.epochs == [1, 2]  # the second epoch ends after its second step


def test_states_default_max_steps_and_gradient_accumulation():
    trainer = Trainer(make_engine(gradient_accumulation=2))
    trainer.fit(make_loader(16, batch_size=4), epochs=2)
    assert trainer.states['steps_per_epoch'] == 2
    assert trainer.states['max_steps'] == 4
    assert (trainer.states['epoch'], trainer.states['iteration']) == (2, 4)


def test_fit_continues_from_states_and_validates_arguments():
    trainer = Trainer(make_engine())
    trainer.fit(make_loader(8), epochs=1)
    trainer.fit(make_loader(8), epochs=3)        # epochs is the total: two more
    assert (trainer.states['epoch'], trainer.states['iteration']) == (3, 6)
    with pytest.raises(ValueError, match='epochs must be a positive int, got 0'):
        trainer.fit(make_loader(8), epochs=0)
    with pytest.raises(ValueError, match='test_interval must be a positive int'):
        trainer.fit(make_loader(8), epochs=1, test_interval=0)
    with pytest.raises(ValueError, match='fewer than gradient_accumulation=4'):
        Trainer(make_engine(gradient_accumulation=4)).fit(make_loader(8), epochs=1)


def test_sampler_set_epoch_is_called_each_epoch():
    seen = []

    class Sampler(torch.utils.data.SequentialSampler):
        def set_epoch(self, epoch):
            seen.append(epoch)

    dataset = make_dataset(8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=Sampler(dataset))
    Trainer(make_engine()).fit(loader, epochs=3)
    assert seen == [0, 1, 2]


def test_loader_without_length_runs_until_exhausted():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(make_dataset(12))

    loader = torch.utils.data.DataLoader(Stream(), batch_size=4)
    trainer = Trainer(make_engine(), hooks=[LossHook()])
    trainer.fit(loader, epochs=2)
    assert trainer.states['steps_per_epoch'] is None
    assert (trainer.states['epoch'], trainer.states['iteration']) == (2, 6)
    assert trainer.evaluate(loader)['Loss'] > 0


def test_an_accumulation_step_cut_short_by_the_data_leaves_no_gradient_behind():
    """5 batches without a length, 2 per optimizer step: the fifth batch starts a step the data
    cannot finish. Its gradient must not leak into the next epoch's first step: the run equals a
    hand-written loop that drops the incomplete step."""
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(make_dataset(5))

    engine = make_engine(gradient_accumulation=2, lr_scheduler=False)
    Trainer(engine).fit(torch.utils.data.DataLoader(Stream(), batch_size=1), epochs=2)
    assert all(p.grad is None for p in engine.model.parameters())
    reference = make_engine(lr_scheduler=False)
    data = list(torch.utils.data.DataLoader(make_dataset(5), batch_size=1))
    for _ in range(2):
        for first, second in ((data[0], data[1]), (data[2], data[3])):  # the fifth batch is dropped
            reference.optimizer.zero_grad()
            for x, y in (first, second):
                (reference.criterion(reference.model(x), y) / 2).backward()
            reference.optimizer.step()
    for a, b in zip(engine.model.parameters(), reference.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_evaluate_returns_metrics_equal_to_a_direct_computation():
    engine = make_engine()
    trainer = Trainer(engine, hooks=[LossHook(), AccuracyHook(), AccuracyHook(topk=2)])
    trainer.fit(make_loader(12), epochs=1)
    engine.train()
    values = trainer.evaluate(make_loader(10, batch_size=4, seed=1))
    assert engine.training  # evaluate restores the mode it found
    data, labels = make_dataset(10, seed=1).tensors
    with torch.no_grad():
        engine.model.eval()
        logits = engine.model(data)
    # the mean over the 10 samples, not over the batches of 4, 4 and 2
    assert values['Loss'] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    assert values['Accuracy'] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    top2 = (logits.topk(2, dim=1).indices == labels[:, None]).any(1).float().mean().item()
    assert values['Top2Accuracy'] == pytest.approx(top2)
    assert set(values) == {'Loss', 'Accuracy', 'Top2Accuracy'}


def test_predict_runs_the_model_without_gradients():
    engine = make_engine()
    trainer = Trainer(engine)
    data = make_dataset(5).tensors[0]
    out = trainer.predict(data)
    assert out.shape == (5, 3) and not out.requires_grad
    engine.model.eval()
    assert torch.equal(out, engine.model(data).detach())


def test_predict_runs_an_interleaved_models_chunks_in_turn_in_one_process():
    """An interleaved config on one process builds an nn.ModuleList of chunks, which has no forward:
    predict crashed in torch while evaluate worked. Its outputs are the un-chunked model's."""
    import colossal_runner.models  # noqa: F401  (registers MLP)
    from colossal_runner.distributed.context import ParallelContext
    from colossal_runner.engine import Engine
    from colossal_runner.engine.schedule import InterleavedPipelineSchedule
    from colossal_runner.pipeline import build_pipeline_model
    from colossal_runner.registry import MODELS

    cfg = dict(type='MLP', in_features=6, hidden=(8, 8), num_classes=3)
    torch.manual_seed(4)
    whole = MODELS.build(cfg).eval()
    torch.manual_seed(4)
    chunks = build_pipeline_model(dict(cfg, partition='parameters'), ParallelContext(), num_model_chunks=3)
    assert isinstance(chunks, torch.nn.ModuleList) and len(chunks) == 3
    schedule = InterleavedPipelineSchedule(num_microbatches=2, num_model_chunks=3)
    engine = Engine(chunks, None, None, step_schedule=schedule)
    engine.train()
    data = torch.randn(4, 6)
    out = Trainer(engine).predict(data)
    assert out.shape == (4, 3) and not out.requires_grad
    torch.testing.assert_close(out, whole(data).detach(), rtol=0, atol=1e-6)
    assert engine.training  # the train/eval mode is restored
    with pytest.raises(ValueError, match='cannot split a batch of size 3 into 2 equal microbatches'):
        Trainer(engine).predict(data[:3])


def test_missing_metric_lists_the_available_ones():
    trainer = Trainer(make_engine(), hooks=[LossHook(), AccuracyHook()])
    with pytest.raises(KeyError, match=r"no train metric named 'Acc'.*\[Accuracy, Loss\]"):
        trainer.states['metrics']['train']['Acc']
    with pytest.raises(ValueError, match="a train metric named 'Loss' already exists") as info:
        trainer.register_hook(LossHook())
    # LossHook has no name= to give: the fix is to drop the second one (a _base_ config may have it).
    assert 'LossHook takes no name=: remove the duplicate hook' in str(info.value)
    assert 'another name' not in str(info.value)
    with pytest.raises(ValueError, match=r"'Accuracy' already exists .*give this AccuracyHook another name="):
        trainer.register_hook(AccuracyHook())


def test_concept_document_hook_list_builds_from_dicts_and_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hooks = [dict(type='LogMetricByEpochHook'), dict(type='LogTimingByEpochHook'),
             dict(type='LogMemoryByEpochHook'), dict(type='AccuracyHook'), dict(type='LossHook'),
             dict(type='TensorboardHook', log_dir='./tfb_logs'),
             dict(type='SaveCheckpointHook', interval=5, checkpoint_dir='./ckpt'),
             dict(type='LoadCheckpointHook', epoch=20, checkpoint_dir='./ckpt')]
    # The first run leaves LoadCheckpointHook out (docs/hooks.md): there is nothing to load yet.
    with pytest.raises(FileNotFoundError, match="checkpoint_dir './ckpt' does not exist"):
        Trainer(make_engine(), hooks=hooks, work_dir='work').fit(make_loader(4), epochs=20)
    first = Trainer(make_engine(), hooks=hooks[:-1], work_dir='work')
    first.fit(make_loader(4), epochs=20)
    assert sorted(os.listdir('ckpt')) == ['epoch_10.pt', 'epoch_15.pt', 'epoch_20.pt', 'epoch_5.pt',
                                          'latest.pt']
    second = Trainer(make_engine(seed=1), hooks=hooks, work_dir='work')
    second.fit(make_loader(4), epochs=22, test_dataloader=make_loader(4))
    assert (second.states['epoch'], second.states['iteration']) == (22, 22)
    assert os.listdir('tfb_logs')
    records = [json.loads(line) for line in open('work/metrics.jsonl')]
    epochs = [r for r in records if r['by'] == 'epoch' and r['mode'] == 'train']
    assert [r['epoch'] for r in epochs] == list(range(1, 23))
    assert {'Loss', 'Accuracy'} <= set(epochs[-1])
    assert any(r['by'] == 'epoch_timing' for r in records) and any(r['by'] == 'memory' for r in records)
    assert {r['mode'] for r in records} == {'train', 'test'}  # the kind of record is in 'by' only
    logs = [f for f in os.listdir('work') if f.endswith('.log')]
    assert logs and 'loaded checkpoint' in ''.join(open(os.path.join('work', f)).read() for f in logs)


def test_the_resume_example_of_the_trainer_page_runs_as_written(tmp_path, monkeypatch):
    """docs/trainer.md: the checkpoint example, run after the page's first example (10 epochs,
    max_keep=3), as it is written there."""
    docs = os.path.join(os.path.dirname(__file__), '..', '..', 'docs')
    page = open(os.path.join(docs, 'trainer.md'), encoding='utf-8').read()
    section = page.split('After the `fit` at the top of this page', 1)[1]
    example = section.split('```python\n', 1)[1].split('```')[0]
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(make_engine(), hooks=[dict(type='LossHook'), dict(type='AccuracyHook'),
                                            dict(type='LRSchedulerHook'), dict(type='LogMetricByEpochHook'),
                                            dict(type='TensorboardHook'),
                                            dict(type='SaveCheckpointHook', interval=1, max_keep=3)],
                      work_dir='work_dirs/mlp')
    trainer.fit(make_loader(8), epochs=10, test_dataloader=make_loader(4))
    exec(example, dict(trainer=trainer, train_loader=make_loader(8)))
    assert (trainer.states['epoch'], trainer.states['iteration']) == (12, 24)
    assert sorted(os.listdir('work_dirs/mlp/checkpoints')) == ['epoch_10.pt', 'epoch_11.pt', 'epoch_12.pt',
                                                               'latest.pt']


def test_step_logging_and_progress_bar(tmp_path, capsys):
    trainer = Trainer(make_engine(), hooks=[dict(type='LossHook'), dict(type='LRSchedulerHook'),
                                            dict(type='LogMetricByStepHook', interval=2)],
                      work_dir=str(tmp_path))
    trainer.fit(make_loader(16), epochs=1, display_progress=True)
    err = capsys.readouterr().err
    assert 'Epoch 1:' in err and 'loss=' in err and 'lr=' in err  # tqdm's 'Epoch 1: 100%|...'
    records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
    assert [r['iteration'] for r in records] == [2, 4]
    assert set(records[0]) >= {'Loss', 'LearningRate', 'mode', 'epoch'}
    # The rate each step used: StepLR(step_size=2) halves it for steps 3 and 4.
    assert [r['LearningRate'] for r in records] == pytest.approx([0.1, 0.05])
    trainer.fit(make_loader(16), epochs=2)
    assert 'Epoch 2:' not in capsys.readouterr().err         # no bar without display_progress


def test_progress_bar_reads_the_loss_at_its_redraw_rate_only(monkeypatch):
    """The bar reads the loss (a host sync on a GPU) at most every tqdm mininterval (0.1 s), not
    every step: with a clock that moves 0.03 s per look, 12 steps read it 3 times, and once more
    at the end of the epoch for the bar's last state."""
    import colossal_runner.trainer.trainer as trainer_module
    clock = iter(i * 0.03 for i in range(1000))
    monkeypatch.setattr(trainer_module, 'time', SimpleNamespace(monotonic=lambda: next(clock)))
    reads = []
    real = torch.Tensor.__float__
    trainer = Trainer(make_engine())
    monkeypatch.setattr(torch.Tensor, '__float__', lambda t: (reads.append(1), real(t))[1])
    trainer.fit(make_loader(48), epochs=1, display_progress=True)  # 12 steps of 4 samples
    assert len(reads) == 4  # at 0, 0.12 and 0.24 s of the fake clock: steps 1, 5 and 9; then step 12


def _last_bar_state(err, desc):
    """The last redraw of the tqdm bar ``desc`` in captured stderr (bars redraw with \\r)."""
    states = [part for part in re.split(r'[\r\n]', err) if part.startswith(desc + ':')]
    assert states, err
    return states[-1]


def test_each_progress_bar_ends_on_its_last_step_and_the_test_bar_shows_no_learning_rate(capsys):
    """All the steps run within tqdm's 0.1 s redraw interval, so a throttled bar reads the loss of
    its first step only: the bar's end shows the last step's, read once, and the test bar (which
    used to share the throttle clock with the training bar, and so often showed no loss) starts
    clean."""
    class Losses(BaseHook):
        def __init__(self):
            super().__init__()
            self.train, self.test = [], []

        def after_train_iter(self, runner, output, label, loss):
            self.train.append(float(loss))

        def after_test_iter(self, runner, output, label, loss):
            self.test.append(float(loss))

    losses = Losses()
    trainer = Trainer(make_engine(), hooks=[losses])
    trainer.fit(make_loader(48), epochs=1, test_dataloader=make_loader(24, seed=1), display_progress=True)
    err = capsys.readouterr().err
    assert len(set(f'{v:.4g}' for v in losses.train)) > 1  # the first step's loss would not do
    train_bar = _last_bar_state(err, 'Epoch 1')
    # the rate the last step used, not the next step's: StepLR(step_size=2) halved it after step 12
    assert trainer.engine.step_lr != trainer.engine.get_lr()
    assert f'loss={losses.train[-1]:.4g}' in train_bar and f'lr={trainer.engine.step_lr:.3g}' in train_bar
    test_bar = _last_bar_state(err, 'Test')
    assert f'loss={losses.test[-1]:.4g}' in test_bar and 'lr=' not in test_bar


def test_log_lines_go_above_the_progress_bar_not_over_its_line(capsys):
    """A line logged while a bar is shown is written through tqdm (the bar is cleared first and
    drawn again below it); before, it was appended to the bar's text on the bar's line."""
    logger = logging.getLogger('colossal_runner.test_bar_lines')
    logger.propagate, logger.handlers = False, [logging.StreamHandler(sys.stderr)]  # capsys's stderr
    logger.setLevel(logging.INFO)

    class Say(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            runner.logger.info(f"logged at step {runner.states['iteration']}")

    trainer = Trainer(make_engine(), hooks=[Say()], logger=logger)
    trainer.fit(make_loader(16), epochs=1, display_progress=True)
    lines = [line for line in capsys.readouterr().err.split('\n') if 'logged at step' in line]
    assert len(lines) == 4
    for step, line in enumerate(lines, 1):  # what follows the line's last carriage return is the text
        assert line.split('\r')[-1] == f'logged at step {step}', repr(line)
    assert logger.handlers[0].stream is sys.stderr and len(logger.handlers) == 1  # put back after the bar
    trainer.fit(make_loader(16), epochs=2)  # no bar: written as it is
    assert capsys.readouterr().err == ''.join(f'logged at step {step}\n' for step in range(5, 9))


def test_a_console_handlers_level_and_filters_hold_while_a_bar_is_shown(capsys):
    """tqdm's logging_redirect_tqdm, used at first, swapped the handler for one of its own that
    printed every INFO line to a console set to WARNING."""
    logger = logging.getLogger('colossal_runner.test_bar_levels')
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.addFilter(lambda record: 'hidden' not in record.getMessage())
    logger.propagate, logger.handlers = False, [console]
    logger.setLevel(logging.INFO)

    class Say(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            step = runner.states['iteration']
            runner.logger.info(f'info at step {step}')
            runner.logger.warning(f'warning at step {step}' + (' hidden' if step == 2 else ''))

    Trainer(make_engine(), hooks=[Say()], logger=logger).fit(make_loader(16), epochs=1, display_progress=True)
    err = capsys.readouterr().err
    assert 'info at step' not in err
    assert [step for step in range(1, 5) if f'warning at step {step}' in err] == [1, 3, 4]
    assert logger.handlers == [console] and console.stream is sys.stderr


def test_the_bar_of_an_epoch_resumed_in_its_middle_counts_the_whole_epoch(capsys):
    """Resumed after 3 of 5 steps, the bar starts at 3/5 and ends at 5/5 (it used to show 2 steps
    of 2, as if the epoch had 2)."""
    trainer = Trainer(make_engine())
    trainer.fit(make_loader(20), epochs=1, max_steps=3)
    capsys.readouterr()
    trainer.fit(make_loader(20), epochs=1, display_progress=True)
    assert trainer.states['iteration'] == 5
    states = [part for part in re.split(r'[\r\n]', capsys.readouterr().err) if part.startswith('Epoch 1:')]
    assert '| 3/5 [' in states[0] and '| 5/5 [' in states[-1], states


def test_evaluate_restores_train_mode_when_a_hook_raises():
    class Failing(BaseHook):
        def after_test_iter(self, runner, output, label, loss):
            raise RuntimeError('hook failed')

    trainer = Trainer(make_engine(dropout=0.5), hooks=[Failing()])
    trainer.engine.train()
    with pytest.raises(RuntimeError, match='hook failed'):
        trainer.evaluate(make_loader(8))
    assert trainer.engine.training and trainer.engine.model.training
    trainer.engine.eval()  # and an engine in eval mode stays there
    with pytest.raises(RuntimeError, match='hook failed'):
        trainer.evaluate(make_loader(8))
    assert not trainer.engine.training and not trainer.engine.model.training


def test_learning_rate_metric_follows_the_rate_each_engine_step_used():
    """LRSchedulerHook runs nothing per iteration: its metric reads engine.step_lr, the rate the
    latest step used before the scheduler moved it (NaN before the first step)."""
    class Record(BaseHook):
        def __init__(self):
            super().__init__('LOWEST')
            self.rates = []

        def after_train_iter(self, runner, output, label, loss):
            self.rates.append(runner.states['metrics']['train']['LearningRate'].get_last_step_value())

    engine, record = make_engine(), Record()
    trainer = Trainer(engine, hooks=[dict(type='LRSchedulerHook'), record])
    lr_metric = trainer.states['metrics']['train']['LearningRate']
    assert math.isnan(lr_metric.get_last_step_value())
    assert 'before_train_iter' not in type(trainer.hooks[0]).__dict__
    trainer.fit(make_loader(24), epochs=1)    # 6 steps; StepLR(step_size=2, gamma=0.5)
    assert record.rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert engine.get_lr() == pytest.approx(0.0125)     # already the next step's rate
    lr_metric.update(0.5)                                # a value given by hand wins
    assert lr_metric.get_accumulated_value() == 0.5


def test_lr_scheduler_hook_by_epoch_takes_over_stepping():
    engine = make_engine()
    hook = dict(type='LRSchedulerHook', by_epoch=True)
    trainer = Trainer(engine, hooks=[hook])
    assert engine.lr_scheduler is None
    trainer.fit(make_loader(16), epochs=3)     # 4 steps per epoch; StepLR(step_size=2) per epoch
    assert engine.get_lr() == pytest.approx(0.1 * 0.5)   # 3 scheduler steps, not 12
    assert trainer.states['metrics']['train']['LearningRate'].get_last_step_value() == pytest.approx(0.05)
    assert trainer.state_dict()['hooks']['LRSchedulerHook']['lr_scheduler']['last_epoch'] == 3
    with pytest.raises(ValueError, match='lr_scheduler=None'):
        Trainer(make_engine(lr_scheduler=False), hooks=[hook])


def test_weights_of_another_shape_are_named_or_left_out(tmp_path, project_log):
    """Fine-tuning with a new classifier head: strict loading (also of the weights only, as
    tools/test.py does) names the keys whose shapes differ; strict=False loads every other weight
    and leaves those at their initial values."""
    source = make_engine(num_classes=3)
    Trainer(source, hooks=[SaveCheckpointHook(checkpoint_dir=str(tmp_path))]).fit(make_loader(8), 1)
    with pytest.raises(KeyError, match=r"other shapes \['2\.bias', '2\.weight'\] \(2\.bias: \(3,\) saved, "
                                       r"\(5,\) here.*strict=False"):
        Trainer(make_engine(num_classes=5)).resume(str(tmp_path))
    with pytest.raises(KeyError, match=r"other shapes \['2\.bias', '2\.weight'\]"):
        Trainer(make_engine(num_classes=5)).resume(str(tmp_path), finetune=True)
    for kwargs in (dict(strict=False), dict(finetune=True, strict=False)):
        target = make_engine(seed=7, num_classes=5)
        head = target.model[2].weight.detach().clone()
        Trainer(target).resume(str(tmp_path), **kwargs)
        assert torch.equal(target.model[0].weight, source.model[0].weight), kwargs
        assert torch.equal(target.model[2].weight, head), kwargs
        assert "not loaded, the shapes differ: ['2.bias', '2.weight']" in project_log.text


def test_a_hook_registered_during_an_epoch_is_called_from_the_next_step():
    """The Trainer skips the call for a stage no hook implements; a hook added mid-epoch (here by
    another hook after iteration 2) must still get that stage from the next step on."""
    class Before(BaseHook):
        def __init__(self):
            super().__init__()
            self.seen = []

        def before_train_iter(self, runner):
            self.seen.append(runner.states['iteration'])

    late = Before()

    class Adder(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            if runner.states['iteration'] == 2:
                runner.register_hook(late)

    trainer = Trainer(make_engine(), hooks=[Adder()])
    trainer.fit(make_loader(20, batch_size=4), epochs=1)
    assert late.seen == [2, 3, 4]  # before iterations 3, 4 and 5


class PairCounter(BaseHook):
    """Counts before_/after_ iteration calls and checks that each after follows its before."""

    def __init__(self):
        super().__init__()
        self.calls = {}
        self.open = None

    def _count(self, point, opening):
        self.calls[point] = self.calls.get(point, 0) + 1
        if opening:
            assert self.open is None, f'{point} after an unfinished {self.open}'
            self.open = point
        else:
            assert self.open == point.replace('after', 'before'), f'{point} without its before'
            self.open = None

    def before_train_iter(self, runner):
        self._count('before_train_iter', True)

    def after_train_iter(self, runner, output, label, loss):
        self._count('after_train_iter', False)

    def before_test_iter(self, runner):
        self._count('before_test_iter', True)

    def after_test_iter(self, runner, output, label, loss):
        self._count('after_test_iter', False)


class CountingStream(torch.utils.data.IterableDataset):
    def __init__(self, num_samples):
        self.num_samples, self.drawn = num_samples, 0

    def __iter__(self):
        for sample in make_dataset(self.num_samples):
            self.drawn += 1
            yield sample


@pytest.mark.parametrize('accumulation, samples, steps', [(1, 12, 3), (2, 20, 2)])
def test_iteration_hooks_pair_up_with_a_loader_without_a_length(accumulation, samples, steps):
    """The end of a loader without a length is seen before a step's before_*_iter: no
    before_train_iter / before_test_iter without its after_*_iter, and with accumulation none for
    the step the left-over batch cannot fill (20 samples in batches of 4: 5 batches, 2 steps of 2)."""
    counter = PairCounter()
    loader = torch.utils.data.DataLoader(CountingStream(samples), batch_size=4)
    test_loader = torch.utils.data.DataLoader(CountingStream(10), batch_size=4)  # 3 batches
    trainer = Trainer(make_engine(gradient_accumulation=accumulation), hooks=[counter, LossHook()])
    trainer.fit(loader, epochs=2, test_dataloader=test_loader)
    assert trainer.states['iteration'] == 2 * steps
    assert counter.calls == dict(before_train_iter=2 * steps, after_train_iter=2 * steps,
                                 before_test_iter=6, after_test_iter=6)
    assert counter.open is None


def test_max_steps_with_a_loader_without_a_length_draws_no_batch_past_the_last_step():
    counter = PairCounter()
    stream = CountingStream(40)
    trainer = Trainer(make_engine(gradient_accumulation=2), hooks=[counter])
    trainer.fit(torch.utils.data.DataLoader(stream, batch_size=4), epochs=3, max_steps=3)
    assert trainer.states['iteration'] == 3 and counter.calls['before_train_iter'] == 3
    assert stream.drawn == 3 * 2 * 4  # what a checkpoint taken now says was drawn
    assert not trainer.data_position.finished


class EveryHook(BaseHook):
    def __init__(self, every=10):  # no priority argument, as many users' hooks are written
        super().__init__()
        self.every = every


class TakesPriority(BaseHook):
    def __init__(self, every=10, priority='NORMAL'):
        super().__init__(priority)
        self.given = priority


def test_priority_in_a_hook_config_is_set_even_when_the_constructor_does_not_take_it():
    trainer = Trainer(make_engine(), hooks=[dict(type=EveryHook, every=5, priority='LOW'),
                                            dict(type=TakesPriority, priority='HIGH'),
                                            dict(type=EveryHook)])
    assert [(type(h).__name__, h.priority) for h in trainer.hooks] == [
        ('TakesPriority', 30), ('EveryHook', 50), ('EveryHook', 70)]
    assert trainer.hooks[2].every == 5 and trainer.hooks[0].given == 'HIGH'  # passed when it is an argument
    with pytest.raises(ValueError, match="unknown priority name 'LOUD'"):
        trainer.register_hook(dict(type=EveryHook, priority='LOUD'))  # still validated
    assert len(trainer.hooks) == 3


class BadState(BaseHook):
    def __init__(self, fail_on):
        super().__init__()
        self.fail_on, self.count = fail_on, 0

    def state_dict(self):
        if self.fail_on == 'save':
            raise AttributeError("'BadState' object has no attribute 'scheduler'")
        return {'n': self.count}

    def load_state_dict(self, state):
        self.count = state['count']


def test_an_error_in_a_hooks_state_dict_names_that_hook():
    trainer = Trainer(make_engine(), hooks=[LossHook(), BadState('save')])
    with pytest.raises(AttributeError) as info:
        trainer.state_dict()
    assert info.value.__notes__ == ['(raised in BadState.state_dict)']

    state = Trainer(make_engine(), hooks=[LossHook(), BadState('load')]).state_dict()
    trainer = Trainer(make_engine(), hooks=[LossHook(), BadState('load')])
    with pytest.raises(KeyError, match='count') as info:
        trainer.load_state_dict(state)
    assert info.value.__notes__ == ["(raised in BadState.load_state_dict, restoring a checkpoint's "
                                    "hooks['BadState'])"]


class MaskedLoss(torch.nn.Module):
    """A criterion that needs a key the batches do not have from the given call on."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, output, label):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise KeyError('mask')
        return torch.nn.functional.cross_entropy(output, label)


def test_an_error_in_a_step_says_the_phase_epoch_and_iteration():
    engine = make_engine()
    engine.criterion = MaskedLoss(fail_at=7)  # 5 steps per epoch: the second step of epoch 2
    trainer = Trainer(engine)
    with pytest.raises(KeyError, match='mask') as info:
        trainer.fit(make_loader(20, batch_size=4), epochs=3)
    assert info.value.__notes__ == ['(raised in the train step: epoch 2, iteration 7)']

    engine.criterion = MaskedLoss(fail_at=3)
    with pytest.raises(KeyError, match='mask') as info:
        trainer.evaluate(make_loader(20, batch_size=4))
    assert info.value.__notes__ == ['(raised in the test step: epoch 2, test step 3)']


def test_a_data_error_of_a_loader_without_a_length_says_where_it_was_drawn():
    """Such a loader's batches are drawn before the step (so that hooks pair up), outside the
    step's own note: the draw adds the same note."""
    class Failing(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(20):
                if i == 13:
                    raise KeyError('mask')
                yield torch.randn(8), torch.tensor(i % 3)

    trainer = Trainer(make_engine())
    loader = torch.utils.data.DataLoader(Failing(), batch_size=2)  # sample 13 is in the 7th batch
    with pytest.raises(KeyError, match='mask') as info:
        trainer.fit(loader, epochs=1)
    assert info.value.__notes__ == ['(raised in the train step: epoch 1, iteration 7)']
    with pytest.raises(KeyError, match='mask') as info:
        trainer.evaluate(loader)
    assert info.value.__notes__ == ['(raised in the test step: epoch 1, test step 7)']
