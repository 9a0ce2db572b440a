"""A DataLoader worker killed (by the out-of-memory killer, typically) gets a hint on what to try."""
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader

from colossal_runner.trainer import Trainer

from ._toy import make_engine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# In a process of its own: torch's SIGCHLD handler would raise again at any later point of the
# pytest process while the failed iterator (kept by the exception's traceback) is alive.
SCRIPT = textwrap.dedent('''
    import os, signal, sys
    from torch.utils.data import DataLoader, Dataset, get_worker_info
    from colossal_runner.trainer import Trainer
    from tests.trainer._toy import make_dataset, make_engine

    class KilledInWorker(Dataset):  # its worker SIGKILLs itself, as the OOM killer would kill it
        data = make_dataset(16)
        def __len__(self):
            return len(self.data)
        def __getitem__(self, i):
            if get_worker_info() is not None:  # before it sends a batch
                os.kill(os.getpid(), signal.SIGKILL)
            return self.data[i]

    loader, trainer = DataLoader(KilledInWorker(), batch_size=4, num_workers=1), Trainer(make_engine())
    try:
        trainer.fit(loader, epochs=1) if sys.argv[1] == 'train' else trainer.evaluate(loader)
    except RuntimeError as exc:
        print(str(exc).splitlines()[0])
        print('\\n'.join(exc.__notes__))
        os._exit(0)
''')


@pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs POSIX signals')
@pytest.mark.parametrize('phase', ['train', 'test'])
def test_a_killed_dataloader_worker_gets_a_hint(phase):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', SCRIPT, phase], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    # from torch's SIGCHLD handler, or (when that interrupted the wait for data) its re-raise
    assert re.fullmatch(r'DataLoader worker \(pid(\(s\))? \d+\) (is killed by signal: Killed\. ?|exited '
                        r'unexpectedly)', lines[0]), lines
    hint = (f'(a DataLoader worker process died, often killed by the out-of-memory killer: try fewer '
            f'num_workers or a smaller batch, data.{phase}.dataloader.num_workers / .batch_size in a config)')
    assert lines[-1] == hint


def test_other_step_errors_get_no_such_hint():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            raise RuntimeError('DataLoader worker (pid 1) raised: bad sample')  # a worker's own error

    with pytest.raises(RuntimeError) as info:
        Trainer(make_engine()).fit(DataLoader(Broken(), batch_size=4), epochs=1)
    assert not any('out-of-memory' in note for note in info.value.__notes__)
