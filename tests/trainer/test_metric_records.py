"""metrics.jsonl across runs into one work directory: a resumed run leaves no step or epoch twice,
a fresh run keeps an earlier run's records in metrics.<n>.jsonl."""
import json

import pytest

from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (LogMetricByEpochHook, LogMetricByStepHook, LossHook,
                                           SaveCheckpointHook)
from colossal_runner.trainer.metric_records import drop_records_after

from ._toy import make_engine, make_loader


def _records(path):
    return [json.loads(line) for line in open(path, encoding='utf-8')]


def _trainer(work_dir, **save):
    hooks = [LossHook(), LogMetricByEpochHook(), LogMetricByStepHook(interval=1)]
    if save:
        hooks.append(SaveCheckpointHook(checkpoint_dir=str(work_dir / 'ckpt'), **save))
    return Trainer(make_engine(), hooks=hooks, work_dir=str(work_dir))


def _fit(trainer, epochs):
    trainer.fit(make_loader(16), epochs=epochs, test_dataloader=make_loader(8))  # 4 steps per epoch


@pytest.mark.parametrize('save, resume, epochs, dropped', [
    # after epoch 2's end (iteration 8): steps 9-16, and the train and test records of epochs 3, 4
    (dict(interval=2), 'epoch_2.pt', 4, 8 + 2 * 2),
    # at epoch 1's last step (iteration 4), before its end: epoch 1's train and test records go too
    (dict(by_epoch=False, interval=4), 'iter_4.pt', 3, 8 + 3 * 2),
])
def test_a_resumed_run_replaces_the_records_written_after_its_checkpoint(tmp_path, project_log, save, resume,
                                                                       epochs, dropped):
    """The first run goes on past the checkpoint (as a run that crashed later would). Resumed from
    the checkpoint into the same work directory, the file reads as one uninterrupted run: the
    records after the checkpoint are dropped, and the resumed run writes them again (the same
    values: a CPU resume is exact)."""
    _fit(_trainer(tmp_path, **save), epochs)
    first = _records(tmp_path / 'metrics.jsonl')
    resumed = _trainer(tmp_path, **save)
    resumed.resume(str(tmp_path / 'ckpt' / resume))
    _fit(resumed, epochs)
    again = _records(tmp_path / 'metrics.jsonl')
    key = lambda r: (r['mode'], r['by'], r['epoch'], r['iteration'])  # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in first]
    for a, b in zip(again, first):
        assert a['Loss'] == pytest.approx(b['Loss'], rel=1e-6)
    assert [line for line in project_log.lines if f'dropped {dropped} record(s)' in line]
    assert not (tmp_path / 'metrics.1.jsonl').exists()


def test_a_fresh_run_sets_an_earlier_runs_records_aside(tmp_path, project_log):
    _fit(_trainer(tmp_path), 1)
    first = open(tmp_path / 'metrics.jsonl', encoding='utf-8').read()
    _fit(_trainer(tmp_path), 2)
    assert open(tmp_path / 'metrics.1.jsonl', encoding='utf-8').read() == first  # nothing lost
    assert [r['epoch'] for r in _records(tmp_path / 'metrics.jsonl') if r['by'] == 'epoch'] == [1, 1, 2, 2]
    assert [line for line in project_log.lines if 'moved to' in line and 'metrics.1.jsonl' in line]
    _fit(_trainer(tmp_path), 1)
    assert (tmp_path / 'metrics.2.jsonl').exists() and (tmp_path / 'metrics.1.jsonl').read_text() == first


def test_records_this_trainer_wrote_before_its_first_fit_stay(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.evaluate(make_loader(8))
    _fit(trainer, 1)
    records = _records(tmp_path / 'metrics.jsonl')
    assert [(r['mode'], r['by'], r['epoch']) for r in records if r['by'] != 'step'] == [
        ('test', 'evaluate', 0), ('test', 'epoch', 1), ('train', 'epoch', 1)]
    assert not (tmp_path / 'metrics.1.jsonl').exists()


def test_a_standalone_evaluate_is_told_apart_from_the_epoch_ends_test_pass(tmp_path, project_log):
    """evaluate() after fit measures what the last epoch's test pass did: its record says 'evaluate'."""
    trainer = _trainer(tmp_path)
    _fit(trainer, 2)
    trainer.evaluate(make_loader(8))
    tests = [r for r in _records(tmp_path / 'metrics.jsonl') if r['mode'] == 'test']
    assert [(r['by'], r['epoch'], r['iteration']) for r in tests] == [('epoch', 1, 4), ('epoch', 2, 8),
                                                                      ('evaluate', 2, 8)]
    assert tests[1]['Loss'] == tests[2]['Loss']
    assert 'Epoch 2/2 test evaluate: Loss=' in project_log.text


def test_drop_records_after_keeps_what_it_cannot_place(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    lines = ['{"mode": "train", "by": "step", "epoch": 2, "iteration": 8}',
             '{"mode": "train", "by": "epoch", "epoch": 2, "iteration": 8}',
             '{"mode": "train", "by": "memory", "epoch": 3, "iteration": 8}',
             '{"mode": "train", "by": "step", "epoch": 3, "iteration": 9}',
             '{"note": "a record of my own"}',
             '{"mode": "train", "by": "st',  # cut short by a crash
             '[1, 2]']
    path.write_text('\n'.join(lines) + '\n')
    assert drop_records_after(str(path), 8, 2) == 2
    assert path.read_text().splitlines() == lines[:2] + lines[4:]
    path.write_text('\n'.join(lines[:2]) + '\n')
    assert drop_records_after(str(path), 8, 1) == 1  # epoch 2's end is still to come
    assert path.read_text().splitlines() == lines[:1]
    assert drop_records_after(str(tmp_path / 'none.jsonl'), 8, 1) == 0
