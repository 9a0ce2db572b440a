"""tools/train.py as a real subprocess: the work directory, --resume, custom hooks, bad input."""
import glob
import json
import os
import shutil

from colossal_runner.config import Config

from .conftest import E2E, read_jsonl, run_tool


def test_train_writes_the_work_directory_and_prints_final_metrics(trained):
    work_dir, proc = trained
    assert proc.returncode == 0, proc.stderr
    assert 'Final metrics:' in proc.stdout and 'test Accuracy=' in proc.stdout
    # The merged config, with the command-line overrides, loads back.
    dumped = Config.fromfile(os.path.join(work_dir, 'mlp.py'))
    assert dumped.max_epochs == 2 and dumped.optimizer.lr == 0.005 and dumped.work_dir == work_dir
    logs = glob.glob(os.path.join(work_dir, '*.log'))
    assert len(logs) == 1
    log_text = open(logs[0], encoding='utf-8').read()
    assert 'warmup_epochs=1 -> warmup_steps=45' in log_text and 'total_steps = 90' in log_text
    records = read_jsonl(os.path.join(work_dir, 'metrics.jsonl'))
    test_records = [r for r in records if r['mode'] == 'test']
    assert [r['epoch'] for r in test_records] == [1, 2]
    assert os.path.isfile(os.path.join(work_dir, 'checkpoints', 'epoch_2.pt'))
    assert glob.glob(os.path.join(work_dir, 'tensorboard', 'events.out.tfevents.*'))
    final = json.load(open(os.path.join(work_dir, 'final_metrics.json')))
    assert final['test']['Accuracy'] == test_records[-1]['Accuracy'] > 0.85


def test_resume_continues_from_the_latest_checkpoint(resumed):
    work_dir, proc = resumed
    assert proc.returncode == 0, proc.stderr
    assert 'resumed from' in proc.stderr
    records = read_jsonl(os.path.join(work_dir, 'metrics.jsonl'))
    assert [r['epoch'] for r in records if r['mode'] == 'train'] == [1, 2, 3]  # 1-2 not trained again
    assert [r['iteration'] for r in records if r['mode'] == 'train'][-1] == 3 * 45
    assert os.path.isfile(os.path.join(work_dir, 'checkpoints', 'epoch_3.pt'))
    # Training longer: the third epoch runs on a cosine schedule over 3 epochs, not at the end of
    # the 2-epoch one it was saved with (eta_min = 1e-5).
    line = next(line for line in proc.stderr.splitlines() if 'lr_scheduler: the checkpoint' in line)
    assert 'continues at step 90' in line and 'total_steps=135 (the checkpoint: 90)' in line
    assert float(line.rsplit('learning rate now ', 1)[1]) > 1e-3


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_final_metrics(resumed, tmp_path):
    finished, _ = resumed
    work_dir = str(tmp_path / 'mlp')
    shutil.copytree(finished, work_dir, symlinks=True)
    final = os.path.join(work_dir, 'final_metrics.json')
    before = open(final, encoding='utf-8').read()
    proc = run_tool(['train.py', 'configs/digits/mlp.py', '--work-dir', work_dir, '--no-progress',
                     '--resume', '--cfg-options', 'max_epochs=3', 'optimizer.lr=0.005'])
    assert proc.returncode == 0, proc.stderr
    assert 'nothing to train: the checkpoint is at epoch 3, iteration 135' in proc.stderr
    assert 'max_epochs=N' in proc.stderr and 'nan' not in proc.stdout.lower()
    assert open(final, encoding='utf-8').read() == before
    assert json.loads(before)['test']['Accuracy'] > 0.85


def test_custom_hook_from_custom_imports_is_called(tmp_path):
    proc = run_tool(['train.py', os.path.join(E2E, 'custom_hook.py'), '--work-dir', str(tmp_path),
                     '--no-progress', '--cfg-options', 'max_steps=3'])
    assert proc.returncode == 0, proc.stderr
    marker = json.load(open(tmp_path / 'marker.json'))
    assert marker['iterations'] == [1, 2, 3]


def _fails(args, message, status=2):
    proc = run_tool(args)
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('train.py: error: ') and message in lines[-1]  # one clear line, last
    assert sum('error' in line.lower() for line in lines) == 1, proc.stderr
    return proc


def test_bad_configs_exit_non_zero_with_one_line(tmp_path):
    wd = ['--work-dir', str(tmp_path)]
    _fails(['train.py', 'configs/nope.py'] + wd, 'train.py: error: config file not found: configs/nope.py')
    bad = tmp_path / 'syntax_error.py'
    bad.write_text("model = dict(type='MLP',\noptimizer = dict(type='SGD')\n")
    _fails(['train.py', str(bad)] + wd, 'syntax_error.py:1: syntax error')


def test_print_config_shows_the_merged_config():
    proc = run_tool(['print_config.py', 'configs/digits/cnn.py', '--cfg-options', 'optimizer.lr=0.01'])
    assert proc.returncode == 0, proc.stderr
    assert "type='SimpleCNN'" in proc.stdout and 'lr=0.01' in proc.stdout and "type='Digits'" in proc.stdout
