"""The tools' error messages and options, through their main() in this process (fast); the
subprocess tests next to this file prove the same code runs as real commands."""
import json
import logging
import os

import pytest

from colossal_runner import test as test_cli
from colossal_runner import train as train_cli

from .conftest import E2E

TINY = os.path.join(E2E, 'tiny.py')


@pytest.fixture(autouse=True)
def fresh_logger():
    """The console handler holds the sys.stderr of its time; capsys swaps sys.stderr per test."""
    def clear():
        logger = logging.getLogger('colossal_runner')
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    clear()
    yield
    clear()


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


def test_resume_without_any_checkpoint(capsys, tmp_path):
    err = _exit(train_cli.main, [TINY, '--work-dir', str(tmp_path / 'fresh'), '--resume'], capsys)
    assert 'no checkpoint to resume from' in err


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
    assert out.startswith('Test metrics: ') and f"Accuracy={final['test']['Accuracy']:.4f}" in out
    for where in (tmp_path, tmp_path / 'latest.pt'):  # the work directory is understood too
        test_cli.main([TINY, str(where), '--json'])
        assert json.loads(capsys.readouterr().out)['Accuracy'] == pytest.approx(final['test']['Accuracy'])
    err = _exit(test_cli.main, [TINY, str(tmp_path / 'none.pt')], capsys)
    assert 'checkpoint not found' in err
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
    from colossal_runner.test import _checkpoint_exists
    for name in ('epoch_1_stage0.pt', 'epoch_1_stage1.pt'):
        (tmp_path / name).write_bytes(b'')
    for name in ('epoch_1.pt', 'epoch_1_stage1.pt', 'latest.pt'):
        assert _checkpoint_exists(str(tmp_path / name)), name
    assert not _checkpoint_exists(str(tmp_path / 'epoch_2.pt'))
    one_stage = resolve_checkpoint_path(str(tmp_path / 'epoch_1_stage0.pt'), 1)
    assert one_stage == str(tmp_path / 'epoch_1_stage1.pt')
    assert resolve_checkpoint_path(str(tmp_path / 'epoch_1.pt'), 0) == str(tmp_path / 'epoch_1_stage0.pt')
