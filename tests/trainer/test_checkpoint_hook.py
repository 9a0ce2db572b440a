"""SaveCheckpointHook / LoadCheckpointHook / Trainer.resume: round trip, exact resume, pruning, best."""
import os
import subprocess
import sys

import pytest
import torch

from colossal_runner.checkpoint import load_checkpoint
from colossal_runner.config import ConfigError
from colossal_runner.data import SyntheticClassification, build_dataloader
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (AccuracyHook, LoadCheckpointHook, LossHook, MetricHook,
                                          SaveCheckpointHook)
from colossal_runner.trainer.metrics import Metric

from . import _resume_run
from ._toy import make_engine, make_loader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_exact_resume_in_a_new_process_is_bit_identical(tmp_path):
    # The uninterrupted 4 epochs run here (saving along the way); the resumes run in a new process.
    threads = torch.get_num_threads()
    try:
        reference = _resume_run.run(str(tmp_path / 'ck'), [])
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    resumed = str(tmp_path / 'resumed.pt')
    proc = subprocess.run([sys.executable, '-m', 'tests.trainer._resume_run', 'resume', str(tmp_path / 'ck'),
                           resumed], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = torch.load(resumed, weights_only=True)
    for name in ('by_epoch', 'mid_epoch'):
        run = runs[name]
        assert run['states'] == reference['states'] == {'epoch': 4, 'iteration': 24}
        assert run['lr'] == reference['lr']
        for got, want in zip(run['params'], reference['params']):
            assert torch.equal(got, want), name
    assert runs['by_epoch']['loss'] == reference['loss']   # the last epoch ran the same batches
    assert 'loaded checkpoint' not in proc.stdout   # logging goes to stderr


def _run_to_the_end(ckpt_dir, epochs, max_steps=None, resume_from=None, seed=123, **saver):
    """44 samples in batches of 8: 6 steps per epoch (the last one short), dropout and shuffling,
    so an exact resume needs the weights, the optimizer, the RNG and the data position."""
    engine = make_engine(seed=seed, dropout=0.2, in_features=16, num_classes=4)
    dataset = SyntheticClassification(num_samples=44, num_features=16, num_classes=4, seed=0)
    loader = build_dataloader(dict(batch_size=8), dataset, shuffle=True, seed=0)
    trainer = Trainer(engine, hooks=[LossHook(), SaveCheckpointHook(checkpoint_dir=ckpt_dir, **saver)])
    if resume_from is not None:
        trainer.resume(resume_from)
    trainer.fit(loader, epochs=epochs, max_steps=max_steps)
    return dict(params=[p.detach().clone() for p in engine.model.parameters()], lr=engine.get_lr(),
                states=(trainer.states['epoch'], trainer.states['iteration']),
                loss=trainer.states['metrics']['train']['Loss'].get_accumulated_value(),
                files=sorted(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else [])


def _assert_same_run(got, want):
    assert got['states'] == want['states'] and got['lr'] == want['lr']
    for a, b in zip(got['params'], want['params']):
        assert torch.equal(a, b)


def _assert_holds_the_final_weights(path, run):
    state = load_checkpoint(path)
    assert (state['states']['epoch'], state['states']['iteration']) == run['states']
    for saved, final in zip(state['engine']['model'].values(), run['params']):
        assert torch.equal(saved, final)


def test_save_last_saves_the_final_iteration_and_resumes_exactly(tmp_path):
    # interval=4 does not divide 3 epochs x 6 steps: without save_last the last file is iter_16.
    short = _run_to_the_end(str(tmp_path / 'short'), epochs=3, interval=4, by_epoch=False)
    assert short['states'] == (3, 18)
    assert short['files'] == ['iter_12.pt', 'iter_16.pt', 'iter_18.pt', 'iter_4.pt', 'iter_8.pt', 'latest.pt']
    assert os.readlink(tmp_path / 'short' / 'latest.pt') == 'iter_18.pt'
    _assert_holds_the_final_weights(str(tmp_path / 'short' / 'latest.pt'), short)
    # Resuming the final file (by name) continues exactly as the uninterrupted 5 epochs.
    reference = _run_to_the_end(str(tmp_path / 'ref'), epochs=5, interval=4, by_epoch=False)
    assert reference['files'][-2:] == ['iter_8.pt', 'latest.pt'] and 'iter_30.pt' in reference['files']
    resumed = _run_to_the_end(str(tmp_path / 'resumed'), epochs=5, seed=7, interval=4, by_epoch=False,
                              resume_from=str(tmp_path / 'short' / 'iter_18.pt'))
    _assert_same_run(resumed, reference)
    assert resumed['loss'] == reference['loss']       # its epochs 4 and 5 ran the same batches
    assert 'iter_30.pt' in resumed['files']
    # A finished run resumed with nothing left to train writes nothing new.
    again = _run_to_the_end(str(tmp_path / 'again'), epochs=5, interval=4, by_epoch=False,
                            resume_from=str(tmp_path / 'ref'))
    assert again['states'] == (5, 30) and again['files'] == []


def test_save_last_by_epoch_and_when_max_steps_stops_mid_epoch(tmp_path):
    # by_epoch, interval=2 over 3 epochs: epoch_2 periodic, epoch_3 the final state.
    three = _run_to_the_end(str(tmp_path / 'three'), epochs=3, interval=2)
    assert three['files'] == ['epoch_2.pt', 'epoch_3.pt', 'latest.pt']
    _assert_holds_the_final_weights(str(tmp_path / 'three' / 'latest.pt'), three)
    reference = _run_to_the_end(str(tmp_path / 'ref'), epochs=5, interval=2)
    assert reference['files'] == ['epoch_2.pt', 'epoch_4.pt', 'epoch_5.pt', 'latest.pt']
    resumed = _run_to_the_end(str(tmp_path / 'resumed'), epochs=5, seed=7, interval=2,
                              resume_from=str(tmp_path / 'three' / 'epoch_3.pt'))
    _assert_same_run(resumed, reference)
    assert resumed['loss'] == reference['loss']
    # max_steps=14 stops 2 steps into epoch 3: the final file is mid-epoch, and resumes exactly.
    cut = _run_to_the_end(str(tmp_path / 'cut'), epochs=5, max_steps=14, interval=4, by_epoch=False)
    assert cut['states'] == (3, 14) and 'iter_14.pt' in cut['files']
    _assert_holds_the_final_weights(str(tmp_path / 'cut' / 'latest.pt'), cut)
    iters = _run_to_the_end(str(tmp_path / 'iters'), epochs=5, interval=4, by_epoch=False)
    resumed = _run_to_the_end(str(tmp_path / 'resumed_cut'), epochs=5, seed=7, interval=4, by_epoch=False,
                              resume_from=str(tmp_path / 'cut'))
    _assert_same_run(resumed, iters)
    # save_last=False keeps the old behaviour; anything but a bool is refused.
    off = _run_to_the_end(str(tmp_path / 'off'), epochs=3, interval=2, save_last=False)
    assert off['files'] == ['epoch_2.pt', 'latest.pt']
    with pytest.raises(TypeError, match=r"save_last must be True .* or False, got str: 'yes'"):
        SaveCheckpointHook(checkpoint_dir=str(tmp_path), save_last='yes')


def test_round_trip_restores_engine_states_and_hook_states(tmp_path):
    engine = make_engine(seed=0)
    saver = SaveCheckpointHook(checkpoint_dir=str(tmp_path), max_keep=5)
    trainer = Trainer(engine, hooks=[LossHook(), saver], config='model = dict(type="MLP")\n')
    trainer.fit(make_loader(12), epochs=2)
    state = load_checkpoint(str(tmp_path / 'latest.pt'))
    assert state['states'] == {'epoch': 2, 'iteration': 6, 'nonfinite_skips': 0}
    assert state['config'] == 'model = dict(type="MLP")\n'
    assert set(state['rng']) >= {'python', 'numpy', 'torch'}
    assert state['hooks']['SaveCheckpointHook']['saved'] == ['epoch_1.pt', 'epoch_2.pt']

    other = make_engine(seed=1)
    saver2 = SaveCheckpointHook(checkpoint_dir=str(tmp_path / 'other'))
    trainer2 = Trainer(other, hooks=[saver2])
    trainer2.resume(str(tmp_path))
    assert (trainer2.states['epoch'], trainer2.states['iteration']) == (2, 6)
    assert saver2.saved == ['epoch_1.pt', 'epoch_2.pt']
    for a, b in zip(engine.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
    assert other.get_lr() == engine.get_lr() and other.lr_scheduler.last_epoch == 6
    momentum = [s['momentum_buffer'] for s in other.optimizer.state.values()]
    assert momentum and all(torch.equal(m, engine.optimizer.state[p]['momentum_buffer'])
                            for m, p in zip(momentum, engine.model.parameters()))


def test_max_keep_prunes_oldest_and_iteration_checkpoints(tmp_path):
    Trainer(make_engine(), hooks=[SaveCheckpointHook(checkpoint_dir=str(tmp_path), max_keep=2)]).fit(
        make_loader(8), epochs=5)
    assert sorted(os.listdir(tmp_path)) == ['epoch_4.pt', 'epoch_5.pt', 'latest.pt']
    iters = tmp_path / 'iters'
    Trainer(make_engine(), hooks=[SaveCheckpointHook(3, str(iters), by_epoch=False, save_last=False)]).fit(
        make_loader(16), epochs=2)
    assert sorted(os.listdir(iters)) == ['iter_3.pt', 'iter_6.pt', 'latest.pt']
    # The final file of save_last counts towards max_keep: 8 iterations keep iter_6 and iter_8.
    last = tmp_path / 'last'
    saver = SaveCheckpointHook(3, str(last), by_epoch=False, max_keep=2)
    Trainer(make_engine(), hooks=[saver]).fit(make_loader(16), epochs=2)
    assert sorted(os.listdir(last)) == ['iter_6.pt', 'iter_8.pt', 'latest.pt']
    assert saver.saved == ['iter_6.pt', 'iter_8.pt'] and os.readlink(last / 'latest.pt') == 'iter_8.pt'


class Scripted(Metric):
    """A metric whose epoch value is scripted, to drive save_best."""
    name = 'Scripted'
    values = [0.5, 0.7, 0.6, 0.9, 0.8]

    def reset(self):
        self.epoch = 0

    def update(self, epoch):
        self.epoch = epoch

    def get_accumulated_value(self):
        return self.values[self.epoch - 1] if self.epoch >= 1 else float('nan')

    get_last_step_value = get_accumulated_value


class ScriptedHook(MetricHook):
    def update(self, metric, runner, output, label, loss):
        metric.update(runner.states['epoch'])


def test_save_best_keeps_the_best_epoch(tmp_path):
    saver = SaveCheckpointHook(interval=10, checkpoint_dir=str(tmp_path), save_best='Scripted')
    trainer = Trainer(make_engine(), hooks=[ScriptedHook(metric=Scripted, modes=('train',)), saver])
    trainer.fit(make_loader(8), epochs=5)
    # interval=10 never fell due: only the best file and the final state of save_last
    assert sorted(os.listdir(tmp_path)) == ['best.pt', 'epoch_5.pt', 'latest.pt']
    assert os.readlink(tmp_path / 'latest.pt') == 'epoch_5.pt'   # latest is the final state, not best
    best = load_checkpoint(str(tmp_path / 'best.pt'))
    assert best['states']['epoch'] == 4
    final = load_checkpoint(str(tmp_path / 'latest.pt'))
    assert final['states']['epoch'] == 5 and final['hooks']['SaveCheckpointHook']['best_epoch'] == 4
    assert best['hooks']['SaveCheckpointHook']['best_value'] == 0.9
    assert (saver.best_value, saver.best_epoch) == (0.9, 4)

    lower = SaveCheckpointHook(checkpoint_dir=str(tmp_path / 'loss'), save_best='train/Loss')
    Trainer(make_engine(), hooks=[LossHook(), lower]).fit(make_loader(8), epochs=2)
    assert lower.best_epoch in (1, 2) and os.path.exists(tmp_path / 'loss' / 'best.pt')
    with pytest.raises(KeyError, match=r"no test metric named 'Acuracy'.*\[Loss\]"):
        Trainer(make_engine(), hooks=[LossHook(), SaveCheckpointHook(checkpoint_dir=str(tmp_path),
                                                                     save_best='test/Acuracy')]).fit(
            make_loader(8), epochs=1)


@pytest.mark.parametrize('save_best, expected', [
    # a bare name means the test metric when there is one: the message says so, not "no train metric"
    ('Acuracy', r"save_best='Acuracy': no test metric named 'Acuracy' \(a bare name means the test metric "
                r"when there is one\) and no train metric of that name either; test metrics: \[Accuracy, "
                r"Loss\]; train metrics: \[Accuracy, Loss\]\. Did you mean 'Accuracy'\?"),
    ('train/Los', r"save_best='train/Los': no train metric named 'Los'; test metrics: \[Accuracy, Loss\]; "
                  r"train metrics: \[Accuracy, Loss\]\. Did you mean 'train/Loss'\?"),
])
def test_a_misspelled_save_best_lists_both_modes_and_suggests_the_closest(tmp_path, save_best, expected):
    saver = SaveCheckpointHook(checkpoint_dir=str(tmp_path), save_best=save_best)
    trainer = Trainer(make_engine(), hooks=[LossHook(), AccuracyHook(), saver])
    with pytest.raises(KeyError, match=expected):
        trainer.fit(make_loader(8), epochs=1)
    assert trainer.states['iteration'] == 0  # at before_train, not after the first epoch


def test_load_checkpoint_hook_errors_list_what_exists(tmp_path):
    Trainer(make_engine(), hooks=[SaveCheckpointHook(checkpoint_dir=str(tmp_path))]).fit(make_loader(8), 2)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for epoch 7 \(epoch_7\.pt\).*"
                                                r"\['epoch_1\.pt', 'epoch_2\.pt'\]"):
        Trainer(make_engine(), hooks=[LoadCheckpointHook(str(tmp_path), epoch=7)]).fit(make_loader(8), 3)
    with pytest.raises(FileNotFoundError, match="checkpoint_dir .*missing.* does not exist"):
        Trainer(make_engine(), hooks=[LoadCheckpointHook(str(tmp_path / 'missing'))]).fit(make_loader(8), 1)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no checkpoint in'):
        Trainer(make_engine(), hooks=[LoadCheckpointHook(str(tmp_path / 'empty'))]).fit(make_loader(8), 1)
    with pytest.raises(ValueError, match='epoch must be a positive epoch number or -1'):
        LoadCheckpointHook(str(tmp_path), epoch=0)
    trainer = Trainer(make_engine(), hooks=[LoadCheckpointHook(str(tmp_path), epoch=1)])
    trainer.fit(make_loader(8), epochs=2)          # loads epoch 1, trains epoch 2 only
    assert (trainer.states['epoch'], trainer.states['iteration']) == (2, 4)


def test_mismatched_model_keys_strict_and_non_strict_and_finetune(tmp_path):
    source = make_engine()
    Trainer(source, hooks=[SaveCheckpointHook(checkpoint_dir=str(tmp_path))]).fit(make_loader(8), 1)
    bigger = make_engine(dropout=0.1)       # Dropout shifts the last Linear from '2.' to '3.'
    with pytest.raises(KeyError, match=r"missing keys \['3\.bias', '3\.weight'\], unexpected keys "
                                       r"\['2\.bias', '2\.weight'\].*strict=False"):
        Trainer(bigger, hooks=[LoadCheckpointHook(str(tmp_path))]).fit(make_loader(8), 2)
    loose = Trainer(bigger, hooks=[LoadCheckpointHook(str(tmp_path), strict=False)])
    loose.call_hook('before_train')
    assert torch.equal(bigger.model[0].weight, source.model[0].weight)
    assert loose.states['epoch'] == 0       # only the matching weights, not the progress
    tuned = make_engine(seed=5)
    finetune = Trainer(tuned, hooks=[LoadCheckpointHook(str(tmp_path), finetune=True)])
    finetune.fit(make_loader(8), epochs=1)
    assert (finetune.states['epoch'], finetune.states['iteration']) == (1, 2)
    with pytest.raises(KeyError, match="not a colossal_runner training checkpoint"):
        finetune.load_state_dict({'model': {}})


def test_checkpoint_dir_defaults_to_the_work_dir_or_is_required(tmp_path):
    trainer = Trainer(make_engine(), hooks=[SaveCheckpointHook()], work_dir=str(tmp_path))
    assert trainer.hooks[0].checkpoint_dir == os.path.join(str(tmp_path), 'checkpoints')
    with pytest.raises(ValueError, match=r'SaveCheckpointHook needs a checkpoint_dir, or a runner with a '
                                         r'work_dir'):
        Trainer(make_engine(), hooks=[SaveCheckpointHook()])


def test_load_checkpoint_hook_takes_a_stage_less_file_name_of_a_pipeline_run(tmp_path):
    """`epoch_1.pt` names the files `epoch_1_stage<s>.pt` of a pipeline run, as --resume reads it:
    the hook passes it on to the loader, which maps it to this stage's file."""
    from colossal_runner.checkpoint import resolve_checkpoint_path
    from colossal_runner.trainer.hooks import LoadCheckpointHook
    (tmp_path / 'epoch_1_stage1.pt').write_bytes(b'')
    path = str(tmp_path / 'epoch_1.pt')
    assert LoadCheckpointHook(path).checkpoint_path() == path
    assert resolve_checkpoint_path(path, 1) == str(tmp_path / 'epoch_1_stage1.pt')
    with pytest.raises(FileNotFoundError, match='does not exist'):  # a directory name still must exist
        LoadCheckpointHook(str(tmp_path / 'no_such_dir')).checkpoint_path()


def test_a_save_best_naming_no_metric_is_a_config_error_too(tmp_path):
    # tools report a ConfigError as a bad config (exit 2); a KeyError is what it was before
    saver = SaveCheckpointHook(checkpoint_dir=str(tmp_path), save_best='Acuracy')
    trainer = Trainer(make_engine(), hooks=[LossHook(), AccuracyHook(), saver])
    with pytest.raises(ConfigError) as info:
        saver.check_save_best(trainer, 'cfg.py', 'hooks[2].save_best')
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("config cfg.py, key hooks[2].save_best: SaveCheckpointHook: "
                                      "save_best='Acuracy': no test metric")  # a sentence, not a repr
    saver.save_best = 'test/Accuracy'
    saver.check_save_best(trainer, 'cfg.py', 'hooks[2].save_best')  # a metric that exists passes
