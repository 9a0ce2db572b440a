"""Bad ``parallel`` settings are ConfigErrors naming the config file and the key path, with a
suggestion: an unknown key gets the closest known one, a layout the processes cannot hold says
what to launch or change. One process and several alike."""
import pytest

from colossal_runner.config import Config, ConfigError
from colossal_runner.distributed import setup_parallel
from colossal_runner.testing import run_distributed


@pytest.fixture
def config(tmp_path):
    """A config file with the given ``parallel`` entry: ``config('dict(piepline=2)')``."""
    def write(parallel):
        path = tmp_path / 'run.py'
        path.write_text(f'parallel = {parallel}\nseed = 3\n')
        return str(path)
    return write


@pytest.mark.parametrize('parallel, key, message', [
    ('dict(piepline=2)', 'parallel.piepline', "unknown key 'piepline'; did you mean 'pipeline'? parallel "
                                              'takes pipeline, data and tensor'),
    ('dict(pipeline=3)', 'parallel.pipeline', 'the world size 1 is not divisible by the pipeline size '
                                              'parallel.pipeline=3; launch a multiple of 3 processes'),
    ('dict(pipeline=0)', 'parallel.pipeline', 'parallel.pipeline must be a positive int, got 0'),
    ('dict(tensor=2)', 'parallel.tensor', 'parallel.tensor=2 is not supported yet'),
    ('dict(data=0)', 'parallel.data', 'parallel.data must be a positive int or None, got 0'),
    ('3', 'parallel', 'expected a dict like dict(pipeline=2, data=2), got int: 3'),
])
def test_one_process_names_the_file_and_the_key(config, parallel, key, message, monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    path = config(parallel)
    for cfg in (path, Config.fromfile(path)):  # as setup_parallel and initialize() pass it
        with pytest.raises(ConfigError) as info:
            setup_parallel(cfg)
        assert info.value.filename == path and info.value.key_path == key
        assert str(info.value).startswith(f'config {path}, key {key}: {message}'), str(info.value)


def _setup(rank, world_size, path):
    try:
        setup_parallel(path)
    except ConfigError as err:
        return err.filename, err.key_path, err.message
    return 'started'


def test_every_rank_of_a_process_group_names_the_file_and_the_key(config):
    path = config('dict(pipeline=2, data=2)')
    for filename, key, message in run_distributed(_setup, 2, path, timeout=60):
        assert (filename, key) == (path, 'parallel.data')
        assert message.startswith('parallel.pipeline x parallel.data = 2 x 2 = 4 but the world size is 2; '
                                  'launch 4 processes')
