"""A table of malformed inputs through the real tools/train.py and tools/test.py.

Each case must end within 30 s with a non-zero exit, one message on stderr that names the file
or key and says how to fix it, no traceback (``--debug`` shows one), and must not change any
file of an earlier good run. The cases run as real subprocesses, a few at a time.
"""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E2E = os.path.join(ROOT, 'tests', 'data', 'e2e')
CONFIGS = os.path.join(ROOT, 'tests', 'data', 'config')
TINY = os.path.join(E2E, 'tiny.py')
CASE_TIMEOUT = 30
pytestmark = pytest.mark.timeout(400)  # ~30 tool runs, one per core at a time, on a shared machine


def tool_env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([E2E, ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(var, None)
    return env


def tool(name, args, cwd, timeout=CASE_TIMEOUT):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', name)] + list(args), cwd=cwd,
                          env=tool_env(), capture_output=True, text=True, timeout=timeout)


def run_forked(cases, cwd, at_once):
    """Each (id, tool, args, _) case as ``python tools/<tool> <args>``, run by
    tests/data/reliability/forked_tools.py in a process of its own forked after the torch import
    (which is most of a failing run's time); a CompletedProcess or TimeoutExpired for each."""
    server = os.path.join(ROOT, 'tests', 'data', 'reliability', 'forked_tools.py')
    requests = [dict(tool=os.path.join(ROOT, 'tools', which), args=list(args), cwd=cwd, timeout=CASE_TIMEOUT)
                for _, which, args, _ in cases]
    proc = subprocess.run([sys.executable, server, str(at_once)], input=json.dumps(requests), env=tool_env(),
                          capture_output=True, text=True, timeout=60 + CASE_TIMEOUT * len(cases) // at_once)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = []
    for (_, which, args, _), got in zip(cases, json.loads(proc.stdout)):
        command = [which, *args]
        outcomes.append(subprocess.TimeoutExpired(command, CASE_TIMEOUT) if got['timed_out'] else
                        subprocess.CompletedProcess(command, got['returncode'], got['stdout'], got['stderr']))
    return outcomes


def snapshot(directory):
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            if name == '.lock':  # names the last training that held the work directory (work_dir_lock)
                continue
            path = os.path.join(base, name)
            if not os.path.islink(path):
                with open(path, 'rb') as f:
                    out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return path


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def build_cases(d, good):
    """(id, tool, args, substrings the message must contain); ``d`` holds the broken files."""
    ckpt = os.path.join(good, 'checkpoints')
    latest = os.path.join(ckpt, 'latest.pt')
    base = f"_base_ = {TINY!r}\n"
    corrupt = os.path.join(d, 'corrupt.pt')
    with open(latest, 'rb') as f:
        data = f.read()
    with open(corrupt, 'wb') as f:
        f.write(data[:len(data) // 2])
    evil = {'engine': {'model': Evil(os.path.join(d, 'pwned'))}, 'states': {}}
    torch.save(evil, os.path.join(d, 'evil.pt'))
    other_model = write(d, 'other_model.py', base + "model = dict(hidden=[32, 8])\n")
    w = ['--work-dir', good]  # every case points at the good run's directory: nothing there may change
    return [
        ('syntax error', 'train.py', [os.path.join(CONFIGS, 'syntax_error.py')] + w,
         ['syntax_error.py:2', 'syntax error']),
        ('unknown type near miss', 'train.py', [os.path.join(E2E, 'unknown_model.py')] + w,
         ["'MPL' is not in the model registry", "Did you mean 'MLP'"]),
        ('misspelled top-level key', 'train.py', [write(d, 'optimzer.py', "_base_ = '" + TINY + "'\n"
                                                        "optimzer = dict(type='SGD', lr=0.5)\n")] + w,
         ['optimzer.py', "unknown top-level key 'optimzer'", "did you mean 'optimizer'"]),
        ('misspelled nested key', 'train.py', [TINY, '--cfg-options', 'optimizer.lrr=0.1'] + w,
         ['optimizer', 'lrr']),
        ('wrong value type', 'train.py', [TINY, '--cfg-options', 'max_epochs=two'] + w,
         ['max_epochs', 'positive int', "'two'"]),
        ('cfg-options token without =', 'train.py', [TINY, '--cfg-options', 'max_epochs'] + w,
         ['max_epochs', 'KEY=VALUE']),
        ('missing _base_', 'train.py', [os.path.join(CONFIGS, 'missing_base.py')] + w,
         ['does_not_exist.py', 'missing_base.py']),
        ('_base_ cycle', 'train.py', [os.path.join(CONFIGS, 'cycle', 'a.py')] + w, ['a.py', 'b.py', 'cycle']),
        ('negative epochs', 'train.py', [TINY, '--cfg-options', 'max_epochs=-1'] + w,
         ['max_epochs', 'positive int', '-1']),
        ('zero max_steps', 'train.py', [TINY, '--cfg-options', 'max_steps=0'] + w,
         ['max_steps', 'positive int']),
        ('batch not divisible by microbatches', 'train.py',
         [TINY, '--cfg-options', 'schedule.type=PipelineSchedule', 'schedule.num_microbatches=3'] + w,
         ['data.train.dataloader.batch_size', 'batch_size=16 is not divisible by schedule.num_microbatches=3',
          'multiple of 3']),
        ('pipeline size does not divide the world', 'train.py',
         [TINY, '--cfg-options', 'parallel.pipeline=3'] + w,
         ['pipeline', '3', 'world']),
        ('missing dataset files', 'train.py',
         [write(d, 'no_data.py', base + "data = dict(train=dict(dataset=dict(_delete_=True, type='CharText', "
                                        f"text_file='{d}/nope.txt')))\n")] + w,
         ['nope.txt', 'CharText']),
        ('unwritable work dir', 'train.py', [TINY, '--work-dir', os.path.join(latest, 'sub')],
         ['latest.pt', 'sub']),
        ('corrupt checkpoint to resume', 'train.py', [TINY, '--resume', corrupt] + w,
         ['corrupt.pt', 'cannot read checkpoint']),
        ('checkpoint of another model', 'train.py', [other_model, '--resume', latest] + w,
         ['does not fit the model', 'missing keys']),
        ('config file not found', 'train.py', [os.path.join(d, 'nope.py')] + w, ['nope.py', 'not found']),
        ('unsupported config extension', 'train.py', [os.path.join(CONFIGS, 'wrong_ext.txt')] + w,
         ['wrong_ext.txt']),
        ('malformed JSON', 'train.py', [os.path.join(CONFIGS, 'bad.json')] + w, ['bad.json']),
        ('YAML with a python tag', 'train.py',
         [write(d, 'evil.yaml', f"model: !!python/object/apply:os.makedirs ['{d}/pwned']\n")] + w,
         ['evil.yaml', 'python/object']),
        ('unknown hook', 'train.py', [os.path.join(E2E, 'unknown_hook.py')] + w,
         ['hooks[1].type', "Did you mean 'AccuracyHook'"]),
        ('custom import missing', 'train.py', [os.path.join(E2E, 'missing_import.py')] + w,
         ['no_such_module_for_tests']),
        ('unknown loss', 'train.py', [TINY, '--cfg-options', 'loss.type=CrossEntropyLos'] + w,
         ['CrossEntropyLos', "Did you mean 'CrossEntropyLoss'"]),
        ('unknown dataloader option', 'train.py',
         [TINY, '--cfg-options', 'data.train.dataloader.batchsize=4'] + w,
         ['batchsize', "did you mean 'batch_size'"]),
        ('bad amp value', 'train.py', [TINY, '--cfg-options', 'amp=fp8'] + w, ['amp', 'fp8']),
        ('negative clip_grad_norm', 'train.py', [TINY, '--cfg-options', 'clip_grad_norm=-1'] + w,
         ['clip_grad_norm', '-1']),
        ('torch launcher without its environment', 'train.py', [TINY, '--launcher', 'torch'] + w,
         ['RANK', 'torchrun']),
        ('test: corrupt checkpoint', 'test.py', [TINY, corrupt], ['corrupt.pt', 'cannot read checkpoint']),
        ('test: missing checkpoint', 'test.py', [TINY, os.path.join(d, 'nope.pt')], ['nope.pt', 'not found']),
        ('test: checkpoint of another model', 'test.py', [other_model, latest], ['does not fit the model']),
        ('test: checkpoint that would run code', 'test.py', [TINY, os.path.join(d, 'evil.pt')],
         ['evil.pt', 'refused', 'makedirs']),
    ]


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    good = str(tmp_path_factory.mktemp('good'))
    args = [TINY, '--work-dir', good, '--no-progress', '--cfg-options', 'max_epochs=1']
    proc = tool('train.py', args, ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = snapshot(good)
    d = str(tmp_path_factory.mktemp('bad'))
    cases = build_cases(d, good)

    # One run per core: the 30 s limit is per run, and more runs than cores would share them.
    outcomes = dict(zip([c[0] for c in cases], run_forked(cases, d, min(4, os.cpu_count() or 2))))
    for _ in range(10):  # the cases share the good work dir, which admits one training at a time
        again = [c for c in cases if not isinstance(outcomes[c[0]], subprocess.TimeoutExpired)
                 and 'another training (pid' in outcomes[c[0]].stderr]
        if not again:
            break
        outcomes.update(zip([c[0] for c in again], run_forked(again, d, 1)))
    debug = tool('train.py', [os.path.join(E2E, 'unknown_model.py'), '--work-dir', good, '--debug'], d)
    return dict(cases=cases, outcomes=outcomes, before=before, after=snapshot(good), good=good, d=d,
                debug=debug)


def test_each_malformed_input_fails_clearly(results):
    failures = []
    assert len(results['cases']) >= 25
    for name, which, args, expected in results['cases']:
        proc = results['outcomes'][name]
        if isinstance(proc, subprocess.TimeoutExpired):
            failures.append(f'{name}: did not end within {CASE_TIMEOUT} s')
            continue
        err = proc.stderr
        problems = []
        if proc.returncode == 0:
            problems.append('exit status 0')
        if 'Traceback' in err:
            problems.append('traceback shown')
        missing = [s for s in expected if s.lower() not in err.lower()]
        if missing:
            problems.append(f'message lacks {missing}')
        if '--debug' not in err and 'usage:' not in err:
            problems.append('no hint about --debug')
        if problems:
            command = f'{which} {" ".join(args)}'
            failures.append(f'{name} ({command}): {"; ".join(problems)}\n  stderr: {err[-800:]}')
    assert not failures, '\n'.join(failures)


def test_no_bad_input_changes_the_earlier_good_output(results):
    before, after = results['before'], results['after']
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f'files of the good run changed or vanished: {changed}'
    assert not os.path.exists(os.path.join(results['d'], 'pwned'))  # neither the YAML nor the pickle ran code


def test_debug_shows_the_traceback(results):
    proc = results['debug']
    assert proc.returncode != 0 and 'Traceback (most recent call last)' in proc.stderr
