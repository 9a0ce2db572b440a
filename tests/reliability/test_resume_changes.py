"""Resuming when something changed since the checkpoint: a fine-tune run (LoadCheckpointHook), another
number of steps per epoch, persistent DataLoader workers, and mmcv's resume_from / load_from keys."""
import os
import warnings

import pytest
import torch

from colossal_runner import train as train_cli
from colossal_runner.checkpoint import load_checkpoint
from colossal_runner.config import Config
from colossal_runner.config.errors import ConfigError
from colossal_runner.data import SyntheticClassification, build_dataloader
from colossal_runner.initialize import check_top_level_keys
from colossal_runner.nn.lr_scheduler import CosineAnnealingLR
from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.trainer.hooks import LoadCheckpointHook, SaveCheckpointHook

from ..trainer._toy import make_engine, make_loader

E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'e2e')


class Epochs(BaseHook):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def after_train_epoch(self, runner):
        self.epochs.append(runner.states['epoch'])


def _one_epoch(tmp_path, samples, epochs=1):
    directory = str(tmp_path / 'ck')
    Trainer(make_engine(), hooks=[SaveCheckpointHook(checkpoint_dir=directory)]).fit(make_loader(samples),
                                                                                    epochs=epochs)
    return directory


def _pretrained(directory):
    """A finished 1-epoch run's checkpoints (other weights than a fresh make_engine's)."""
    trainer = Trainer(make_engine(seed=5, dropout=0.2), hooks=[SaveCheckpointHook(checkpoint_dir=directory)])
    trainer.fit(make_loader(24, shuffle=True, generator=torch.Generator().manual_seed(1)), epochs=1)
    return directory


def _finetune(ckpt_dir, pretrained, max_steps=None, resume=False):
    """3 epochs of 6 steps from the pretrained weights, an iteration checkpoint every 4 steps."""
    trainer = Trainer(make_engine(dropout=0.2), hooks=[
        SaveCheckpointHook(interval=4, by_epoch=False, checkpoint_dir=ckpt_dir),
        LoadCheckpointHook(pretrained, finetune=True)])
    if resume:
        trainer.resume(ckpt_dir)
    trainer.fit(make_loader(24, shuffle=True, generator=torch.Generator().manual_seed(2)), epochs=3,
                max_steps=max_steps)
    return trainer


def test_a_stopped_finetune_run_resumes_bit_identical_to_the_uninterrupted_one(tmp_path, project_log):
    pretrained = _pretrained(str(tmp_path / 'pretrained'))
    reference = _finetune(str(tmp_path / 'ref'), pretrained).engine.state_dict()
    _finetune(str(tmp_path / 'cut'), pretrained, max_steps=10)   # saves iter_8.pt and iter_10.pt
    resumed = _finetune(str(tmp_path / 'cut'), pretrained, resume=True)
    assert (resumed.states['epoch'], resumed.states['iteration']) == (3, 18)
    state = resumed.engine.state_dict()
    for part in ('model', 'optimizer'):
        flat_ref, flat_got = _tensors(reference[part]), _tensors(state[part])
        assert len(flat_ref) == len(flat_got) > 0
        for (name, want), (_, got) in zip(flat_ref, flat_got):
            assert torch.equal(got, want), f'{part}: {name}'
    assert 'LoadCheckpointHook: not loading' in project_log.text
    assert 'the run was resumed from a checkpoint (epoch 2, iteration 10)' in project_log.text


def _tensors(tree, prefix=''):
    if isinstance(tree, torch.Tensor):
        return [(prefix, tree)]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in _tensors(tree[k], f'{prefix}.{k}')]
    if isinstance(tree, (list, tuple)):
        return [t for i, v in enumerate(tree) for t in _tensors(v, f'{prefix}[{i}]')]
    return []


def test_a_resume_wins_over_a_load_checkpoint_hook_of_an_earlier_epoch(tmp_path):
    directory = _one_epoch(tmp_path, 8, epochs=2)
    epochs = Epochs()
    trainer = Trainer(make_engine(), hooks=[LoadCheckpointHook(directory, epoch=1), epochs])
    trainer.resume(os.path.join(directory, 'epoch_2.pt'))
    trainer.fit(make_loader(8), epochs=3)
    assert epochs.epochs == [3] and trainer.states['iteration'] == 6  # not epochs 2 and 3 again


def test_resume_without_a_path_uses_the_save_hooks_directory_not_the_pretrained_one(tmp_path):
    trainer = Trainer(make_engine(), hooks=[LoadCheckpointHook(str(tmp_path / 'pretrained'), finetune=True),
                                            SaveCheckpointHook(checkpoint_dir=str(tmp_path / 'mine'))])
    assert train_cli.checkpoint_dir_of(trainer, 'default') == str(tmp_path / 'mine')
    only_load = Trainer(make_engine(), hooks=[LoadCheckpointHook(str(tmp_path / 'pretrained'))])
    assert train_cli.checkpoint_dir_of(only_load, 'default') == 'default'


# 24 samples in batches of 4: 6 batches, so gradient_accumulation 1, 2, 3 give 6, 3, 2 steps per epoch.
@pytest.mark.parametrize('saved_accumulation, epochs_saved, accumulation, steps_done', [
    (1, 1, 3, 6),    # fewer steps per epoch than the checkpoint's run: it used to stop at iteration 6
    (3, 2, 2, 4),    # more: epoch 2 used to be taken for unfinished, and part of it trained again
])
def test_an_epoch_checkpoint_resumes_with_another_epoch_length(tmp_path, saved_accumulation, epochs_saved,
                                                               accumulation, steps_done):
    directory = str(tmp_path / 'ck')
    saved = Trainer(make_engine(gradient_accumulation=saved_accumulation),
                    hooks=[SaveCheckpointHook(checkpoint_dir=directory)])
    saved.fit(make_loader(24), epochs=epochs_saved)
    assert saved.states['iteration'] == steps_done
    steps = 6 // accumulation
    for how in ('resume', 'LoadCheckpointHook'):   # loaded before the fit, or in before_train
        epochs = Epochs()
        hooks = [epochs] + ([LoadCheckpointHook(directory)] if how == 'LoadCheckpointHook' else [])
        trainer = Trainer(make_engine(gradient_accumulation=accumulation), hooks=hooks)
        if how == 'resume':
            trainer.resume(os.path.join(directory, f'epoch_{epochs_saved}.pt'))
        trainer.fit(make_loader(24), epochs=4)
        assert epochs.epochs == list(range(epochs_saved + 1, 5)), how
        end = steps_done + (4 - epochs_saved) * steps
        assert trainer.states['iteration'] == trainer.states['max_steps'] == end, how


def test_the_same_epoch_length_keeps_max_steps_as_epochs_times_steps(tmp_path):
    directory = _one_epoch(tmp_path, 24)
    trainer = Trainer(make_engine())
    trainer.resume(directory)
    trainer.fit(make_loader(24), epochs=3)
    assert trainer.states['iteration'] == trainer.states['max_steps'] == 3 * 6


def test_another_epoch_length_warns_when_the_lr_schedule_no_longer_ends_with_the_run(tmp_path, project_log):
    directory = _one_epoch(tmp_path, 24)
    engine = make_engine(gradient_accumulation=3, lr_scheduler=False)
    engine.lr_scheduler = CosineAnnealingLR(engine.optimizer, total_steps=3 * 2)  # max_epochs x new length
    trainer = Trainer(engine)
    trainer.resume(directory)
    trainer.fit(make_loader(24), epochs=3)
    assert trainer.states['iteration'] == 6 + 2 * 2
    assert ("the checkpoint's run had 6 optimizer steps per epoch, this run has 2" in project_log.text)
    assert 'the LR scheduler spans total_steps=6 optimizer steps but this run ends at iteration 10' \
        in project_log.text
    assert 'lr_scheduler.total_steps=10' in project_log.text


def test_persistent_workers_warn_that_a_resume_is_not_exact():
    dataset = SyntheticClassification(num_samples=8, num_features=4, num_classes=2, seed=0)
    with pytest.warns(UserWarning, match='persistent_workers=True with num_workers=2: the workers are seeded '
                                         'once.*resume is not exact'):
        build_dataloader(dict(batch_size=4, num_workers=2, persistent_workers=True), dataset)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        build_dataloader(dict(batch_size=4, num_workers=2), dataset)   # re-seeded every epoch: exact
        # a test loader's workers do not make a resume inexact (nor does the message fit it)
        build_dataloader(dict(batch_size=4, num_workers=2, persistent_workers=True), dataset,
                         pad_shards=False)
    assert not [w for w in record if 'persistent_workers' in str(w.message)]


@pytest.mark.parametrize('key, value, hint', [
    ('resume_from', 'work_dirs/a/checkpoints/latest.pt', '--resume work_dirs/a/checkpoints/latest.pt'),
    ('load_from', 'work_dirs/a/checkpoints/epoch_3.pt',
     "dict(type='LoadCheckpointHook', checkpoint_dir='work_dirs/a/checkpoints/epoch_3.pt', finetune=True)"),
])
def test_mmcvs_resume_from_and_load_from_are_config_errors(key, value, hint):
    with pytest.raises(ConfigError, match=f'{key} = .* is an mmcv key') as info:
        check_top_level_keys(Config({key: value}))
    assert hint in str(info.value) and 'start from scratch' in str(info.value)
    with pytest.warns(UserWarning, match=f'unknown top-level key {key!r} is ignored'):
        check_top_level_keys(Config({key: None}))   # mmcv's default_runtime: asks for nothing


def test_train_tool_resumes_a_finetune_run_from_its_own_checkpoints(tmp_path, capsys):
    """tools/train.py --resume: the fine-tune run's directory (not the pretrained one), and its weights."""
    pretrained = tmp_path / 'pretrained'
    train_cli.main([os.path.join(E2E, 'tiny.py'), '--work-dir', str(pretrained), '--no-progress'])
    config = tmp_path / 'finetune.py'
    config.write_text(f"_base_ = {os.path.join(E2E, 'tiny.py')!r}\n"
                      f"lr_scheduler = dict(total_steps=8)\n"   # not shortened by max_steps below
                      f"hooks = [dict(type='LossHook'), dict(type='SaveCheckpointHook', interval=3, "
                      f"by_epoch=False), dict(type='LoadCheckpointHook', "
                      f"checkpoint_dir={str(pretrained / 'checkpoints')!r}, finetune=True)]\n")
    common = [str(config), '--no-progress', '--work-dir']
    train_cli.main(common + [str(tmp_path / 'ref')])
    train_cli.main(common + [str(tmp_path / 'cut'), '--cfg-options', 'max_steps=5'])
    train_cli.main(common + [str(tmp_path / 'cut'), '--resume'])
    want = load_checkpoint(str(tmp_path / 'ref' / 'checkpoints' / 'iter_8.pt'))
    got = load_checkpoint(str(tmp_path / 'cut' / 'checkpoints' / 'iter_8.pt'))
    assert got['states'] == want['states']
    for name, tensor in want['engine']['model'].items():
        assert torch.equal(got['engine']['model'][name], tensor), name


def test_a_load_checkpoint_hook_added_after_training_in_the_same_process_still_loads(tmp_path):
    """Trained, not resumed: scoring an earlier epoch after a run loads that epoch's weights."""
    directory = str(tmp_path / 'ck')
    engine = make_engine()
    trainer = Trainer(engine, hooks=[SaveCheckpointHook(checkpoint_dir=directory)])
    trainer.fit(make_loader(24), epochs=3)
    trainer.register_hook(LoadCheckpointHook(directory, epoch=1))
    trainer.evaluate(make_loader(8))
    saved = load_checkpoint(os.path.join(directory, 'epoch_1.pt'))['engine']['model']
    for name, value in engine.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert trainer.states['epoch'] == 1  # its full state, as the hook's docs say
    # the same after a resumed run that trained on from its checkpoint
    engine = make_engine()
    trainer = Trainer(engine)
    trainer.resume(os.path.join(directory, 'epoch_2.pt'))
    trainer.fit(make_loader(24), epochs=3)
    trainer.register_hook(LoadCheckpointHook(directory, epoch=1))
    trainer.evaluate(make_loader(8))
    for name, value in engine.model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_load_checkpoint_hook_takes_a_checkpoint_file_as_load_from_did(tmp_path):
    """mmcv's load_from names a file, often weights a plain loop saved (pretrained/x.pth)."""
    source = make_engine(seed=1)
    torch.save(source.model.state_dict(), tmp_path / 'x.pth')
    target = make_engine(seed=2)
    trainer = Trainer(target, hooks=[LoadCheckpointHook(str(tmp_path / 'x.pth'), finetune=True)])
    trainer.evaluate(make_loader(8))  # before_test loads it
    for name, value in source.model.state_dict().items():
        assert torch.equal(target.model.state_dict()[name], value), name
    with pytest.raises(ValueError, match=r"is a file, so epoch=2 cannot choose among epochs"):
        LoadCheckpointHook(str(tmp_path / 'x.pth'), epoch=2).checkpoint_path()
