"""tools/print_config.py, run as a subprocess."""
import os
import os.path as osp
import subprocess
import sys

from colossal_runner.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA = osp.join(ROOT, 'tests', 'data', 'config')


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'print_config.py'), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_prints_merged_config_with_accumulated_options(tmp_path):
    proc = run(osp.join(DATA, 'child.py'), '--cfg-options', 'optimizer.lr=0.5', 'log.name=a b',
               '--cfg-options', 'hooks.1.interval=7', 'model.hidden=[8,4]')
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / 'printed.py'
    out.write_text(proc.stdout, encoding='utf-8')
    cfg = Config.fromfile(out)
    expected = Config.fromfile(osp.join(DATA, 'child.py'))
    expected.merge_from_dict({'optimizer.lr': 0.5, 'log.name': 'a b', 'hooks.1.interval': 7,
                              'model.hidden': [8, 4]})
    assert cfg.to_dict() == expected.to_dict()
    assert cfg.log.name == 'a b' and cfg.hooks[1].interval == 7


def test_bad_configs_exit_2_with_one_line_and_debug_shows_the_traceback():
    cases = [
        (['syntax_error.py'], 'syntax_error.py:2: syntax error'),
        (['cycle/a.py'], 'cycle'),
        (['nope.py'], 'config file not found'),
        (['child.py', '--cfg-options', 'hooks.5.x=1'], 'key hooks[5]: index 5 is out of range'),
    ]
    for args, needle in cases:
        proc = run(osp.join(DATA, args[0]), *args[1:])
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ''
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and 'Traceback' not in proc.stderr, proc.stderr
    proc = run(osp.join(DATA, 'runtime_error.py'), '--debug')
    assert proc.returncode != 0 and 'Traceback' in proc.stderr and 'undefined_name' in proc.stderr


def test_bad_option_token_is_an_argparse_error():
    proc = run(osp.join(DATA, 'child.py'), '--cfg-options', 'oops')
    assert proc.returncode == 2
    assert "invalid token 'oops': expected KEY=VALUE" in proc.stderr


def test_a_value_without_config_text_is_one_clear_line(tmp_path):
    config = tmp_path / 'with_class.py'
    config.write_text('from torch import nn\nloss = dict(type=nn.CrossEntropyLoss)\n', encoding='utf-8')
    proc = run(str(config))
    assert proc.returncode == 2 and proc.stdout == ''
    assert 'YapfError' not in proc.stderr and 'Traceback' not in proc.stderr
    assert (f'config {config}, key loss.type: a class (torch.nn.modules.loss.CrossEntropyLoss) has no config '
            f'text') in proc.stderr


def test_custom_imports_are_imported_after_the_cfg_options_are_merged(tmp_path):
    config = tmp_path / 'needs_missing.py'
    config.write_text("custom_imports = dict(imports=['cr_no_such_module_pc'])\nlr = 0.1\n", encoding='utf-8')
    proc = run(str(config))  # the import is still made
    assert proc.returncode == 2 and "No module named 'cr_no_such_module_pc'" in proc.stderr, proc.stderr
    proc = run(str(config), '--cfg-options', 'custom_imports.imports=[]')
    assert proc.returncode == 0, proc.stderr
    assert Config.fromstring(proc.stdout, '.py').custom_imports.imports == []
    proc = run(str(config), '--cfg-options', 'custom_imports.allow_failed_imports=True')
    assert proc.returncode == 0, proc.stderr
    assert "could not import 'cr_no_such_module_pc'" in proc.stderr  # a warning now
