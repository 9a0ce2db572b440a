"""colossal_runner.checkpoint: atomic writes, `latest`, safe loading, RNG states."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from colossal_runner import checkpoint as ckpt


def _state(value):
    return {'engine': {'model': {'w': torch.full((3,), float(value))}}, 'states': {'epoch': value}}


def test_save_load_round_trip_and_latest(tmp_path):
    for epoch in (1, 2, 3):
        ckpt.save_checkpoint(_state(epoch), str(tmp_path / ckpt.checkpoint_name('epoch', epoch)))
    assert os.readlink(tmp_path / 'latest.pt') == 'epoch_3.pt'
    assert ckpt.find_latest(str(tmp_path)) == str(tmp_path / 'epoch_3.pt')
    for path in (tmp_path, tmp_path / 'latest.pt', tmp_path / 'epoch_3.pt'):
        loaded = ckpt.load_checkpoint(str(path))
        assert loaded['states']['epoch'] == 3
        assert torch.equal(loaded['engine']['model']['w'], torch.full((3,), 3.0))
    assert ckpt.load_checkpoint(str(tmp_path / 'epoch_1.pt'))['states']['epoch'] == 1
    assert ckpt.list_checkpoints(str(tmp_path)) == ['epoch_1.pt', 'epoch_2.pt', 'epoch_3.pt']


def test_interrupted_rename_leaves_the_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    ckpt.save_checkpoint(_state(1), str(tmp_path / 'epoch_1.pt'))
    real_replace = os.replace

    def crash_on_checkpoint(src, dst):
        if str(dst).endswith('epoch_2.pt'):
            raise KeyboardInterrupt('killed during the rename')
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', crash_on_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(_state(2), str(tmp_path / 'epoch_2.pt'))
    monkeypatch.setattr(os, 'replace', real_replace)
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pt', 'latest.pt']   # no partial file left
    assert ckpt.load_checkpoint(str(tmp_path / 'latest.pt'))['states']['epoch'] == 1


def test_partial_temporary_file_is_never_taken_for_a_checkpoint(tmp_path):
    ckpt.save_checkpoint(_state(1), str(tmp_path / 'epoch_1.pt'))
    (tmp_path / '.epoch_2.pt.abc.tmp').write_bytes(b'half a checkpoint')
    os.remove(tmp_path / 'latest.pt')   # even without the link, scanning ignores temporaries
    assert ckpt.find_latest(str(tmp_path)) == str(tmp_path / 'epoch_1.pt')


def test_truncated_or_unsafe_files_give_clear_errors(tmp_path):
    path = str(tmp_path / 'epoch_1.pt')
    ckpt.save_checkpoint(_state(1), path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*epoch_1\.pt.*truncated"):
        ckpt.load_checkpoint(path)

    class Payload:
        def __reduce__(self):
            return (os.system, ('echo pwned',))

    evil = tmp_path / 'epoch_2.pt'
    with open(evil, 'wb') as f:
        pickle.dump({'x': Payload()}, f, protocol=2)
    with pytest.raises(ValueError, match='cannot read checkpoint'):
        ckpt.load_checkpoint(str(evil))
    with pytest.raises(FileNotFoundError, match=r"epoch_9\.pt' does not exist.*epoch_1\.pt"):
        ckpt.load_checkpoint(str(tmp_path / 'epoch_9.pt'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no checkpoint in directory'):
        ckpt.load_checkpoint(str(tmp_path / 'empty'))


def test_a_file_that_is_no_checkpoint_is_called_that_not_refused(tmp_path):
    """Before, a config file given as a checkpoint was 'refused, its pickle would import or call ...'."""
    config = tmp_path / 'config.py'
    config.write_text("model = dict(type='MLP')\n")
    with pytest.raises(ValueError) as info:
        ckpt.load_checkpoint(str(config))
    assert str(info.value).startswith(f"cannot read checkpoint {str(config)!r}: it is not a checkpoint file "
                                      f"(it starts with b'mode', neither a zip archive nor a pickle)")
    assert 'refused' not in str(info.value)


def test_a_path_under_the_home_directory_is_expanded_and_the_file_read_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    ckpt.save_checkpoint(_state(4), str(tmp_path / 'ckpts' / 'epoch_4.pt'))
    for given in ('~/ckpts', '~/ckpts/latest.pt', '~/ckpts/epoch_4.pt'):
        loaded = ckpt.load_checkpoint(given)
        assert loaded['states']['epoch'] == 4
        assert loaded['meta']['path'] == str(tmp_path / 'ckpts' / 'epoch_4.pt')
    assert ckpt.resolve_checkpoint_path('~/ckpts') == str(tmp_path / 'ckpts' / 'epoch_4.pt')


def test_values_a_weights_only_load_refuses_fail_the_save(tmp_path):
    with pytest.raises(TypeError, match=r"state\['meta'\]\['v'\] is a .*TorchVersion"):
        ckpt.save_checkpoint({'meta': {'v': torch.__version__}}, str(tmp_path / 'epoch_1.pt'))
    assert not os.listdir(tmp_path)


def test_stage_files_and_links(tmp_path):
    for stage in (0, 1):
        ckpt.save_checkpoint(_state(stage), str(tmp_path / ckpt.checkpoint_name('epoch', 1, stage)))
    assert os.readlink(tmp_path / 'latest_stage1.pt') == 'epoch_1_stage1.pt'
    assert ckpt.load_checkpoint(str(tmp_path / 'latest.pt'), stage=1)['states']['epoch'] == 1
    assert ckpt.load_checkpoint(str(tmp_path / 'epoch_1.pt'), stage=0)['states']['epoch'] == 0
    assert ckpt.list_checkpoints(str(tmp_path)) == []   # no single-stage files


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save_checkpoint({'rng': ckpt.get_rng_state()}, str(tmp_path / 'epoch_1.pt'))
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(ckpt.load_checkpoint(str(tmp_path / 'epoch_1.pt'))['rng'])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


@pytest.mark.skipif(os.name != 'posix', reason='POSIX file modes and umask')
@pytest.mark.parametrize('umask', [0o022, 0o027, 0o077, 0o002], ids=oct)
def test_checkpoint_files_get_the_mode_open_would_give_them(tmp_path, umask):
    # A checkpoint is a file the user wrote: 0666 less the umask, as open() / torch.save(path) give,
    # not the 0600 of a temporary file (which a colleague or an evaluation job could not read).
    old = os.umask(umask)
    try:
        path = str(tmp_path / 'epoch_1.pt')
        ckpt.save_checkpoint(_state(1), path)
        torch.save(_state(1), str(tmp_path / 'plain.pt'))
    finally:
        os.umask(old)
    mode = os.stat(path).st_mode & 0o777
    assert mode == 0o666 & ~umask, oct(mode)
    assert mode == os.stat(tmp_path / 'plain.pt').st_mode & 0o777
    assert ckpt.load_checkpoint(path)['states']['epoch'] == 1
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pt', 'latest.pt', 'plain.pt']   # no temporary left


def test_atomic_write_never_reuses_an_existing_temporary_name(tmp_path, monkeypatch):
    taken = tmp_path / '.epoch_1.pt.aaaaaaaaaaaa.tmp'
    taken.write_bytes(b'another writer')
    names = iter(['aaaaaaaaaaaa', 'bbbbbbbbbbbb'])
    monkeypatch.setattr(ckpt.secrets, 'token_hex', lambda n: next(names))
    ckpt.save_checkpoint(_state(1), str(tmp_path / 'epoch_1.pt'))
    assert taken.read_bytes() == b'another writer'      # O_EXCL: the existing file is left alone
    assert ckpt.load_checkpoint(str(tmp_path / 'epoch_1.pt'))['states']['epoch'] == 1



def _positions(rank, world_size, iterations, directory):
    """Each rank resumes from ``directory`` whose stage files hold ``iterations[rank]`` (None: no file)."""
    import torch
    from colossal_runner.checkpoint import load_agreed
    from colossal_runner.distributed import ParallelContext, set_context
    set_context(ParallelContext(pipeline=world_size))
    if rank == 0:  # rank 0 writes every stage's files (an older common one too), then all read
        for stage, it in enumerate(iterations):
            for n in ([it] if it is not None else []) + [3]:
                torch.save({'states': {'epoch': 1, 'iteration': n}}, f'{directory}/iter_{n}_stage{stage}.pt')
    torch.distributed.barrier()
    try:
        name = f'iter_{iterations[rank]}.pt' if iterations[rank] is not None else 'iter_99.pt'
        load_agreed(f'{directory}/{name}')
        return 'ok'
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        return f'{type(exc).__name__}: {exc}'
    finally:
        set_context(None)


def test_pipeline_stages_resuming_from_different_iterations_all_stop(tmp_path):
    """Stage 0 has iter_14, stage 1 iter_7 (a file damaged or a save interrupted): "the newest
    checkpoint" differs between them. Every stage refuses, naming both and the newest checkpoint
    that both have (iter_3);
    a stage without its file makes every stage stop instead of leaving the others waiting."""
    from colossal_runner.testing import run_distributed
    for sub in ('same', 'missing'):
        (tmp_path / sub).mkdir()
    assert run_distributed(_positions, 2, [14, 14], str(tmp_path / 'same'), timeout=60) == ['ok', 'ok']
    for message in run_distributed(_positions, 2, [14, 7], str(tmp_path), timeout=60):
        assert 'stage 0: epoch 1, iteration 14, stage 1: epoch 1, iteration 7' in message
        assert f'(--resume {tmp_path}/iter_3.pt)' in message  # the newest one both stages have
    first, second = run_distributed(_positions, 2, [5, None], str(tmp_path / 'missing'), timeout=60)
    assert second.startswith('FileNotFoundError') and first.startswith('RuntimeError: stage 1 could not read')


def test_a_pipeline_checkpoint_named_without_a_pipeline_says_it_was_written_per_stage(tmp_path):
    from colossal_runner.checkpoint import resolve_checkpoint_path
    for stage in (0, 1):
        (tmp_path / f'iter_88_stage{stage}.pt').write_bytes(b'x')
    expected = (r"does not exist as one file: a pipeline run wrote it per stage "
                r"\(iter_88_stage0.pt, iter_88_stage1.pt\).*parallel.pipeline=2")
    with pytest.raises(FileNotFoundError, match=expected):
        resolve_checkpoint_path(str(tmp_path / 'iter_88.pt'))
    with pytest.raises(FileNotFoundError, match=r"does not exist; checkpoints in .*: none"):
        resolve_checkpoint_path(str(tmp_path / 'iter_90.pt'))


def test_a_checkpoint_of_fewer_pipeline_stages_names_the_layout_that_wrote_it(tmp_path):
    """A 2-stage run's epoch_1 read by stage 2 of 4 said 'does not exist; checkpoints in ...: none'."""
    from colossal_runner.checkpoint import load_checkpoint, resolve_checkpoint_path
    for stage in (0, 1):
        (tmp_path / f'epoch_1_stage{stage}.pt').write_bytes(b'x')
        os.symlink(f'epoch_1_stage{stage}.pt', tmp_path / f'latest_stage{stage}.pt')
    expected = (r"epoch_1_stage2.pt' does not exist: a run with 2 pipeline stages wrote that moment "
                r"\(epoch_1_stage0.pt, epoch_1_stage1.pt\), and this process is stage 2\. Resume or test "
                r"with the layout it was trained with \(parallel.pipeline=2 and the same schedule\)")
    for name in ('epoch_1.pt', 'epoch_1_stage0.pt'):
        with pytest.raises(FileNotFoundError, match=expected):
            resolve_checkpoint_path(str(tmp_path / name), 2)
    with pytest.raises(FileNotFoundError, match=r'a run with 2 pipeline stages wrote.*parallel.pipeline=2'):
        resolve_checkpoint_path(str(tmp_path / 'latest.pt'), 3)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of stage 3 in directory .*: its checkpoints "
                                                r"\(epoch_1_stage0.pt, epoch_1_stage1.pt\) were written by a "
                                                r"run with 2 pipeline stages.*parallel.pipeline=2"):
        load_checkpoint(str(tmp_path), stage=3)
    # stage 1's file missing while stage 2's is there: not another layout, a save cut short
    (tmp_path / 'iter_5_stage0.pt').write_bytes(b'x')
    (tmp_path / 'iter_5_stage2.pt').write_bytes(b'x')
    with pytest.raises(FileNotFoundError, match=r"iter_5_stage1.pt' does not exist, though other stages "
                                                r"have their file of that moment \(iter_5_stage0.pt, "
                                                r"iter_5_stage2.pt\): a save was interrupted"):
        resolve_checkpoint_path(str(tmp_path / 'iter_5.pt'), 1)


def test_a_save_cut_short_between_stages_is_not_blamed_on_the_layout(tmp_path):
    """A 2-stage run's epoch_2 save died after stage 0: stage 1 was told 'a run with 1 pipeline
    stages wrote that moment', though one-stage runs write no _stage files."""
    from colossal_runner.checkpoint import load_checkpoint, resolve_checkpoint_path
    for stage in (0, 1):
        (tmp_path / f'epoch_1_stage{stage}.pt').write_bytes(b'x')
    (tmp_path / 'epoch_2_stage0.pt').write_bytes(b'x')
    cut = (r"epoch_2_stage1.pt' does not exist, though other stages have their file of that moment "
           r"\(epoch_2_stage0.pt\): a save was interrupted.*checkpoints of stage 1 in .*epoch_1_stage1.pt")
    with pytest.raises(FileNotFoundError, match=cut):
        resolve_checkpoint_path(str(tmp_path / 'epoch_2.pt'), 1)
    # 4 stages cut after stage 1 at epoch 2: stage 2 has its own epoch_1 file, so no other layout
    for stage in (1, 2, 3):
        (tmp_path / f'epoch_1_stage{stage}.pt').write_bytes(b'x')
    (tmp_path / 'epoch_2_stage1.pt').write_bytes(b'x')
    with pytest.raises(FileNotFoundError, match='a save was interrupted'):
        resolve_checkpoint_path(str(tmp_path / 'epoch_2.pt'), 2)
    first = tmp_path / 'first'  # killed during the first save: stage 0's file alone
    first.mkdir()
    (first / 'iter_10_stage0.pt').write_bytes(b'x')
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(str(first), stage=1)
    assert '1 pipeline stages' not in str(info.value)


def test_bare_weights_read_back_as_they_were_saved(tmp_path):
    """load_checkpoint names the file it read in a training checkpoint's meta, and adds nothing to
    a file of bare weights, which then loads into its module as it is."""
    from torch import nn

    from colossal_runner.checkpoint import load_checkpoint
    layer = nn.Linear(3, 2)
    torch.save(layer.state_dict(), tmp_path / 'weights.pt')
    weights = load_checkpoint(str(tmp_path / 'weights.pt'))
    assert sorted(weights) == ['bias', 'weight']
    nn.Linear(3, 2).load_state_dict(weights)


def test_a_multistep_schedule_saves_and_resumes_step_for_step(tmp_path):
    """torch's MultiStepLR keeps its milestones in a collections.Counter, which a weights-only load
    rebuilds: the save accepts it, and the resumed run's learning rate at every step is the
    uninterrupted run's."""
    from torch import nn

    from colossal_runner.engine import Engine
    from colossal_runner.nn.lr_scheduler import MultiStepLR

    def build():
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return Engine(model, nn.CrossEntropyLoss(), optimizer,
                      lr_scheduler=MultiStepLR(optimizer, 12, milestones=[3, 5, 9], gamma=0.5))

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 4, generator=g), torch.randint(0, 2, (3,), generator=g)) for _ in range(12)]
    uninterrupted, first = build(), build()
    expected = []
    for batch in batches:
        uninterrupted.step(iter([batch]))
        expected.append(uninterrupted.get_lr())
    lrs = []
    for batch in batches[:4]:
        first.step(iter([batch]))
        lrs.append(first.get_lr())
    ckpt.save_checkpoint({'engine': first.state_dict()}, str(tmp_path / 'iter_4.pt'))
    loaded = ckpt.load_checkpoint(str(tmp_path))['engine']
    assert type(loaded['lr_scheduler']['milestones']).__name__ == 'Counter'  # get_lr indexes it, default 0
    resumed = build()
    resumed.load_state_dict(loaded)
    for batch in batches[4:]:
        resumed.step(iter([batch]))
        lrs.append(resumed.get_lr())
    assert lrs == expected and len(set(expected)) == 4  # each milestone passed, one after the other
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
