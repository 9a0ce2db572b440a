"""metrics.jsonl after a crash mid-write: the resumed run's records all read back."""
import json

from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (LogMetricByEpochHook, LogMetricByStepHook, LossHook,
                                           SaveCheckpointHook)

from ..trainer._toy import make_engine, make_loader


def _fit(work_dir, epochs, resume=None):
    hooks = [LossHook(), LogMetricByEpochHook(), LogMetricByStepHook(interval=1),
             SaveCheckpointHook(checkpoint_dir=str(work_dir / 'ckpt'))]
    trainer = Trainer(make_engine(), hooks=hooks, work_dir=str(work_dir))
    if resume:
        trainer.resume(str(work_dir / 'ckpt' / resume))
    trainer.fit(make_loader(16), epochs=epochs, test_dataloader=make_loader(8))


def _keys(path):
    with open(path, encoding='utf-8') as f:
        return [(r['mode'], r['by'], r['epoch'], r['iteration']) for r in map(json.loads, f)]


def test_a_record_cut_short_by_a_crash_does_not_swallow_the_resumed_runs_first(tmp_path, project_log):
    _fit(tmp_path / 'whole', 3)
    _fit(tmp_path / 'cut', 2)
    with open(tmp_path / 'cut' / 'metrics.jsonl', 'a', encoding='utf-8') as f:
        f.write('{"mode": "train", "by": "step", "epoch": 3, "itera')  # the crash (or a full disk) came here
    _fit(tmp_path / 'cut', 3, resume='epoch_2.pt')
    assert _keys(tmp_path / 'cut' / 'metrics.jsonl') == _keys(tmp_path / 'whole' / 'metrics.jsonl')
    assert [line for line in project_log.lines if 'removed its last line, which was cut short' in line]
