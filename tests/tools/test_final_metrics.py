"""The end of a training run: the "Final metrics" line, final_metrics.json, and test.py --json."""
import json
import math
import os
import shutil

import pytest

from colossal_runner import test as test_cli
from colossal_runner import train as train_cli

from .conftest import E2E

pytestmark = pytest.mark.usefixtures('fresh_logger')  # a clean logger per test

TINY = os.path.join(E2E, 'tiny.py')


def test_a_diverged_runs_nan_loss_is_kept_and_test_json_stays_valid(capsys, tmp_path):
    """Before, NaN metrics were left out of the line and the file, and test.py --json printed NaN."""
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress', '--cfg-options', 'max_epochs=1',
                    'nonfinite_loss=off', 'optimizer.lr=1e30'])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith('Final metrics: train Loss=nan, train Accuracy=') and 'test Loss=nan' in line
    final = json.loads((tmp_path / 'final_metrics.json').read_text(encoding='utf-8'))
    assert final['train']['Loss'] is None and final['test']['Loss'] is None
    assert 0 <= final['test']['Accuracy'] <= 1
    test_cli.main([TINY, str(tmp_path), '--json'])
    printed = capsys.readouterr().out.strip()
    tested = json.loads(printed)
    assert 'NaN' not in printed and tested.pop('checkpoint')['epoch'] == 1
    assert tested == dict(Loss=None, Accuracy=final['test']['Accuracy'])


def test_final_metrics_say_when_each_modes_values_were_measured(capsys, tmp_path):
    """With test_interval=2 and 3 epochs the test metrics are epoch 2's: the file and the line say so."""
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress', '--cfg-options', 'max_epochs=3',
                    'test_interval=2'])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    final = json.loads((tmp_path / 'final_metrics.json').read_text(encoding='utf-8'))
    assert final['measured_at'] == dict(train=dict(epoch=3, iteration=12), test=dict(epoch=2, iteration=8))
    records = [json.loads(r) for r in (tmp_path / 'metrics.jsonl').read_text(encoding='utf-8').splitlines()]
    test_record = [r for r in records if r['mode'] == 'test'][-1]
    assert test_record['epoch'] == 2 and final['test']['Loss'] == test_record['Loss']
    assert line.endswith(f"test Loss={final['test']['Loss']:.6g}, "
                         f"test Accuracy={final['test']['Accuracy']:.6g} (epoch 2)")


def test_the_line_has_six_significant_digits():
    metrics = dict(train=dict(Loss=123456.789, LearningRate=1.36e-5), test=dict(Loss=math.nan))
    at = dict(train=dict(epoch=3, iteration=9), test=dict(epoch=3, iteration=9))
    assert train_cli.format_final_metrics(metrics, at) == ('train Loss=123457, train LearningRate=1.36e-05, '
                                                           'test Loss=nan')


def test_nothing_to_train_in_a_new_work_directory_does_not_claim_to_keep_a_file(capsys, tmp_path):
    first = tmp_path / 'first'
    train_cli.main([TINY, '--work-dir', str(first), '--no-progress', '--cfg-options', 'max_epochs=1'])
    capsys.readouterr()
    train_cli.main([TINY, '--work-dir', str(tmp_path / 'second'), '--no-progress', '--resume',
                    str(first / 'checkpoints'), '--cfg-options', 'max_epochs=1'])
    err = capsys.readouterr().err
    assert 'nothing to train' in err and 'final_metrics.json is kept' not in err
    assert f"no final_metrics.json is written in {tmp_path / 'second'}" in err
    assert not (tmp_path / 'second' / 'final_metrics.json').exists()
    shutil.copy(first / 'final_metrics.json', tmp_path / 'second')
    train_cli.main([TINY, '--work-dir', str(tmp_path / 'second'), '--no-progress', '--resume',
                    str(first / 'checkpoints'), '--cfg-options', 'max_epochs=1'])
    assert 'final_metrics.json is kept.' in capsys.readouterr().err


def test_resuming_a_finished_run_keeps_its_final_metrics_even_with_a_metric_that_follows_state(
        capsys, tmp_path):
    """LearningRate has a value right after a resume (the engine saves step_lr); the finished
    run's final_metrics.json must still not be replaced by a run that trained nothing."""
    config = tmp_path / 'with_lr_hook.py'
    config.write_text(f"_base_ = {TINY!r}\nhooks = [dict(type='LossHook'), dict(type='LRSchedulerHook'), "
                      f"dict(type='SaveCheckpointHook')]\nmax_epochs = 1\n", encoding='utf-8')
    train_cli.main([str(config), '--work-dir', str(tmp_path), '--no-progress'])
    before = (tmp_path / 'final_metrics.json').read_text(encoding='utf-8')
    assert 'LearningRate' in before
    capsys.readouterr()
    train_cli.main([str(config), '--work-dir', str(tmp_path), '--no-progress', '--resume'])
    assert 'nothing to train' in capsys.readouterr().err
    assert (tmp_path / 'final_metrics.json').read_text(encoding='utf-8') == before


def test_a_resumed_run_that_evaluates_no_more_reports_the_checkpoints_evaluation(capsys, tmp_path):
    """test_interval=2, 3 epochs, resumed from epoch_2.pt: epoch 3 runs no evaluation. The resumed
    run used to print 'test Loss=nan' and write null test metrics over the finished run's."""
    options = ['--no-progress', '--cfg-options', 'max_epochs=3', 'test_interval=2']
    train_cli.main([TINY, '--work-dir', str(tmp_path)] + options)
    whole_line = capsys.readouterr().out.strip().splitlines()[-1]
    whole = json.loads((tmp_path / 'final_metrics.json').read_text(encoding='utf-8'))
    assert whole['measured_at']['test'] == dict(epoch=2, iteration=8)
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--resume',
                    str(tmp_path / 'checkpoints' / 'epoch_2.pt')] + options)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    resumed = json.loads((tmp_path / 'final_metrics.json').read_text(encoding='utf-8'))
    assert resumed['test'] == whole['test'] and resumed['measured_at'] == whole['measured_at']
    assert resumed['test']['Loss'] is not None and 'nan' not in line
    assert line.split('test ', 1)[1] == whole_line.split('test ', 1)[1]  # '... (epoch 2)' included


def test_a_run_without_test_data_has_no_test_part(capsys, tmp_path):
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress', '--cfg-options', 'max_epochs=1',
                    'data.test=None'])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith('Final metrics: train Loss=') and 'test' not in line and 'nan' not in line
    final = json.loads((tmp_path / 'final_metrics.json').read_text(encoding='utf-8'))
    assert set(final) == {'train', 'measured_at'} and set(final['measured_at']) == {'train'}


def test_test_py_says_which_checkpoint_it_evaluated(capsys, tmp_path):
    """Given a directory, test.py used to pick its newest file silently, and its start-up line named
    the config's default work_dir (work_dirs/tiny), which it does not use."""
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress'])
    capsys.readouterr()
    test_cli.main([TINY, str(tmp_path), '--json'])
    out, err = capsys.readouterr()
    evaluated = str(tmp_path / 'checkpoints' / 'epoch_2.pt')
    assert f'evaluating {evaluated} (epoch 2, iteration 8)' in err
    assert f'work_dir {tmp_path}\n' in err and 'work_dirs' not in err
    assert json.loads(out)['checkpoint'] == dict(path=evaluated, epoch=2, iteration=8)
    test_cli.main([TINY, str(tmp_path / 'checkpoints' / 'epoch_1.pt')])
    out, err = capsys.readouterr()
    assert f"evaluating {tmp_path / 'checkpoints' / 'epoch_1.pt'} (epoch 1, iteration 4)" in err
    assert out.startswith('Test metrics: Loss=')
