"""train.py --resume logs where in training the checkpoint was taken: the step within its epoch for
a mid-epoch checkpoint, "after epoch N ended" for one taken at an epoch's end."""
import textwrap

import pytest

from colossal_runner import train as train_cli

from .conftest import E2E


pytestmark = pytest.mark.usefixtures('fresh_logger')


def test_the_resume_line_says_where_in_the_epoch_the_checkpoint_was(tmp_path, capsys):
    config = tmp_path / 'every_3_steps.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {E2E + '/tiny.py'!r}
        hooks = [dict(type='LossHook'), dict(type='SaveCheckpointHook', interval=3, by_epoch=False),
                 dict(type='SaveCheckpointHook', interval=1, checkpoint_dir={str(tmp_path / 'epochs')!r})]
    '''))
    work = tmp_path / 'work'
    train_cli.main([str(config), '--work-dir', str(work), '--no-progress'])  # 2 epochs of 4 steps
    capsys.readouterr()
    checkpoints = work / 'checkpoints'
    train_cli.main([str(config), '--work-dir', str(work), '--no-progress', '--resume',
                    str(checkpoints / 'iter_6.pt'), '--cfg-options', 'max_epochs=3'])
    err = capsys.readouterr().err
    read = checkpoints / 'iter_6.pt'
    assert f'resumed from {read} at epoch 2, iteration 6 (step 2 of 4 of the epoch)' in err
    train_cli.main([str(config), '--work-dir', str(tmp_path / 'again'), '--no-progress', '--resume',
                    str(tmp_path / 'epochs' / 'epoch_1.pt'), '--cfg-options', 'max_epochs=2'])
    err = capsys.readouterr().err
    read = tmp_path / 'epochs' / 'epoch_1.pt'
    assert f'resumed from {read} at epoch 1, iteration 4 (after epoch 1 ended)' in err
