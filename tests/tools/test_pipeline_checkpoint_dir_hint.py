"""tools/test.py on one process given a pipeline run's directory says its checkpoints were written
per stage and which layout reads them, as it does for one of its files named without the stage."""
import os

import pytest

from colossal_runner import test as test_cli
from colossal_runner.checkpoint import resolve_checkpoint_path

from .conftest import E2E


pytestmark = pytest.mark.usefixtures('fresh_logger')


def _pipeline_run(work, stages):
    checkpoints = work / 'checkpoints'
    checkpoints.mkdir(parents=True)
    for stage in range(stages):
        (checkpoints / f'iter_10_stage{stage}.pt').write_bytes(b'x')  # never read: the names say it all
    return checkpoints


def test_a_pipeline_runs_directory_on_one_process_names_the_layout(tmp_path, capsys):
    _pipeline_run(tmp_path / 'run', 3)
    with pytest.raises(SystemExit) as exited:
        test_cli.main([os.path.join(E2E, 'tiny.py'), str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert 'a run with 3 pipeline stages wrote them per stage (iter_10_stage0.pt, iter_10_stage1.pt, ' \
           'iter_10_stage2.pt)' in err, err
    assert 'parallel.pipeline=3' in err and 'it holds' not in err, err


def test_a_directory_without_stage_files_still_lists_what_it_holds(tmp_path):
    (tmp_path / 'notes.txt').write_text('')
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in directory .*it holds \['notes.txt'\]"):
        resolve_checkpoint_path(str(tmp_path))
    # a stage 0 file alone is no pipeline layout to name (a one-stage run writes no _stage files)
    (tmp_path / 'iter_10_stage0.pt').write_bytes(b'x')
    with pytest.raises(FileNotFoundError, match=r"it holds \['iter_10_stage0.pt', 'notes.txt'\]"):
        resolve_checkpoint_path(str(tmp_path))
