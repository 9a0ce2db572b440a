"""The start-up log line says that dataloader batch_size is per data-parallel replica, and what one
optimizer step then sees."""
import logging
import uuid
from pathlib import Path

from colossal_runner.testing import run_distributed

TINY = str(Path(__file__).resolve().parents[1] / 'data' / 'e2e' / 'tiny.py')


def _start_up_lines(rank, world_size, work_dir):
    return [_start_up_line(rank, world_size, work_dir, accumulation) for accumulation in (2, 1)]


def _start_up_line(rank, world_size, work_dir, accumulation):
    from colossal_runner.config import Config
    from colossal_runner.initialize import initialize
    records = []
    logger = logging.getLogger(f'test_batch_size_{uuid.uuid4().hex}')
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    cfg = Config.fromfile(TINY)
    cfg.merge_from_dict(dict(gradient_accumulation=accumulation, hooks=[]))
    initialize(cfg, work_dir=work_dir, logger=logger)
    return [r.getMessage() for r in records if r.getMessage().startswith('initialized ')]


def test_the_start_up_line_gives_the_samples_per_optimizer_step_of_all_replicas(tmp_path):
    accumulated, plain = run_distributed(_start_up_lines, 2, str(tmp_path), timeout=90)[0]
    assert len(accumulated) == 1 and ('; batch_size 16 per replica x 2 replicas x gradient_accumulation 2 = '
                                      '64 samples per optimizer step; seed 3;') in accumulated[0], accumulated
    assert '; batch_size 16 per replica x 2 replicas = 32 samples per optimizer step;' in plain[0], plain


def test_one_process_says_nothing_of_replicas(tmp_path):
    lines = _start_up_line(0, 1, str(tmp_path), 1)
    assert len(lines) == 1 and 'replica' not in lines[0] and 'batch_size' not in lines[0], lines
