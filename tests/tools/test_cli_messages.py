"""The tools' error messages and options, through their main() in this process (fast); the
subprocess tests next to this file prove the same code runs as real commands."""
import json
import os

import pytest

from colossal_runner import test as test_cli
from colossal_runner import train as train_cli

from .conftest import E2E

TINY = os.path.join(E2E, 'tiny.py')


pytestmark = pytest.mark.usefixtures('fresh_logger')


def _exit(main, argv, capsys, status=2):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == status, err
    assert 'Traceback' not in err
    return err


@pytest.mark.parametrize('argv, message', [
    ([os.path.join(E2E, 'unknown_model.py')], "'MPL' is not in the model registry. Did you mean 'MLP'?"),
    ([TINY, '--cfg-options', 'model.in_features=0'], 'MLP in_features must be a positive int, got 0'),
    ([TINY, '--cfg-options', 'optimizer.type=SDG'], "Did you mean 'SGD'"),
    ([os.path.join(E2E, 'missing_import.py')], "No module named 'no_such_module_for_tests'"),
    ([TINY, '--cfg-options', 'gradient_accumulation=0'],
     'key gradient_accumulation: expected a positive int'),
    ([os.path.join(E2E, 'unknown_hook.py')],
     "key hooks[1].type: 'AccuracyHok' is not in the hook registry. Did you mean 'AccuracyHook'?"),
    ([TINY, '--launcher', 'mpi'], "argument --launcher: invalid choice: 'mpi'"),
    ([TINY, '--cfg-options', 'optimizer'], 'KEY=VALUE'),
    ([TINY, '--resume', '/nonexistent/epoch_1.pt'], "checkpoint '/nonexistent/epoch_1.pt' does not exist"),
])
def test_train_errors_are_one_clear_message(argv, message, capsys, tmp_path):
    err = _exit(train_cli.main, argv + ['--work-dir', str(tmp_path)], capsys)
    assert message in err
    if '--launcher' not in argv and 'optimizer' not in argv[-1:]:  # argparse adds its usage line
        assert err.strip().splitlines()[-1].startswith('train.py: error: ')
        assert '(rerun with --debug for the traceback)' in err


def test_resume_without_any_checkpoint_starts_from_scratch_unless_a_path_is_named(capsys, tmp_path):
    """A requeued job's fixed command line (`--resume`), preempted before its first save: the work
    directory has no checkpoint directory yet, or an empty one (a save cut short leaves only its
    temporary file). It used to fail on every requeue; an explicit path still fails."""
    fresh, empty = tmp_path / 'fresh', tmp_path / 'empty'
    (empty / 'checkpoints').mkdir(parents=True)
    (empty / 'checkpoints' / '.iter_1.pt.0a1b2c.tmp').write_bytes(b'cut short')
    best_only = tmp_path / 'best_only'  # save_best wrote best.pt before the first interval's save
    (best_only / 'checkpoints').mkdir(parents=True)
    (best_only / 'checkpoints' / 'best.pt').write_bytes(b'no place to go on from')
    for work_dir in (fresh, empty, best_only):
        train_cli.main([TINY, '--work-dir', str(work_dir), '--no-progress', '--resume',
                        '--cfg-options', 'max_epochs=1'])
        out, err = capsys.readouterr()
        assert f"--resume: no checkpoint in {work_dir / 'checkpoints'} yet, starting from scratch" in err
        assert 'Final metrics: train Loss=' in out and (work_dir / 'checkpoints' / 'epoch_1.pt').is_file()
    err = _exit(train_cli.main, [TINY, '--work-dir', str(tmp_path / 'other'), '--resume',
                                 str(tmp_path / 'nothing')], capsys)
    assert f"checkpoint '{tmp_path / 'nothing'}' does not exist" in err
    (tmp_path / 'nothing').mkdir()
    err = _exit(train_cli.main, [TINY, '--work-dir', str(tmp_path / 'other'), '--resume',
                                 str(tmp_path / 'nothing')], capsys)
    assert f"no checkpoint in directory '{tmp_path / 'nothing'}'" in err


def test_debug_keeps_the_original_exception(tmp_path):
    with pytest.raises(KeyError, match="'MPL' is not in the model registry"):
        train_cli.main([os.path.join(E2E, 'unknown_model.py'), '--work-dir', str(tmp_path), '--debug'])


def test_typo_key_is_an_error_naming_the_known_key(capsys, tmp_path):
    err = _exit(train_cli.main, [os.path.join(E2E, 'typo_key.py'), '--work-dir', str(tmp_path)], capsys)
    assert "typo_key.py, key optimzer: unknown top-level key 'optimzer'; did you mean 'optimizer'" in err
    assert not (tmp_path / 'typo_key.py').exists()  # nothing of a run was written


def test_seed_option_reaches_the_dumped_config(capsys, tmp_path):
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--seed', '7', '--no-progress',
                    '--cfg-options', 'max_steps=2'])
    assert 'Final metrics:' in capsys.readouterr().out
    from colossal_runner.config import Config
    assert Config.fromfile(str(tmp_path / 'tiny.py')).seed == 7


def test_test_tool_messages_and_text_output(capsys, tmp_path):
    train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress', '--cfg-options', 'max_epochs=1'])
    final = json.load(open(tmp_path / 'final_metrics.json'))
    capsys.readouterr()
    test_cli.main([TINY, str(tmp_path / 'checkpoints')])  # a directory: its newest checkpoint
    out = capsys.readouterr().out
    assert out.startswith('Test metrics: ') and f"Accuracy={final['test']['Accuracy']:.6g}" in out
    for where in (tmp_path, tmp_path / 'latest.pt'):  # the work directory is understood too
        test_cli.main([TINY, str(where), '--json'])
        assert json.loads(capsys.readouterr().out)['Accuracy'] == pytest.approx(final['test']['Accuracy'])
    err = _exit(test_cli.main, [TINY, str(tmp_path / 'none.pt')], capsys)
    # as train.py --resume says it: the checkpoints that are there
    assert f"checkpoint '{tmp_path / 'checkpoints' / 'none.pt'}' does not exist; checkpoints in " in err
    assert "['epoch_1.pt']" in err
    ckpts = str(tmp_path / 'checkpoints')
    err = _exit(test_cli.main, [TINY, ckpts, '--cfg-options', 'model.hidden=[4]'], capsys)
    assert "other shapes ['1.bias', '1.weight', '3.weight']" in err
    assert '3.weight: (3, 16) saved, (3, 4) here' in err
    err = _exit(test_cli.main, [TINY, ckpts, '--cfg-options', 'data.test=None'], capsys)
    assert 'has no data.test to evaluate on' in err


def test_test_tool_finds_a_pipeline_runs_checkpoint_by_its_name(tmp_path):
    """A pipeline run saves epoch_1_stage0.pt, epoch_1_stage1.pt: test.py takes epoch_1.pt,
    either stage's file or latest.pt for it (each stage then reads its own file)."""
    from colossal_runner.checkpoint import resolve_checkpoint_path
    from colossal_runner.test import _missing_checkpoint
    for name in ('epoch_1_stage0.pt', 'epoch_1_stage1.pt'):
        (tmp_path / name).write_bytes(b'')
    for name in ('epoch_1.pt', 'epoch_1_stage1.pt', 'latest.pt'):
        assert _missing_checkpoint(str(tmp_path / name)) == '', name
    missing = _missing_checkpoint(str(tmp_path / 'epoch_2.pt'))
    assert "epoch_2_stage0.pt' does not exist" in missing and "['epoch_1_stage0.pt']" in missing
    one_stage = resolve_checkpoint_path(str(tmp_path / 'epoch_1_stage0.pt'), 1)
    assert one_stage == str(tmp_path / 'epoch_1_stage1.pt')
    assert resolve_checkpoint_path(str(tmp_path / 'epoch_1.pt'), 0) == str(tmp_path / 'epoch_1_stage0.pt')


def _write(path, text):
    path.write_text(text, encoding='utf-8')
    return str(path)


def test_a_config_holding_a_class_trains_and_dumps_what_it_can(capsys, tmp_path):
    """Before, the dump failed with a YapfError after the whole run was built (exit 2)."""
    config = _write(tmp_path / 'with_class.py', f"_base_ = {TINY!r}\nfrom torch import nn\n"
                                                 'loss = dict(type=nn.CrossEntropyLoss)\n')
    work = tmp_path / 'work'
    train_cli.main([config, '--work-dir', str(work), '--no-progress', '--cfg-options', 'max_steps=2'])
    captured = capsys.readouterr()
    assert 'Final metrics:' in captured.out
    assert ('the merged config holds values that have no config text (loss.type = '
            'torch.nn.modules.loss.CrossEntropyLoss)') in captured.err
    dumped = (work / 'with_class.py').read_text(encoding='utf-8')
    assert '#   loss.type = torch.nn.modules.loss.CrossEntropyLoss' in dumped
    assert '# loss = dict(type=nn.CrossEntropyLoss)' in dumped  # the file as written, at the end
    from colossal_runner.config import Config
    assert Config.fromfile(str(work / 'with_class.py')).loss.type == 'torch.nn.modules.loss.CrossEntropyLoss'


def test_a_failed_run_writes_its_error_into_its_log(capsys, tmp_path):
    """Before, the log file the run had opened stayed empty: the error went to stderr only."""
    work = tmp_path / 'bad_data'
    _exit(train_cli.main, [TINY, '--work-dir', str(work), '--cfg-options', 'data.train.dataset=None'], capsys)
    (log,) = work.glob('*.log')
    lines = log.read_text(encoding='utf-8').splitlines()
    assert lines[-1].endswith(f"ERROR - train.py: error: config {TINY}, key data.train.dataset: expected "
                              "a dict like dict(type='Digits'), got NoneType: None")
    # a NaN loss, which the trainer logs itself, is in the log once
    diverged = tmp_path / 'diverged'
    _exit(train_cli.main, [TINY, '--work-dir', str(diverged), '--no-progress', '--cfg-options',
                           'optimizer.lr=1e30'], capsys, status=1)
    (nan_log,) = diverged.glob('*.log')
    assert nan_log.read_text(encoding='utf-8').count('non-finite loss') == 1
    config = _write(tmp_path / 'failing_hook.py', f'''_base_ = {TINY!r}
from colossal_runner.trainer.hooks import BaseHook
class FailingHook(BaseHook):
    def after_train_iter(self, runner, output, label, loss):
        raise RuntimeError('boom')
hooks = [dict(type=FailingHook)]
''')
    work = tmp_path / 'failing_hook'
    err = _exit(train_cli.main, [config, '--work-dir', str(work), '--no-progress'], capsys, status=1)
    assert 'train.py: error: RuntimeError: boom (raised in FailingHook.after_train_iter) (rerun' in err
    (log,) = work.glob('*.log')
    assert log.read_text(encoding='utf-8').splitlines()[-1].endswith(
        'ERROR - train.py: error: RuntimeError: boom (raised in FailingHook.after_train_iter)')
    # an error before a run opens its log goes into no log: not into the previous run's, still attached
    _exit(train_cli.main, [TINY, '--work-dir', str(work), '--cfg-options', 'optimzer.lr=1'], capsys)
    assert list(work.glob('*.log')) == [log] and 'optimzer' not in log.read_text(encoding='utf-8')


def test_resume_messages_name_a_file_that_is_no_checkpoint(capsys, tmp_path):
    # (--resume without a value in a work directory without checkpoints: see the test above)
    err = _exit(train_cli.main, [TINY, '--work-dir', str(tmp_path / 'w'), '--resume', TINY], capsys)
    assert f"cannot read checkpoint {TINY!r}: it is not a checkpoint file (it starts with b'# A '" in err
    assert 'refused' not in err


def test_resume_logs_the_file_it_read_and_expands_the_home_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    train_cli.main([TINY, '--no-progress', '--cfg-options', 'max_epochs=1', 'work_dir=~/runs/tiny'])
    assert (tmp_path / 'runs' / 'tiny' / 'checkpoints' / 'epoch_1.pt').is_file()
    assert not (tmp_path / '~').exists()  # not a folder literally named ~
    capsys.readouterr()
    train_cli.main([TINY, '--no-progress', '--cfg-options', 'max_epochs=2', 'work_dir=~/runs/tiny',
                    '--resume=~/runs/tiny'])
    err = capsys.readouterr().err
    read = tmp_path / 'runs' / 'tiny' / 'checkpoints' / 'epoch_1.pt'
    assert f'resumed from {read} at epoch 1, iteration 4 (after epoch 1 ended)' in err


def test_deterministic_flag_turns_on_deterministic_algorithms_and_is_dumped(capsys, tmp_path):
    import torch
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    workspace = os.environ.pop('CUBLAS_WORKSPACE_CONFIG', None)
    try:
        train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress', '--deterministic',
                        '--cfg-options', 'max_steps=1'])
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, before[1]
        os.environ.pop('CUBLAS_WORKSPACE_CONFIG', None)
        if workspace is not None:
            os.environ['CUBLAS_WORKSPACE_CONFIG'] = workspace
    from colossal_runner.config import Config
    assert Config.fromfile(str(tmp_path / 'tiny.py')).deterministic is True


def test_show_schedule_refuses_zero_chunks():
    import subprocess
    import sys

    from .conftest import ROOT
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'show_schedule.py'), '--schedule',
                           'interleaved', '--chunks', '0'], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: --chunks must be a positive int (model chunks per stage), got 0'
