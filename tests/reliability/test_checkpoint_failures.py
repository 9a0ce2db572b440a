"""Checkpoint I/O failures: full disk, unwritable directory, torn or corrupt files, leftovers of a kill."""
import errno
import io
import os
import zipfile

import pytest
import torch

from colossal_runner import checkpoint as ckpt
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import SaveCheckpointHook

from ..trainer._toy import make_engine, make_loader


def trained(tmp_path, epochs=2):
    saver = SaveCheckpointHook(checkpoint_dir=str(tmp_path))
    trainer = Trainer(make_engine(), hooks=[saver])
    trainer.fit(make_loader(8), epochs=epochs)
    return trainer


def test_full_disk_at_save_time_is_reported_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = trained(tmp_path, epochs=1)
    before = open(tmp_path / 'epoch_1.pt', 'rb').read()
    real_save = torch.save

    def disk_fills_up(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint')  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', disk_fills_up)
    message = (r"cannot write checkpoint .*epoch_2\.pt.: No space left on device\. "
               r"Earlier checkpoints in .* are untouched\. To fix: free disk space")
    with pytest.raises(OSError, match=message) as info:
        trainer.fit(make_loader(8), epochs=2)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, 'save', real_save)
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pt', 'latest.pt']   # no partial file left behind
    assert open(tmp_path / 'epoch_1.pt', 'rb').read() == before
    assert ckpt.load_checkpoint(str(tmp_path))['states']['epoch'] == 1


class _FillsUp(io.FileIO):
    """A file on a disk with ``room`` bytes free: writes what fits, then fails with ENOSPC."""

    def __init__(self, fd, room):
        super().__init__(fd, 'wb')
        self.room = room

    def write(self, data):
        if self.room == 0:
            raise OSError(errno.ENOSPC, 'No space left on device')
        written = super().write(bytes(data)[:self.room])
        self.room -= written
        return written


def test_full_disk_inside_torchs_zip_writer_gives_the_checkpoint_message(tmp_path, monkeypatch):
    """torch.save itself, not a stand-in: its zip writer turns the failed write into
    'RuntimeError: [enforce fail at inline_container.cc] unexpected pos ...'."""
    trained(tmp_path, epochs=1)
    before = open(tmp_path / 'epoch_1.pt', 'rb').read()
    state = {'states': {'epoch': 2}, 'weight': torch.zeros(100_000)}
    monkeypatch.setattr(os, 'fdopen', lambda fd, *args, **kwargs: io.BufferedWriter(_FillsUp(fd, 20_000)))
    message = (r"cannot write checkpoint .*epoch_2\.pt.: No space left on device\. "
               r"Earlier checkpoints in .* are untouched\. To fix: free disk space")
    with pytest.raises(OSError, match=message) as info:
        ckpt.save_checkpoint(state, str(tmp_path / 'epoch_2.pt'))
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, RuntimeError)   # what torch raised
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pt', 'latest.pt']   # the temporary file is gone
    assert open(tmp_path / 'epoch_1.pt', 'rb').read() == before
    assert ckpt.load_checkpoint(str(tmp_path))['states']['epoch'] == 1


def test_a_runtime_error_of_torch_save_without_an_os_error_is_raised_unchanged(tmp_path, monkeypatch):
    def fails(obj, f, *args, **kwargs):
        raise RuntimeError('something else went wrong')

    monkeypatch.setattr(torch, 'save', fails)
    with pytest.raises(RuntimeError, match='^something else went wrong$'):
        ckpt.save_checkpoint({'states': {'epoch': 1}}, str(tmp_path / 'epoch_1.pt'))
    assert os.listdir(tmp_path) == []


def _flip_a_bit_of_the_largest_tensor(path):
    """Change one bit in the middle of the largest entry's stored bytes, as a bad disk would."""
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(open(path, 'rb').read())
    local = entry.header_offset  # local file header: 30 bytes, then the name and the extra field
    start = local + 30 + int.from_bytes(data[local + 26:local + 28], 'little') \
        + int.from_bytes(data[local + 28:local + 30], 'little')
    data[start + entry.file_size // 2] ^= 0x04
    open(path, 'wb').write(bytes(data))
    return entry.filename


def test_a_bit_flipped_on_disk_is_caught_by_the_crc_check(tmp_path):
    weight = torch.arange(4096, dtype=torch.float32)
    for epoch in (1, 2):
        ckpt.save_checkpoint({'states': {'epoch': epoch}, 'w': weight + epoch},
                             str(tmp_path / f'epoch_{epoch}.pt'))
    entry = _flip_a_bit_of_the_largest_tensor(str(tmp_path / 'epoch_2.pt'))
    silently = torch.load(tmp_path / 'epoch_2.pt', weights_only=True)   # torch reads it without complaint
    assert not torch.equal(silently['w'], weight + 2)
    message = rf"cannot read checkpoint .*epoch_2\.pt. \(its entry '{entry}' fails its CRC-32 check\)\. "
    with pytest.raises(ValueError, match=message + 'It is truncated or corrupt'):
        ckpt.load_checkpoint(str(tmp_path / 'epoch_2.pt'))
    with pytest.warns(UserWarning, match=r'skipping unreadable checkpoint .*epoch_2\.pt.*CRC-32'):
        state = ckpt.load_checkpoint(str(tmp_path))
    assert state['states']['epoch'] == 1 and torch.equal(state['w'], weight + 1)


def test_a_checkpoint_removed_right_after_it_loaded_is_not_called_corrupt(tmp_path, monkeypatch):
    """A training's max_keep cleanup may remove the file tools/test.py has just read: the CRC check
    reads the bytes that were loaded, from the same open file, not the path again."""
    path = str(tmp_path / 'epoch_1.pt')
    ckpt.save_checkpoint({'states': {'epoch': 1}, 'w': torch.arange(64.0)}, path)
    real_load = torch.load

    def load_then_remove(f, *args, **kwargs):
        state = real_load(f, *args, **kwargs)
        os.remove(path)
        return state

    monkeypatch.setattr(ckpt.torch, 'load', load_then_remove)
    state = ckpt.load_checkpoint(path)
    assert torch.equal(state['w'], torch.arange(64.0)) and not os.path.exists(path)


def test_an_empty_checkpoint_is_called_empty(tmp_path):
    (tmp_path / 'x.pt').write_bytes(b'')
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*x\.pt.: the file is empty \(0 bytes\).*"
                                         r"Load an earlier checkpoint from"):
        ckpt.load_checkpoint(str(tmp_path / 'x.pt'))


def test_unwritable_checkpoint_directory_fails_before_training(tmp_path):
    (tmp_path / 'a_file').write_text('not a directory')
    engine = make_engine()
    before = [p.detach().clone() for p in engine.model.parameters()]
    trainer = Trainer(engine, hooks=[SaveCheckpointHook(checkpoint_dir=str(tmp_path / 'a_file' / 'ckpt'))])
    message = (r"checkpoint directory .*a_file/ckpt. is not writable .*choose a writable "
               r"directory with --work-dir or SaveCheckpointHook\(checkpoint_dir=\.\.\.\)")
    with pytest.raises(OSError, match=message):
        trainer.fit(make_loader(8), epochs=1)
    assert trainer.states['iteration'] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, engine.model.parameters()))


def test_a_failing_latest_link_update_leaves_a_complete_file(tmp_path, monkeypatch):
    trained(tmp_path, epochs=1)

    def no_links(src, dst):
        raise OSError(errno.EPERM, 'Operation not permitted')

    monkeypatch.setattr(os, 'symlink', no_links)
    with pytest.raises(OSError, match=r"cannot point latest at checkpoint .*epoch_2\.pt.*make .* writable"):
        ckpt.save_checkpoint({'states': {'epoch': 2}}, str(tmp_path / 'epoch_2.pt'))
    assert ckpt.load_checkpoint(str(tmp_path / 'epoch_2.pt'))['states']['epoch'] == 2
    assert os.readlink(tmp_path / 'latest.pt') == 'epoch_1.pt'


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'empty', 'bit flip'])
def test_unreadable_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, project_log, damage):
    trained(tmp_path, epochs=3)
    newest = tmp_path / 'epoch_3.pt'
    data = newest.read_bytes()
    if damage == 'bit flip':
        _flip_a_bit_of_the_largest_tensor(str(newest))
    else:
        damaged = {'truncate': data[:len(data) // 3], 'garbage': b'\x00garbage' * 50, 'empty': b''}
        newest.write_bytes(damaged[damage])
    with pytest.warns(UserWarning, match=r"skipping unreadable checkpoint .*epoch_3\.pt., trying the prev"):
        state = ckpt.load_checkpoint(str(tmp_path / 'latest.pt'))
    assert state['states']['epoch'] == 2
    # the run's log file records it too, not only the console's warning
    assert [line for line in project_log.lines
            if 'skipping unreadable checkpoint' in line and 'epoch_3.pt' in line]
    resumed = Trainer(make_engine(seed=4))
    with pytest.warns(UserWarning, match=r'epoch_3\.pt'):
        resumed.resume(str(tmp_path))
    assert resumed.states['epoch'] == 2
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*epoch_3\.pt"):   # named explicitly
        ckpt.load_checkpoint(str(newest))


def test_every_checkpoint_unreadable_raises_naming_the_oldest(tmp_path):
    trained(tmp_path, epochs=2)
    for name in ('epoch_1.pt', 'epoch_2.pt'):
        (tmp_path / name).write_bytes(b'broken')
    with pytest.warns(UserWarning, match='epoch_2'), pytest.raises(ValueError, match=r'epoch_1\.pt'):
        ckpt.load_checkpoint(str(tmp_path))


def test_leftovers_of_a_killed_save_are_removed_before_training(tmp_path):
    trained(tmp_path, epochs=1)
    for name in ('.epoch_2.pt.x1y2.tmp', '.latest.pt.123.tmp', '.epoch_2_stage1.pt.abc.tmp'):
        (tmp_path / name).write_bytes(b'partial')
    trained(tmp_path, epochs=1)
    assert sorted(os.listdir(tmp_path)) == ['.epoch_2_stage1.pt.abc.tmp', 'epoch_1.pt', 'latest.pt']
