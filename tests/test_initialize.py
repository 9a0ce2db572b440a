import logging
import os
import random
import re
import subprocess
import sys
import textwrap
import uuid
import warnings

import numpy as np
import pytest
import torch

from colossal_runner.checkpoint import check_weights_only, resume
from colossal_runner.config import Config, ConfigError
from colossal_runner.engine import Engine, NoPipelineSchedule
from colossal_runner.initialize import Initialized, build_lr_scheduler, check_top_level_keys, initialize
from colossal_runner.models import MLP, TinyGPT
from colossal_runner.registry import HOOKS, OPTIMIZERS
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import MetricHook
from colossal_runner.trainer.metrics import Loss

HERE = os.path.dirname(__file__)
TINY = os.path.join(HERE, 'data', 'e2e', 'tiny.py')


def _cfg(**overrides):
    cfg = Config.fromfile(TINY).to_dict()
    cfg.update(overrides)
    return cfg


def test_initialize_builds_engine_trainer_and_loaders(tmp_path):
    cfg = _cfg(gradient_accumulation=2, max_epochs=3, clip_grad_norm=1.0, nonfinite_loss='off')
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    assert isinstance(run, Initialized)
    engine, trainer, train_loader, test_loader, config, context = run
    assert isinstance(engine, Engine) and isinstance(trainer, Trainer)
    assert isinstance(engine.model, MLP) and isinstance(engine.schedule, NoPipelineSchedule)
    assert isinstance(engine.optimizer, torch.optim.SGD)
    assert engine.optimizer.param_groups[0]['momentum'] == 0.9
    assert engine.gradient_accumulation == 2 and engine.clip_grad_norm == 1.0
    assert engine.nonfinite_loss == 'off'  # the config's setting reaches the Engine
    assert len(train_loader) == 4 and len(test_loader) == 1
    # 4 batches / 2 accumulation = 2 optimizer steps per epoch; 3 epochs; warm-up 1 epoch.
    assert engine.lr_scheduler.total_steps == 6 and engine.lr_scheduler.warmup_steps == 2
    assert config.work_dir == str(tmp_path) and config.seed == 3
    assert context.world_size == 1 and trainer.work_dir == str(tmp_path)
    assert [type(h).__name__ for h in trainer.hooks][:2] == ['LossHook', 'AccuracyHook']
    trainer.fit(train_loader, epochs=config.max_epochs, test_dataloader=test_loader)
    assert trainer.states['iteration'] == 6
    assert os.path.isfile(tmp_path / 'checkpoints' / 'epoch_3.pt')


def test_max_steps_bounds_total_steps_and_warmup_steps_kept(tmp_path):
    cfg = _cfg(max_steps=3, lr_scheduler=dict(type='CosineAnnealingWarmupLR', warmup_steps=1))
    engine = initialize(cfg, work_dir=str(tmp_path), log_file=False).engine
    assert engine.lr_scheduler.total_steps == 3 and engine.lr_scheduler.warmup_steps == 1


def test_a_scheduler_counts_the_default_single_epoch_when_max_epochs_is_left_out(tmp_path, project_log):
    """max_epochs defaults to 1 for the run; the scheduler's length used to refuse the config."""
    cfg = _cfg(lr_scheduler=dict(type='CosineAnnealingWarmupLR', warmup_epochs=1))
    del cfg['max_epochs']
    engine = initialize(cfg, work_dir=str(tmp_path), log_file=False).engine
    assert engine.lr_scheduler.total_steps == 4 == engine.lr_scheduler.warmup_steps  # 4 batches, 1 epoch
    assert 'warmup_epochs=1 is the whole run (4 steps)' in project_log.text  # and it says so


def test_a_scheduler_stepped_per_epoch_counts_its_lengths_in_epochs(tmp_path):
    """With LRSchedulerHook(by_epoch=True) the scheduler steps once per epoch, so total_steps and
    warmup_epochs are counted in epochs, not in optimizer steps (which would leave the run in
    its warm-up); max_steps is rounded up to whole epochs."""
    hooks = [dict(type='LossHook'), dict(type='LRSchedulerHook', by_epoch=True)]
    cfg = _cfg(max_epochs=3, hooks=hooks)  # 4 steps per epoch, warmup_epochs=1
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    assert run.engine.lr_scheduler is None  # the hook took it over
    scheduler = run.trainer.hooks[1].lr_scheduler
    assert scheduler.total_steps == 3 and scheduler.warmup_steps == 1
    run.trainer.fit(run.train_dataloader, epochs=3)
    assert run.trainer.engine.get_lr() == pytest.approx(scheduler.get_last_lr()[0])
    assert scheduler.last_epoch == 3
    short = initialize(_cfg(max_epochs=3, max_steps=5, hooks=hooks), work_dir=str(tmp_path), log_file=False)
    assert short.trainer.hooks[1].lr_scheduler.total_steps == 2  # 5 steps: 2 epochs begun
    per_step = initialize(_cfg(max_epochs=3), work_dir=str(tmp_path), log_file=False).engine.lr_scheduler
    assert per_step.total_steps == 12 and per_step.warmup_steps == 4


def test_same_seed_same_model_and_rngs(tmp_path):
    def build(seed):
        run = initialize(_cfg(), work_dir=str(tmp_path), seed=seed, log_file=False)
        return [p.detach().clone() for p in run.engine.model.parameters()], random.random(), np.random.rand()

    a, b, c = build(5), build(5), build(6)
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and a[1:] == b[1:]
    assert not torch.equal(a[0][0], c[0][0]) and a[1] != c[1]


def test_from_file_with_cfg_options_and_default_work_dir(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    run = initialize(TINY, cfg_options={'optimizer.lr': 0.25, 'model.hidden': [4, 4]}, log_file=False)
    assert run.engine.optimizer.param_groups[0]['initial_lr'] == 0.25
    assert [m.out_features for m in run.engine.model if isinstance(m, torch.nn.Linear)] == [4, 4, 3]
    assert run.config.work_dir == os.path.join('work_dirs', 'tiny')


def test_text_model_gets_vocab_size_from_dataset_and_partition_is_dropped(tmp_path):
    cfg = _cfg(model=dict(type='TinyGPT', vocab_size=None, block_size=8, n_layer=1, n_head=2, n_embd=8,
                          partition='uniform'),
               loss=dict(type='SequenceCrossEntropyLoss'),
               data=dict(train=dict(dataset=dict(type='CharText', block_size=8, max_chars=2000),
                                    dataloader=dict(batch_size=4))))
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    assert isinstance(run.engine.model, TinyGPT) and run.test_dataloader is None
    vocab = run.train_dataloader.dataset.vocab_size
    assert run.engine.model.vocab_size == vocab and run.config.model.vocab_size == vocab
    output, label, loss = run.engine.step(iter(run.train_dataloader))
    assert output.shape == (4, 8, vocab) and loss.dim() == 0


def test_a_vocabulary_smaller_than_the_texts_is_a_config_error(tmp_path):
    cfg = _cfg(model=dict(type='TinyGPT', vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8),
               data=dict(train=dict(dataset=dict(type='CharText', block_size=8, text='abcdefghij' * 20),
                                    dataloader=dict(batch_size=4))),
               lr_scheduler=None)
    expected = (r'key model.vocab_size: the model has vocab_size=5, but the training dataset has a '
                r'vocabulary of 10 tokens: set model.vocab_size to at least 10, or to None')
    with pytest.raises(ConfigError, match=expected):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


def test_misspelled_top_level_key_is_an_error_naming_the_known_key(tmp_path):
    cfg = _cfg(optimzer=dict(type='SGD', lr=1.0), _helper=1)
    with pytest.raises(ConfigError, match=r"key optimzer: unknown top-level key 'optimzer'; did you mean "
                                          r"'optimizer'\? Rename it"):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


def test_other_unknown_top_level_keys_warn_and_private_ones_are_quiet(tmp_path, recwarn):
    initialize(_cfg(my_experiment_tag='x', _helper=1), work_dir=str(tmp_path), log_file=False)
    messages = [str(w.message) for w in recwarn.list if issubclass(w.category, UserWarning)]
    expected = "unknown top-level key 'my_experiment_tag' is ignored. Keys read: docs/config_reference.md"
    assert any(expected in m for m in messages), messages
    assert not any('_helper' in m for m in messages)


def test_batch_size_must_divide_into_microbatches_before_training(tmp_path):
    cfg = _cfg(schedule=dict(type='PipelineSchedule', num_microbatches=3))
    with pytest.raises(ConfigError, match=r'key data.train.dataloader.batch_size: batch_size=\d+ is not '
                                          r'divisible by schedule.num_microbatches=3'):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


def test_unwritable_work_dir_is_a_config_error(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ConfigError, match=r"^the work directory .*file/run' \(from --work-dir\) is not "
                                          r"writable .*choose another with --work-dir"):
        initialize(_cfg(), work_dir=str(tmp_path / 'file' / 'run'), log_file=False)  # not the config's key


def test_a_training_loader_without_a_batch_is_named_before_the_schedulers_length(tmp_path):
    # it used to ask for lr_scheduler.total_steps, then for warmup_steps, and only then say why
    data = _cfg()['data']
    data['train']['dataloader'].update(batch_size=100, drop_last=True)  # 64 samples
    expected = (r'key data.train.dataloader.drop_last: the training dataloader has no batch \(64 samples per '
                r'rank, batch_size=100, drop_last=True\)')
    with pytest.raises(ConfigError, match=expected):
        initialize(_cfg(data=data), work_dir=str(tmp_path), log_file=False)
    # evaluating (tools/test.py) trains nothing: such a training split is no error there
    run = initialize(_cfg(data=data, hooks=[]), work_dir=str(tmp_path), log_file=False, read_only=True)
    assert run.engine.lr_scheduler is None


@pytest.mark.parametrize('overrides, error, message', [
    (dict(model=dict(type='MPL')), KeyError, r"'MPL' is not in the model registry. Did you mean 'MLP'"),
    (dict(hooks=[dict(type='LossHook'), dict(type='AccuracyHok')]), ConfigError,
     r"key hooks\[1\]\.type: 'AccuracyHok' is not in the hook registry. Did you mean 'AccuracyHook'"),
    (dict(hooks=[dict(priority='LOW')]), ConfigError, r'key hooks\[0\]: a hook config needs a type'),
    (dict(lr_scheduler=dict(type='CosineAnnealingWarmupLR', warmup_epochs=1, warmup_steps=2)), ConfigError,
     r'key lr_scheduler: got warmup_epochs=1 and warmup_steps=2; give one of them. None drops the other.*'
     r'--cfg-options lr_scheduler.warmup_epochs=None lr_scheduler.warmup_steps=2'),
    (dict(lr_scheduler=dict(type='CosineAnnealingWarmupLR', warmup_epochs='abc')), ConfigError,
     r"key lr_scheduler.warmup_epochs: expected a number of epochs >= 0 \(e.g. 1 or 0.5\), got str 'abc'"),
    (dict(seed='abc'), ConfigError, r"key seed: seed must be an int, e.g. seed = 1024, got str 'abc'"),
    (dict(seed=True), ConfigError, r"key seed: seed must be an int, e.g. seed = 1024, got bool True"),
    (dict(lr_scheduler=dict(type='CosineAnealingLR')), KeyError, "Did you mean 'CosineAnnealingLR'"),
    (dict(gradient_accumulation=0), ConfigError, 'key gradient_accumulation: expected a positive int, got 0'),
    (dict(nonfinite_loss='ignore'), ConfigError,
     r"key nonfinite_loss: nonfinite_loss must be one of \['raise', 'skip', 'off'\].*got 'ignore'"),
    (dict(amp='fp8'), ConfigError, r"key amp: amp must be None, 'bf16', 'fp16'; got 'fp8'"),
    (dict(clip_grad_norm=-1), ConfigError,
     r'key clip_grad_norm: clip_grad_norm must be a number >= 0 .*got int -1'),
    (dict(clip_grad_norm='1'), ConfigError, r"key clip_grad_norm: .*got str '1'"),
    (dict(optimizer=None), ConfigError, r"key optimizer: expected a dict like dict\(type='SGD', lr=0.1\)"),
    (dict(data=dict(train=dict(dataloader=dict(batch_size=2)))), ConfigError,
     r"key data.train: expected the keys dataset \(required\) and dataloader"),
    (dict(data=dict(train=dict(dataset=dict(type='SyntheticClassification'), dataloader=dict(batchsize=2)))),
     KeyError, "'batchsize' \\(did you mean 'batch_size'\\?\\)"),
    (dict(model=dict(type='MLP', in_features=0)), ValueError, 'MLP in_features must be a positive int'),
    (dict(data=dict(train=dict(dataset=None))), ConfigError,  # --cfg-options data.train.dataset=None
     r"key data.train.dataset: expected a dict like dict\(type='Digits'\), got NoneType: None"),
    # torchvision's dataset classes raise RuntimeError for a dataset that is not there to load
    (dict(data=dict(train=dict(dataset=dict(type='MNIST', root='/no/such/dir', download=False)))),
     RuntimeError, 'Dataset not found'),
    (dict(deterministic='yes'), ConfigError,
     r"key deterministic: expected True or False, got str 'yes'; e.g. deterministic = True"),
    (dict(schedule=dict(type='InterleavedPipelineSchedule', num_microbatches=2, num_model_chunks=0)),
     ConfigError, r'key schedule.num_model_chunks: expected a positive int .*got int 0'),
    (dict(schedule=dict(type='InterleavedPipelineSchedule', num_microbatches=2, num_model_chunks=1.5)),
     ConfigError, r'key schedule.num_model_chunks: expected a positive int .*got float 1.5'),
])
def test_config_errors_name_the_key(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message) as info:
        initialize(_cfg(**overrides), work_dir=str(tmp_path), log_file=False)
    text = str(info.value) + ' '.join(getattr(info.value, '__notes__', []))
    assert 'key ' in text  # every error says where in the config it comes from


def test_bad_argument_type():
    with pytest.raises(TypeError, match='initialize\\(\\) takes a config path, a dict or a Config, got int'):
        initialize(3)


# ---------------------------------------------------------------- custom_imports after the merge

@pytest.fixture
def hook_module(tmp_path, monkeypatch):
    """A module on sys.path (not yet imported) that registers a hook under a fresh name."""
    name = f'cr_init_hooks_{uuid.uuid4().hex[:8]}'
    hook = f'Hook{uuid.uuid4().hex[:8]}'
    (tmp_path / f'{name}.py').write_text(textwrap.dedent(f"""
        from colossal_runner.registry import HOOKS
        from colossal_runner.trainer.hooks import BaseHook

        @HOOKS.register_module()  # not force: importing the module twice would fail here
        class {hook}(BaseHook):
            pass
        """), encoding='utf-8')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, hook
    HOOKS.module_dict.pop(hook, None)
    sys.modules.pop(name, None)


def _hook_types(run):
    return [type(h).__name__ for h in run.trainer.hooks]


@pytest.mark.parametrize('given_as', ['path with cfg_options', 'Config with cfg_options', 'dict'])
def test_custom_imports_are_imported_after_cfg_options_are_merged(tmp_path, hook_module, given_as):
    module, hook = hook_module
    options = {'custom_imports.imports': [module], 'hooks': [dict(type='LossHook'), dict(type=hook)]}
    if given_as == 'path with cfg_options':
        run = initialize(TINY, cfg_options=options, work_dir=str(tmp_path / 'run'), log_file=False)
    elif given_as == 'Config with cfg_options':
        run = initialize(Config.fromfile(TINY), cfg_options=options, work_dir=str(tmp_path / 'run'),
                         log_file=False)
    else:
        run = initialize(_cfg(custom_imports=dict(imports=[module]), hooks=options['hooks']),
                         work_dir=str(tmp_path / 'run'), log_file=False)
    assert _hook_types(run) == ['LossHook', hook]
    # A second run in the same process imports nothing again (the module would fail if it did).
    again = initialize(TINY, cfg_options=options, work_dir=str(tmp_path / 'run'), log_file=False)
    assert _hook_types(again) == ['LossHook', hook]


def test_custom_imports_added_by_cfg_options_can_allow_a_failed_import_of_the_file(tmp_path, hook_module):
    module, hook = hook_module
    cfg_file = tmp_path / 'needs_missing.py'
    cfg_file.write_text(f"_base_ = {TINY!r}\ncustom_imports = dict(imports=['cr_no_such_module_x'])\n",
                        encoding='utf-8')
    with pytest.warns(UserWarning, match='cr_no_such_module_x.*allow_failed_imports=True'):
        run = initialize(str(cfg_file), cfg_options={'custom_imports.allow_failed_imports': True},
                         work_dir=str(tmp_path / 'run'), log_file=False)
    assert run.engine.model is not None


def test_forced_registration_in_custom_imports_replaces_a_built_in_model(tmp_path):
    # A fresh process, as with tools/train.py: the config (and so the custom module) is loaded
    # before anything has imported colossal_runner.models.
    (tmp_path / 'my_models.py').write_text(textwrap.dedent("""
        from torch import nn
        from colossal_runner.registry import MODELS

        @MODELS.register_module(name='MLP', force=True)
        class MyMLP(nn.Sequential):
            def __init__(self, in_features, num_classes=10, **kwargs):
                super().__init__(nn.Linear(in_features, num_classes))
        """), encoding='utf-8')
    cfg_file = tmp_path / 'override.py'
    cfg_file.write_text(f"_base_ = {TINY!r}\ncustom_imports = dict(imports=['my_models'])\n",
                        encoding='utf-8')
    script = textwrap.dedent(f"""
        from colossal_runner.config import Config
        cfg = Config.fromfile({str(cfg_file)!r})
        from colossal_runner.initialize import initialize
        run = initialize(cfg, work_dir={str(tmp_path / 'run')!r}, log_file=False)
        print('MODEL', type(run.engine.model).__name__)
        """)
    proc = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'MODEL MyMLP' in proc.stdout


# ---------------------------------------------------------------- errors that used to lack file and key

def test_warmup_epochs_none_drops_the_base_value_so_warmup_steps_can_replace_it(tmp_path):
    options = {'lr_scheduler.warmup_epochs': None, 'lr_scheduler.warmup_steps': 3}
    engine = initialize(TINY, cfg_options=options, work_dir=str(tmp_path), log_file=False).engine
    assert engine.lr_scheduler.warmup_steps == 3
    engine = initialize(TINY, cfg_options={'lr_scheduler.warmup_epochs': None}, work_dir=str(tmp_path),
                        log_file=False).engine
    assert engine.lr_scheduler.warmup_steps == 0  # no warm-up at all


def test_gradient_accumulation_longer_than_an_epoch_names_the_key_and_the_number_of_batches(tmp_path):
    cfg = Config.fromfile(TINY)
    train = cfg.data.train
    batches = -(-train.dataset.num_samples // train.dataloader.batch_size)
    with pytest.raises(ConfigError, match=rf'config .*tiny\.py, key gradient_accumulation: '
                                          rf'gradient_accumulation={batches + 1} is more than the {batches} '
                                          rf'batches of one training epoch .*'
                                          rf'use gradient_accumulation <= {batches}'):
        initialize(TINY, cfg_options={'gradient_accumulation': batches + 1}, work_dir=str(tmp_path),
                   log_file=False)
    run = initialize(TINY, cfg_options={'gradient_accumulation': batches}, work_dir=str(tmp_path),
                     log_file=False)
    assert run.engine.lr_scheduler.total_steps == cfg.max_epochs  # one optimizer step per epoch


def test_the_config_reference_defaults_are_what_a_config_without_those_keys_gets(tmp_path, recwarn):
    # docs/config_reference.md writes the optional keys out at their defaults.
    doc = open(os.path.join(os.path.dirname(HERE), 'docs', 'config_reference.md'), encoding='utf-8').read()
    block = doc.split('A complete config.', 1)[1].split('```python\n', 1)[1].split('```', 1)[0]
    written = Config.fromstring(block, '.py').to_dict()
    required = {k: written[k] for k in ('model', 'optimizer', 'data')}

    def built(cfg):
        run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
        engine = run.engine
        return (type(engine.criterion), type(engine.schedule), engine.lr_scheduler,
                engine.gradient_accumulation, engine.clip_grad_norm, engine.nonfinite_loss,
                [type(h) for h in run.trainer.hooks], run.config.seed, run.context.pipeline_size,
                run.context.data_size)

    assert built(written) == built(required)
    assert built(required)[6] == []  # no hooks key: no hooks
    assert not [w for w in recwarn.list if 'unknown top-level key' in str(w.message)]


def test_an_interleaved_schedule_builds_its_chunks_on_one_process_too(tmp_path):
    """The interleaved schedule's chunks (its default, 2, or schedule.num_model_chunks) are how
    the model is built, on one process as on many; the run equals the plain schedule's."""
    def run(schedule):
        run = initialize(_cfg(schedule=schedule, hooks=[dict(type='LossHook')], max_epochs=1),
                         work_dir=str(tmp_path), log_file=False)
        run.trainer.fit(run.train_dataloader, epochs=1)
        return run.engine.model, run.trainer.states['metrics']['train']['Loss'].get_accumulated_value()

    plain, plain_loss = run(dict(type='NoPipelineSchedule'))
    for schedule in (dict(type='InterleavedPipelineSchedule', num_microbatches=2),
                     dict(type='InterleavedPipelineSchedule', num_microbatches=2, num_model_chunks=2)):
        chunked, loss = run(schedule)
        assert isinstance(chunked, torch.nn.ModuleList) and len(chunked) == 2, schedule
        assert loss == pytest.approx(plain_loss, rel=1e-5)
        flat = [p for chunk in chunked for p in chunk.parameters()]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(flat, plain.parameters()))


def test_a_schedule_that_cannot_run_on_this_pipeline_is_a_config_error(tmp_path):
    """Interleaving 3 microbatches over 2 chunks on 2 stages is refused when the config is built
    (exit status 2 in the tools, with file and key), not at the first step."""
    from colossal_runner.distributed import ParallelContext, get_context, set_context

    previous = get_context()
    set_context(ParallelContext(pipeline=2, rank=0, world_size=2))
    try:
        from colossal_runner.initialize import check_microbatches
        from colossal_runner.engine.schedule import InterleavedPipelineSchedule, PipelineSchedule
        cfg = Config(_cfg(), filename=TINY)
        with pytest.raises(ConfigError, match=r'tiny\.py.*schedule\.num_microbatches.*multiple of the '
                                              r'pipeline size 2; got 3'):
            check_microbatches(cfg, InterleavedPipelineSchedule(3))
        check_microbatches(cfg, PipelineSchedule(1))  # fewer microbatches than stages run, as in Megatron-LM
        check_microbatches(cfg, PipelineSchedule(2))
    finally:
        set_context(previous)


def test_read_only_with_a_file_writing_hook_says_what_to_leave_out(tmp_path):
    with pytest.raises(Exception) as info:
        initialize(_cfg(), work_dir=str(tmp_path), read_only=True)
    assert 'SaveCheckpointHook' in str(info.value)
    notes = info.value.__notes__
    assert any('initialize(read_only=True) builds a Trainer without a work_dir' in note for note in notes)
    run = initialize(_cfg(hooks=[dict(type='LossHook')]), work_dir=str(tmp_path), read_only=True)
    assert run.trainer.work_dir is None


def test_a_work_dir_under_the_home_directory_is_expanded(tmp_path, monkeypatch):
    """Before, work_dir='~/runs/x' made a folder literally named '~' in the working directory."""
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.chdir(tmp_path)
    run = initialize(_cfg(work_dir='~/runs/x'), log_file=False)
    assert run.config.work_dir == str(tmp_path / 'home' / 'runs' / 'x')
    assert (tmp_path / 'home' / 'runs' / 'x').is_dir() and not (tmp_path / '~').exists()


def test_the_log_names_the_configs_model_type_for_a_model_built_in_stages(tmp_path):
    """A pipeline (or chunked) model is a container of stages: the log names the config's MLP."""
    import logging
    records = []
    logger = logging.getLogger(f'test_model_name_{uuid.uuid4().hex}')
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    run = initialize(_cfg(schedule=dict(type='InterleavedPipelineSchedule', num_microbatches=2),
                          hooks=[]), work_dir=str(tmp_path), logger=logger)
    assert isinstance(run.engine.model, torch.nn.ModuleList)
    assert any(r.getMessage().startswith('initialized MLP on cpu') for r in records)


def test_deterministic_from_the_config_turns_on_deterministic_algorithms(tmp_path, monkeypatch):
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        initialize(_cfg(hooks=[]), work_dir=str(tmp_path), log_file=False)
        assert torch.are_deterministic_algorithms_enabled() == before  # off unless asked for
        run = initialize(_cfg(hooks=[], deterministic=True), work_dir=str(tmp_path), log_file=False)
        assert torch.are_deterministic_algorithms_enabled() and run.config.deterministic is True
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic = False


@pytest.mark.parametrize('model, flatten, key, expected', [
    (dict(type='MLP', in_features=32, hidden=[16], num_classes=10), True, 'in_features',
     r'has in_features=32, but each training sample has shape \(64,\), 64 values once flattened: '
     r'set model.in_features=64'),
    (dict(type='SimpleCNN', in_channels=3, image_size=8, channels=[4], hidden=8), False, 'in_channels',
     r'has in_channels=3, but each training sample has shape \(1, 8, 8\) \(channels, height, width\): '
     r'set model.in_channels=1'),
    (dict(type='SimpleCNN', in_channels=1, image_size=28, channels=[4], hidden=8), False, 'image_size',
     r'has image_size=28, but each training sample has shape \(1, 8, 8\) .*: set model.image_size=8'),
    (dict(type='SimpleCNN', in_channels=1, image_size=8, channels=[4], hidden=8), True, 'type',
     r'takes images shaped \(channels, height, width\), but each training sample has shape \(64,\): '
     r'give it unflattened images \(for Digits, flatten=False'),
])
def test_an_image_model_sized_for_other_images_is_a_config_error_naming_its_key(tmp_path, model, flatten, key,
                                                                                 expected):
    """Before: torch's 'mat1 and mat2 shapes cannot be multiplied' at the first step, naming no key."""
    dataset = dict(type='Digits', split='train', flatten=flatten)
    cfg = _cfg(model=model, data=dict(train=dict(dataset=dataset, dataloader=dict(batch_size=8))),
               lr_scheduler=None)
    with pytest.raises(ConfigError, match=rf'key model.{key}: the model \({model["type"]}\) {expected}'):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)
    if key == 'type':
        dataset['flatten'] = False
    else:
        model[key] = {'in_features': 64, 'in_channels': 1, 'image_size': 8}[key]
    initialize(cfg, work_dir=str(tmp_path), log_file=False)  # the suggested fix works


# ---------------------------------------------------------------- mmcv habits that would change the run

def test_a_warmup_kept_from_the_base_for_a_scheduler_without_one_names_the_key_the_config_wrote(tmp_path):
    """Before: TypeError about warmup_steps (converted from warmup_epochs), suggesting total_steps."""
    options = {'lr_scheduler.type': 'CosineAnnealingLR'}  # over tiny.py's warmup_epochs=1
    with pytest.raises(ConfigError, match=r'key lr_scheduler.warmup_epochs: CosineAnnealingLR has no '
                                          r'warm-up, but warmup_epochs=1 asks for one') as info:
        initialize(TINY, cfg_options=options, work_dir=str(tmp_path), log_file=False)
    message = str(info.value)
    assert info.value.filename == TINY and 'warmup_steps' not in message and 'total_steps' not in message
    assert '--cfg-options lr_scheduler.warmup_epochs=None' in message and 'CosineAnnealingWarmupLR' in message
    options['lr_scheduler.warmup_epochs'] = None  # the suggested fix works
    run = initialize(TINY, cfg_options=options, work_dir=str(tmp_path), log_file=False)
    assert type(run.engine.lr_scheduler).__name__ == 'CosineAnnealingLR'


def test_warmup_steps_for_a_scheduler_without_a_warmup_lists_the_ones_with_one(tmp_path):
    cfg = _cfg(lr_scheduler=dict(type='StepLR', step_size=2, warmup_steps=1))
    with pytest.raises(ConfigError, match=r'key lr_scheduler.warmup_steps: StepLR has no warm-up, but '
                                          r'warmup_steps=1 asks for one.*MultiStepWarmupLR'):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


def test_mmcvs_paramwise_cfg_is_an_error_pointing_to_a_registered_optimizer_function(tmp_path):
    """Before: TypeError from SGD with "did you mean 'params'", which the framework fills in."""
    cfg = _cfg(optimizer=dict(type='SGD', lr=0.1, paramwise_cfg=dict(bias_decay_mult=0.0)))
    with pytest.raises(ConfigError, match=r"key optimizer.paramwise_cfg: paramwise_cfg=\{'bias_decay_mult': "
                                          r"0.0\} is mmcv's per-parameter options; they are not config keys "
                                          r'here.*register a function in OPTIMIZERS') as info:
        initialize(cfg, work_dir=str(tmp_path), log_file=False)
    assert 'did you mean' not in str(info.value)
    cfg['optimizer']['paramwise_cfg'] = None  # mmcv's default: asks for nothing
    assert initialize(cfg, work_dir=str(tmp_path), log_file=False).engine.optimizer.defaults['lr'] == 0.1


def _python_block(doc: str, after: str) -> str:
    return doc.split(after, 1)[1].split('```python\n', 1)[1].split('```', 1)[0]


def test_the_config_references_parameter_group_example_builds_its_groups(tmp_path, monkeypatch):
    doc = open(os.path.join(os.path.dirname(HERE), 'docs', 'config_reference.md'), encoding='utf-8').read()
    section = doc.split('\n## optimizer\n', 1)[1].split('\n## ', 1)[0]
    code = _python_block(section, 'For parameter groups')
    config = Config.fromstring(_python_block(section, 'and in the config:'), '.py').to_dict()
    module = config['custom_imports']['imports'][0]
    (tmp_path / f'{module}.py').write_text(code, encoding='utf-8')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(OPTIMIZERS, '_module_dict', dict(OPTIMIZERS.module_dict))  # unregistered after
    try:
        engine = initialize(_cfg(**config, lr_scheduler=None), work_dir=str(tmp_path / 'run'),
                            log_file=False).engine
    finally:
        sys.modules.pop(module, None)
    decay, no_decay = engine.optimizer.param_groups
    assert isinstance(engine.optimizer, torch.optim.AdamW)
    assert decay['weight_decay'] == config['optimizer']['weight_decay'] and no_decay['weight_decay'] == 0.0
    assert decay['lr'] == no_decay['lr'] == config['optimizer']['lr']
    assert all(p.ndim > 1 for p in decay['params']) and all(p.ndim == 1 for p in no_decay['params'])
    assert {id(p) for p in decay['params'] + no_decay['params']} == {id(p) for p in engine.model.parameters()}


@pytest.mark.parametrize('key, value, expected', [
    ('lr_config', dict(policy='step', step=[8, 11], warmup='linear', warmup_iters=500),
     r"another learning-rate schedule.*lr_scheduler = dict\(type='MultiStepWarmupLR', ...\) for "
     r"policy='step'. Its lengths count optimizer steps, not epochs"),
    ('lr_config', dict(policy='CosineAnnealing', min_lr=0), r"dict\(type='CosineAnnealingLR', ...\)"),
    ('optimizer_config', dict(grad_clip=dict(max_norm=35, norm_type=2)),
     r'without what it asks \(gradient clipping.*grad_clip -> clip_grad_norm = 35 \(the L2 norm'),
    ('optimizer_config', dict(type='GradientCumulativeOptimizerHook', cumulative_iters=4),
     r'write cumulative_iters -> gradient_accumulation = 4\.$'),
])
def test_mmcvs_lr_config_and_optimizer_config_are_errors_saying_what_to_write(key, value, expected):
    """Before: only a warning among the unknown keys, and the run trained without them."""
    with pytest.raises(ConfigError, match=rf'key {key}: {key} = .* is an mmcv key that colossal_runner does '
                                          rf'not read; .*{expected}'):
        check_top_level_keys(Config({key: value}, filename='my.py'))


@pytest.mark.parametrize('key, value', [
    ('optimizer_config', dict(grad_clip=None)), ('lr_config', None),
    # mmcv OptimizerHook arguments other than clipping, accumulation and loss scaling ask for nothing here
    ('optimizer_config', dict(type='OptimizerHook', grad_clip=None, detect_anomalous_params=False)),
    ('lr_config', dict(policy='fixed')),  # a constant rate: what a run without lr_scheduler does
])
def test_mmcv_keys_that_ask_for_nothing_only_warn(key, value):
    with pytest.warns(UserWarning, match=f'unknown top-level key {key!r} is ignored'):
        check_top_level_keys(Config({key: value}))


def test_reduce_lr_on_plateau_as_the_lr_scheduler_points_to_the_hook_recipe(tmp_path):
    with pytest.raises(KeyError, match='ReduceLROnPlateau needs a metric at each step.*docs/lr_scheduler.md, '
                                       '"Schedulers driven by a metric') as info:
        initialize(_cfg(lr_scheduler=dict(type='ReduceLROnPlateau')), work_dir=str(tmp_path), log_file=False)
    assert 'key lr_scheduler.type' in ' '.join(info.value.__notes__)
    doc = open(os.path.join(os.path.dirname(HERE), 'docs', 'lr_scheduler.md'), encoding='utf-8').read()
    assert '\n## Schedulers driven by a metric (ReduceLROnPlateau)\n' in doc  # the section it names


def _milestones_cfg(milestones, **overrides):
    return Config(_cfg(lr_scheduler=dict(type='MultiStepLR', milestones=milestones), **overrides))


@pytest.mark.parametrize('milestones, expected', [
    ([30, 60], r'milestones \[30, 60\] are at or after the end of the run \(total_steps=8 optimizer steps\)'
               r'.*count optimizer steps, not epochs as in mmcv: epoch k starts at step k x 4'),
    ([1, 2], r'every milestone \[1, 2\] falls in the first epoch of a run of 8 optimizer steps.*'
             r'e.g. milestones=\[4\] for epochs \[1\]'),
])
def test_milestones_counted_in_epochs_as_in_mmcv_warn_with_the_steps_per_epoch(milestones, expected,
                                                                               project_log):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    build_lr_scheduler(_milestones_cfg(milestones), optimizer, 4, logging.getLogger('colossal_runner'))
    assert re.search(expected, project_log.text), project_log.text


@pytest.mark.parametrize('milestones, hooks', [([4], []),  # the start of epoch 1, in steps
                                               ([1], [dict(type='LRSchedulerHook', by_epoch=True)])])
def test_milestones_within_the_run_do_not_warn(milestones, hooks, project_log):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cfg = _milestones_cfg(milestones, hooks=hooks)
    build_lr_scheduler(cfg, optimizer, 4, logging.getLogger('colossal_runner'))
    assert 'milestone' not in project_log.text


# ---------------------------------------------------------------- numpy numbers in a .py config

def test_a_numpy_lr_in_a_py_config_trains_saves_and_resumes(tmp_path):
    # np.float64 reached the optimizer's initial_lr, which torch.load(weights_only=True) refuses:
    # the first checkpoint save failed after a whole epoch
    config = tmp_path / 'np_lr.py'
    config.write_text(f'import numpy as np\n_base_ = {TINY!r}\n'
                      f'optimizer = dict(lr=0.05 * np.sqrt(np.float32(4.0)))\nmax_epochs = 1\n')
    cfg = Config.fromfile(str(config))
    assert type(cfg.optimizer.lr) is float and cfg.optimizer.lr == pytest.approx(0.1)
    assert "lr=0.1" in cfg.pretty_text  # the merged config shows the number that ran
    work_dir = tmp_path / 'run'
    first = initialize(cfg, work_dir=str(work_dir), log_file=False)
    first.trainer.fit(first.train_dataloader, epochs=1)
    state = torch.load(work_dir / 'checkpoints' / 'epoch_1.pt', weights_only=True)
    assert type(state['engine']['optimizer']['param_groups'][0]['initial_lr']) is float
    again = initialize(cfg, work_dir=str(work_dir), log_file=False)
    resume(again.trainer, str(work_dir / 'checkpoints'))
    again.trainer.fit(again.train_dataloader, epochs=2)
    assert os.path.exists(work_dir / 'checkpoints' / 'epoch_2.pt')


def test_numpy_numbers_set_from_code_reach_the_optimizer_and_scheduler_as_plain_floats(tmp_path):
    """A config changed in code (not loaded from a .py file) is not converted on load."""
    np = pytest.importorskip('numpy')
    cfg = _cfg(optimizer=dict(type='SGD', lr=np.float64(0.003) * np.sqrt(2), momentum=np.float32(0.9)),
               lr_scheduler=dict(type='CosineAnnealingLR', eta_min=np.float64(1e-5)))
    engine = initialize(cfg, work_dir=str(tmp_path), log_file=False).engine
    group = engine.optimizer.param_groups[0]
    assert [type(group[k]) for k in ('lr', 'initial_lr', 'momentum')] == [float, float, float]
    assert type(engine.lr_scheduler.eta_min) is float
    check_weights_only(engine.state_dict())  # what the first checkpoint save checks


# ---------------------------------------------------------------- save_best is checked with the config

@pytest.mark.parametrize('save_best, message', [
    ('Acc', r"key hooks\[3\]\.save_best: SaveCheckpointHook: save_best='Acc': no test metric named 'Acc'.*"
            r"test metrics: \[Accuracy, Loss\]"),
    ('valid/Accuracy', r"key hooks\[3\]\.save_best: SaveCheckpointHook: save_best='valid/Accuracy': the mode "
                       r"must be 'train' or 'test'"),
])
def test_a_save_best_naming_no_metric_is_a_config_error_naming_its_key(tmp_path, save_best, message):
    cfg = _cfg()
    cfg['hooks'][3]['save_best'] = save_best
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    with pytest.raises(ConfigError, match=message) as info:
        run.trainer.fit(run.train_dataloader, epochs=1)  # at before_train, before the first step
    if '/' not in save_best:
        assert isinstance(info.value, KeyError)  # what it was before, for code that catches that
    assert str(info.value).count('key hooks[3].save_best') == 1
    assert run.trainer.states['iteration'] == 0


def test_a_save_best_metric_registered_in_code_after_initialize_counts(tmp_path):
    # it used to be checked as initialize attached the config's hooks, before this hook was there
    cfg = _cfg()
    cfg['hooks'][3]['save_best'] = 'train/MaxErr'
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    run.trainer.register_hook(MetricHook(metric=Loss, name='MaxErr'))
    run.trainer.fit(run.train_dataloader, epochs=1)
    assert os.path.exists(tmp_path / 'checkpoints' / 'best.pt')


def test_train_py_exits_2_for_a_bad_save_best(tmp_path):
    train = os.path.join(HERE, '..', 'tools', 'train.py')
    proc = subprocess.run([sys.executable, train, TINY, '--work-dir', str(tmp_path), '--no-progress',
                           '--cfg-options', 'hooks.3.save_best=Acc'], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (f'train.py: error: config {TINY}, key hooks[3].save_best: SaveCheckpointHook: save_best='
            in proc.stderr)
    assert not (tmp_path / 'checkpoints').exists() or not os.listdir(tmp_path / 'checkpoints')


# ---------------------------------------------------------------- review round 12 (optim)

def _left_over_cfg(shuffle, gradient_accumulation=3):
    """100 samples in batches of 8: 13 batches per epoch."""
    dataset = dict(type='SyntheticClassification', num_samples=100, num_features=8, num_classes=3)
    return _cfg(gradient_accumulation=gradient_accumulation, lr_scheduler=None, hooks=[dict(type='LossHook')],
                data=dict(train=dict(dataset=dataset, dataloader=dict(batch_size=8, shuffle=shuffle))))


def test_batches_left_over_by_accumulation_in_a_fixed_order_warn_and_say_what_to_change(tmp_path):
    """The last 13 % 3 = 1 batch (samples 96-99) is never trained on: it warns as drop_last does."""
    log = tmp_path / 'run.log'
    expected = (r'gradient_accumulation=3 with 13 training batches per epoch leaves out the same 4 of 100 '
                r'samples on every pass \(the last 1 batch, too few for an optimizer step of 3 batches; the '
                r'order is not shuffled\): the run never trains on them .*To use every sample, set '
                r'data.train.dataloader.batch_size=7 \(15 batches, a multiple of 3\), or '
                r'data.train.dataloader.shuffle=True')
    with pytest.warns(UserWarning, match=expected):
        initialize(_left_over_cfg(shuffle=False), work_dir=str(tmp_path), log_file=str(log))
    assert 'leaves out the same 4 of 100 samples' in log.read_text()  # the run's log keeps it


def test_batches_left_over_by_accumulation_in_a_shuffled_order_get_an_info_line(tmp_path, project_log):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        initialize(_left_over_cfg(shuffle=True), work_dir=str(tmp_path), log_file=False)
    assert not [w for w in caught if 'gradient_accumulation' in str(w.message)]
    assert ('gradient_accumulation=3 with 13 training batches per epoch: the last 1 batch of each epoch, '
            'too few for an optimizer step, is not trained on (the order is shuffled' in project_log.text)


def test_no_batch_left_over_by_accumulation_says_nothing(tmp_path, project_log):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        initialize(_left_over_cfg(shuffle=False, gradient_accumulation=13), work_dir=str(tmp_path),
                   log_file=False)
    assert not [w for w in caught if 'gradient_accumulation' in str(w.message)]
    assert 'too few for an optimizer step' not in project_log.text


def _by_epoch_cfg(**scheduler):
    return Config(_cfg(lr_scheduler=dict(type='CosineAnnealingWarmupLR', **scheduler), max_epochs=3,
                       hooks=[dict(type='LRSchedulerHook', by_epoch=True)]))


@pytest.mark.parametrize('epochs, rounded, what', [(0.5, 0, 'no warm-up at all'),
                                                   (1.5, 2, 'a warm-up of 2 epochs')])
def test_a_fractional_warmup_of_a_per_epoch_scheduler_warns_with_the_rounded_value(epochs, rounded, what,
                                                                                   tmp_path):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    log = tmp_path / 'run.log'
    logger = logging.getLogger('colossal_runner')
    handler = logging.FileHandler(log)
    logger.addHandler(handler)
    try:
        with pytest.warns(UserWarning, match=rf'lr_scheduler.warmup_epochs={epochs} is not a whole number '
                                             rf'of epochs, but LRSchedulerHook\(by_epoch=True\) steps the '
                                             rf'scheduler once per epoch, so it was rounded to {rounded}: '
                                             rf'{what}\.'):
            scheduler = build_lr_scheduler(_by_epoch_cfg(warmup_epochs=epochs), optimizer, 13, logger)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert scheduler.warmup_steps == rounded
    assert f'lr_scheduler.warmup_epochs={epochs} is not a whole number' in log.read_text()


@pytest.mark.parametrize('warmup_epochs, hooks', [(1, [dict(type='LRSchedulerHook', by_epoch=True)]),
                                                  (0.5, [dict(type='LRSchedulerHook')])])  # 0.5 x 13 steps
def test_a_whole_epoch_warmup_or_a_per_step_scheduler_does_not_warn(warmup_epochs, hooks):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cfg = Config(_cfg(lr_scheduler=dict(type='CosineAnnealingWarmupLR', warmup_epochs=warmup_epochs),
                      max_epochs=3, hooks=hooks))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build_lr_scheduler(cfg, optimizer, 13, logging.getLogger('colossal_runner'))


def test_the_total_steps_line_shows_the_configs_max_steps_and_the_epochs_it_makes(project_log):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cfg = _by_epoch_cfg(warmup_epochs=1)
    cfg.max_steps = 20
    scheduler = build_lr_scheduler(cfg, optimizer, 13, logging.getLogger('colossal_runner'))
    assert scheduler.total_steps == 2
    # before: "max_steps=2", the converted epoch count under the config's name
    assert ('(computed: max_epochs=3 x 1 per epoch, max_steps=20 optimizer steps, 2 epochs of 13 steps '
            'rounded up)' in project_log.text), project_log.text


def test_batches_left_over_by_accumulation_count_every_data_parallel_replica(project_log):
    from types import SimpleNamespace

    from colossal_runner.data import build_dataloader
    from colossal_runner.data.synthetic import SyntheticClassification
    from colossal_runner.initialize import check_accumulation_left_out
    dataset = SyntheticClassification(num_samples=100, num_features=8, num_classes=3)
    # rank 0 of 2 unshuffled replicas: 50 samples in 7 batches (the last of 2 samples), 1 left over by N=3
    loader = build_dataloader(dict(batch_size=8), dataset, context=SimpleNamespace(data_size=2, dp_rank=0))
    expected = (r'gradient_accumulation=3 with 7 training batches per epoch leaves out the same 4 of 100 '
                r'samples on every pass \(the last 1 batch of each of the 2 data-parallel replicas, '
                r'.*batch_size=9 \(6 batches')
    with pytest.warns(UserWarning, match=expected):
        check_accumulation_left_out(loader, 3, 2, logging.getLogger('colossal_runner'))
