"""LogTimingByEpochHook / LogMemoryByEpochHook records across resumes."""
import json
import math

from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import LogMemoryByEpochHook, LogTimingByEpochHook, SaveCheckpointHook

from ._toy import make_engine, make_loader


def _run(work_dir, hooks, resume_from=None, epochs=2):
    trainer = Trainer(make_engine(), hooks=hooks, work_dir=str(work_dir))
    if resume_from is not None:
        trainer.resume(str(resume_from))
    trainer.fit(make_loader(20), epochs=epochs)  # 5 steps per epoch
    return [json.loads(line) for line in open(work_dir / 'metrics.jsonl', encoding='utf-8')]


def _timing(records):
    return [r for r in records if r['by'] == 'epoch_timing' and r['mode'] == 'train']


def test_an_epoch_this_process_ran_no_step_of_gets_no_timing_record(tmp_path):
    """Resumed from iter_5.pt (epoch 1's last step, before its end), the run ends epoch 1 without
    a step: it used to write epoch_time=0, step_time=null for it."""
    saving = SaveCheckpointHook(interval=5, by_epoch=False, checkpoint_dir=str(tmp_path / 'ckpt'))
    first = _timing(_run(tmp_path, [LogTimingByEpochHook(), saving]))
    assert [(r['epoch'], r['steps']) for r in first] == [(1, 5), (2, 5)]
    records = _run(tmp_path, [LogTimingByEpochHook()], resume_from=tmp_path / 'ckpt' / 'iter_5.pt')
    timing = _timing(records)
    assert [(r['epoch'], r['steps']) for r in timing] == [(2, 5)]
    assert all(r['epoch_time'] > 0 and math.isfinite(r['step_time']) for r in timing)


def test_a_timing_record_after_a_mid_epoch_resume_says_how_many_steps_it_timed(tmp_path):
    saving = SaveCheckpointHook(interval=3, by_epoch=False, checkpoint_dir=str(tmp_path / 'ckpt'))
    _run(tmp_path, [LogTimingByEpochHook(), saving])
    records = _run(tmp_path, [LogTimingByEpochHook()], resume_from=tmp_path / 'ckpt' / 'iter_3.pt')
    assert [(r['epoch'], r['steps']) for r in _timing(records)] == [(1, 2), (2, 5)]


def test_each_memory_record_is_in_the_file_once_across_resumes(tmp_path):
    """Each resume from epoch_1.pt used to add another 'memory' record of epoch 1: the start
    record had the key of epoch 1's end record."""
    saving = SaveCheckpointHook(interval=1, checkpoint_dir=str(tmp_path / 'ckpt'))
    _run(tmp_path, [LogMemoryByEpochHook(), saving])
    for _ in range(2):
        records = _run(tmp_path, [LogMemoryByEpochHook()], resume_from=tmp_path / 'ckpt' / 'epoch_1.pt')
        keys = [(r['by'], r['epoch'], r['iteration']) for r in records if r['by'].startswith('memory')]
        assert keys == [('memory_start', 0, 0), ('memory', 1, 5), ('memory_start', 1, 5), ('memory', 2, 10)]


def test_the_peak_rss_is_never_below_the_current_rss(monkeypatch):
    """ru_maxrss is updated lazily by the kernel and was seen reading below /proc's current RSS."""
    import resource
    from types import SimpleNamespace

    import torch

    from colossal_runner.trainer.hooks import log_memory_hook

    monkeypatch.setattr(resource, 'getrusage', lambda who: SimpleNamespace(ru_maxrss=1))  # 1 KiB
    values = log_memory_hook.memory_usage(torch.device('cpu'))
    assert values['rss_mb'] > 1 / 1024
    assert values['rss_peak_mb'] == values['rss_mb']
