"""mmcv 1.x / mmengine run-control keys: refused, saying what to write here, unless they ask for nothing.

Before, they were only warned about among the unknown keys, and the run trained otherwise (the base's
10 epochs for ``runner = dict(max_epochs=2)``, another optimizer, no clipping, another seed, ...).
"""
import logging
import os
import re
import textwrap

import pytest

from colossal_runner import train as train_cli
from colossal_runner.config import Config, ConfigError
from colossal_runner.initialize import KNOWN_KEYS, check_top_level_keys, initialize
from colossal_runner.registry import HOOKS, LR_SCHEDULERS, OPTIMIZERS
from colossal_runner.utils.logging import detach_log_file

from .tools.conftest import run_tool

HERE = os.path.dirname(__file__)
TINY = os.path.join(HERE, 'data', 'e2e', 'tiny.py')


def _config_file(tmp_path, text, name='mm.py'):
    """A config file on tiny.py (2 epochs, seed 3) with ``text`` added."""
    path = tmp_path / name
    path.write_text(f'_base_ = {TINY!r}\n' + textwrap.dedent(text), encoding='utf-8')
    return str(path)


def _refusal(tmp_path, key, text):
    path = _config_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        check_top_level_keys(Config.fromfile(path))
    message = str(info.value)
    assert message.startswith(f'config {path}, key {key}: {key} = '), message
    return message


REFUSED = [
    ('runner', "runner = dict(type='EpochBasedRunner', max_epochs=5)",
     ['an mmcv key', 'the run would train for max_epochs = 2 instead', 'write max_epochs = 5.']),
    ('runner', "runner = dict(type='IterBasedRunner', max_iters=100)", ['max_iters -> max_steps = 100']),
    ('total_epochs', 'total_epochs = 5', ['max_epochs = 2 instead', 'write max_epochs = 5.']),
    ('train_cfg', 'train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=3)',
     ['an mmengine key', 'write max_epochs = 5; val_interval -> test_interval = 3']),
    ('evaluation', "evaluation = dict(interval=2, metric='accuracy')",
     ['with test_interval = 1 and the metric hooks', "interval -> test_interval = 2; metric -> ",
      "dict(type='AccuracyHook')"]),
    ('checkpoint_config', 'checkpoint_config = dict(interval=2, max_keep_ckpts=3)',
     ["hooks = [..., dict(type='SaveCheckpointHook', interval=2, max_keep=3)]"]),
    ('checkpoint_config', 'checkpoint_config = dict()',   # mmcv builds a CheckpointHook from it
     ["hooks = [..., dict(type='SaveCheckpointHook')]"]),
    ('default_hooks', "default_hooks = dict(timer=dict(type='IterTimerHook'), "
                      "checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2), "
                      "logger=dict(type='LoggerHook', interval=50))",
     ["checkpoint -> hooks = [..., dict(type='SaveCheckpointHook', interval=1, max_keep=2)]",
      "logger -> hooks = [..., dict(type='LogMetricByStepHook', interval=50), "
      "dict(type='LogMetricByEpochHook')]"]),
    ('custom_hooks', "custom_hooks = [dict(type='EMAHook')]", ['its dicts into hooks']),
    ('log_config', "log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook'), "
                   "dict(type='TensorboardLoggerHook'), dict(type='WandbLoggerHook')])",
     ["hooks = [..., dict(type='LogMetricByStepHook', interval=50), dict(type='LogMetricByEpochHook'), "
      "dict(type='TensorboardHook')] (WandbLoggerHook: no counterpart"]),
    ('log_level', "log_level = 'DEBUG'", ["write logging = dict(level='DEBUG')"]),
    ('fp16', 'fp16 = dict(loss_scale=512.)', ["write amp = 'fp16'"]),
    ('fp16', 'fp16 = dict()', ["write amp = 'fp16'"]),   # mmcv's Fp16OptimizerHook with its defaults
    ('optim_wrapper', "optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.5, "
                      "momentum=0.9), clip_grad=dict(max_norm=1.0))",
     ["write optimizer = dict(type='SGD', lr=0.5, momentum=0.9); clip_grad_norm = 1.0"]),
    ('optim_wrapper', "optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.5), "
                      "accumulative_counts=4)",
     ["gradient_accumulation = 4; amp = 'fp16'"]),
    ('randomness', 'randomness = dict(seed=0, deterministic=True)',
     ['the run would use seed = 3 and deterministic = False instead',
      'write seed = 0; deterministic = True.']),
    ('resume', 'resume = True',
     ["overwrite the earlier run's checkpoints", 'drop the key and run tools/train.py CONFIG --resume (']),
    ('auto_resume', 'auto_resume = True', ['tools/train.py CONFIG --resume (']),
    ('param_scheduler', "param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, "
                        "end=50), dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11])]",
     ["not a list: drop param_scheduler and write lr_scheduler = dict(type='MultiStepWarmupLR', ..., "
      "warmup_steps=50)", 'count optimizer steps, not epochs',
      "dict(type='LRSchedulerHook', by_epoch=True)"]),
    ('param_scheduler', "param_scheduler = [dict(type='LinearLR', end=5), "
                        "dict(type='CosineAnnealingLR', T_max=100)]",
     ["dict(type='CosineAnnealingWarmupLR', ..., warmup_epochs=5)"]),   # by_epoch defaults to True
]


@pytest.mark.parametrize('key, text, expected', REFUSED,
                         ids=[f'{key}-{i}' for i, (key, _, _) in enumerate(REFUSED)])
def test_mmcv_and_mmengine_run_keys_are_refused_saying_what_to_write(tmp_path, key, text, expected):
    message = _refusal(tmp_path, key, text)
    for part in expected:
        assert part in message, message
    assert 'did you mean' not in message   # param_scheduler is no typo of lr_scheduler
    advice = message.split('. ', 1)[1]   # after "what the run would do instead"
    # the advice names keys and types that exist here
    written = set(re.findall(r"(?<![\w.'=])([a-z_]+) = ", advice)) - {key}
    assert written <= set(KNOWN_KEYS), written - set(KNOWN_KEYS)
    for kind in re.findall(r"type='(\w+)'", advice):
        assert kind in HOOKS or kind in LR_SCHEDULERS or kind in OPTIMIZERS, kind


NOTHING = ["load_from = ''", 'resume_from = False', 'load_from = None', 'resume = False',
           'auto_resume = False', 'custom_hooks = []', 'fp16 = None', 'checkpoint_config = None',
           'param_scheduler = None',
           "log_config = dict(interval=50, hooks=[])", "log_level = 'INFO'", 'optim_wrapper = None',
           'randomness = dict(seed=None, deterministic=False)', 'runner = dict(type="EpochBasedRunner")',
           "default_hooks = dict(timer=dict(type='IterTimerHook'), checkpoint=None, logger=None)",
           "workflow = [('train', 1)]", 'find_unused_parameters = False', 'evaluation = dict()']


@pytest.mark.parametrize('text', NOTHING)
def test_values_that_ask_for_nothing_only_warn(tmp_path, text):
    key = text.split(' = ')[0]
    with pytest.warns(UserWarning, match=f"mm.py: unknown top-level key '{key}' is ignored: this value asks "
                                         f"for nothing"):
        assert check_top_level_keys(Config.fromfile(_config_file(tmp_path, text))) == [key]


def test_log_level_other_than_the_logging_level_is_refused(tmp_path):
    message = _refusal(tmp_path, 'log_level', "log_level = 'INFO'\nlogging = dict(level='WARNING')")
    assert "write logging = dict(level='INFO')" in message


def test_load_from_an_empty_string_no_longer_gets_a_nonsense_hint(tmp_path, recwarn):
    check_top_level_keys(Config.fromfile(_config_file(tmp_path, "load_from = ''\nresume_from = False")))
    messages = ' '.join(str(w.message) for w in recwarn.list)
    assert "checkpoint_dir=''" not in messages and '--resume False' not in messages


def test_every_refused_key_of_a_config_is_named_at_once(tmp_path):
    message = _refusal(tmp_path, 'runner', """\
        runner = dict(type='EpochBasedRunner', max_epochs=2)
        checkpoint_config = dict(interval=1)
        log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
        evaluation = dict(interval=1, metric='accuracy')
        load_from = None
        workflow = [('train', 1)]
        log_level = 'INFO'
        """)
    assert message.endswith('The same for checkpoint_config, log_config, evaluation (docs/config.md, '
                            '"mmcv and mmengine keys").'), message


@pytest.mark.parametrize('text, note', [
    ("workflow = [('train', 1), ('val', 1)]", 'data.test is evaluated every test_interval epochs'),
    ("dist_params = dict(backend='nccl')", 'the backend follows the device here'),
    ('find_unused_parameters = True', 'DistributedDataParallel is built without it'),
])
def test_keys_without_a_counterpart_warn_saying_what_happens_instead(tmp_path, text, note):
    key = text.split(' = ')[0]
    with pytest.warns(UserWarning, match=f"unknown top-level key '{key}' is ignored: .*{note}"):
        check_top_level_keys(Config.fromfile(_config_file(tmp_path, text)))


def test_an_unknown_key_warning_is_short_and_goes_into_the_log_file(tmp_path):
    cfg = Config.fromfile(_config_file(tmp_path, "my_experiment_tag = 'x'\nmy_seed = 1\n"))
    log = tmp_path / 'run.log'
    with pytest.warns(UserWarning) as record:
        initialize(cfg, work_dir=str(tmp_path / 'w'), log_file=str(log))
    messages = [str(w.message) for w in record if 'unknown top-level key' in str(w.message)]
    assert len(messages) == 2
    for message in messages:  # no list of every known key: the docs page that has it
        assert len(message) < 170 + len(cfg.filename) and 'model, loss' not in message, message
        assert message.endswith('Keys read: docs/config_reference.md; start a variable of your own with _')
    assert "unknown top-level key 'my_seed' is ignored (the closest known key is 'seed')" in messages[1]
    detach_log_file(logging.getLogger('colossal_runner'))   # closes run.log
    text = log.read_text(encoding='utf-8')
    for message in messages:   # warned before the log file existed, and in it once
        assert text.count(f'WARNING - {message}\n') == 1, text


def test_train_tool_refuses_resume_true_instead_of_overwriting_the_checkpoints(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train_cli.main([TINY, '--work-dir', str(tmp_path), '--no-progress', '--cfg-options', 'resume=True'])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert ('key resume: resume = True is an mmengine key that colossal_runner does not read; the run would '
            "start from scratch and overwrite the earlier run's checkpoints") in err
    assert not os.listdir(tmp_path)   # nothing of a run was written


def test_train_tool_exits_2_on_an_mmcv_runner_config(tmp_path):
    path = _config_file(tmp_path, "runner = dict(type='EpochBasedRunner', max_epochs=5)\nlog_level = 'INFO'")
    proc = run_tool(['train.py', path, '--work-dir', str(tmp_path / 'w'), '--no-progress'])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f'train.py: error: config {path}, key runner: runner = ')
    assert 'the run would train for max_epochs = 2 instead' in proc.stderr
    assert 'write max_epochs = 5.' in proc.stderr
    assert not (tmp_path / 'w' / 'checkpoints').exists()


@pytest.mark.parametrize('order', ['resume first', 'load_from first'])
def test_resume_true_with_load_from_says_to_resume_from_that_file(order):
    keys = [('resume', True), ('load_from', 'work_dirs/x/epoch_3.pth')]
    cfg = Config(dict(keys if order == 'resume first' else keys[::-1]))
    with pytest.raises(ConfigError) as info:
        check_top_level_keys(cfg)
    message = str(info.value)
    assert 'run tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth' in message
    assert 'LoadCheckpointHook' not in message and 'finetune' not in message  # weights only: not a resume
