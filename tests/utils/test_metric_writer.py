"""utils/logging.MetricWriter: every line of metrics.jsonl is one whole JSON record, and a write
that fails names the file."""
import errno
import json
import os

import pytest

from colossal_runner.trainer.metric_records import drop_records_after
from colossal_runner.utils.logging import MetricWriter

RECORD = '{"mode": "train", "by": "step", "epoch": 1, "iteration": 3, "Loss": 0.5}'


def _records(path):
    return [json.loads(line) for line in open(path, encoding='utf-8')]


@pytest.mark.parametrize('cut', [RECORD[:20].encode(), b'{', '{"name": "caf\u00e9"}'.encode()[:14]],
                         ids=['mid-record', 'one byte', 'mid-character'])
def test_a_last_line_cut_short_is_removed_before_the_first_append(tmp_path, project_log, cut):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes((RECORD + '\n').encode() + cut)  # a crash mid-write: no newline
    MetricWriter(str(path)).write({'epoch': 2, 'iteration': 4})
    assert _records(path) == [json.loads(RECORD), {'epoch': 2, 'iteration': 4}]
    assert [line for line in project_log.lines if 'removed its last line, which was cut short' in line]


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, project_log):
    path = tmp_path / 'metrics.jsonl'
    path.write_text(RECORD + '\n' + RECORD)
    writer = MetricWriter(str(path))
    writer.write({'iteration': 4})
    writer.write({'iteration': 5})
    assert _records(path) == [json.loads(RECORD)] * 2 + [{'iteration': 4}, {'iteration': 5}]
    assert not [line for line in project_log.lines if 'cut short' in line]


def test_a_file_that_is_one_cut_line_becomes_empty(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('x' * 200_000)  # longer than one block of the backwards search
    MetricWriter(str(path)).write({'iteration': 1})
    assert _records(path) == [{'iteration': 1}]


def test_drop_records_after_removes_a_cut_last_line(tmp_path, project_log):
    path = tmp_path / 'metrics.jsonl'
    later = '{"mode": "train", "by": "step", "epoch": 2, "iteration": 5}'
    path.write_text(RECORD + '\n' + later + '\n' + RECORD[:30])
    assert drop_records_after(str(path), 4, 1) == 1  # the cut line is not one of the dropped records
    assert path.read_text() == RECORD + '\n'
    assert [line for line in project_log.lines if 'cut short' in line]


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
def test_a_full_disk_names_the_metrics_file(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    os.symlink('/dev/full', path)  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(OSError, match=r"cannot write the metrics file .*metrics\.jsonl.: No space left on "
                                      r"device\. To fix: free space on its device, or choose another work "
                                      r"directory") as info:
        MetricWriter(str(path)).write({'iteration': 1})
    assert info.value.errno == errno.ENOSPC
