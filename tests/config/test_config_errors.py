"""ConfigError, key paths and the one-line error helper for tools."""
import pickle

import pytest

from colossal_runner.config import ConfigError, config_error_exit, format_config_error, format_key_path


def test_key_paths_read_like_python():
    assert format_key_path(['hooks', 2, 'type']) == 'hooks[2].type'
    assert format_key_path(['odd', 'with-dash', 'class', 'ok']) == "odd['with-dash']['class'].ok"
    assert format_key_path([]) == ''


def test_config_error_names_file_and_key_and_pickles():
    err = ConfigError('unknown type', filename='a.py', key_path=['hooks', 2, 'type'])
    assert isinstance(err, ValueError)
    assert str(err) == 'config a.py, key hooks[2].type: unknown type'
    assert (err.filename, err.key_path, err.message) == ('a.py', 'hooks[2].type', 'unknown type')
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.key_path == 'hooks[2].type'
    assert str(ConfigError('plain')) == 'plain'


def test_format_config_error_is_one_line():
    try:
        compile('a = (\n', '/x/cfg.py', 'exec')
    except SyntaxError as exc:
        assert format_config_error(exc).startswith('/x/cfg.py:1: syntax error: ')
    exc = KeyError('nope')
    exc.add_note('while loading x.py')
    assert format_config_error(exc) == "KeyError: 'nope' (while loading x.py)"  # a key keeps its quotes
    # a sentence does not get repr's quotes and escapes: launcher "torch" needs ['RANK'], as written
    sentence = KeyError('launcher "torch" needs the environment variables [\'RANK\'], but they are not set')
    assert format_config_error(sentence) == ('KeyError: launcher "torch" needs the environment variables '
                                             "['RANK'], but they are not set")
    assert '\n' not in format_config_error(ConfigError('two\nlines', 'f.py'))


def test_notes_in_their_own_parentheses_are_not_wrapped_twice():
    exc = RuntimeError('boom')
    exc.add_note('(raised in FailingHook.after_train_iter)')
    exc.add_note('config a.py, key hooks[1]')
    exc.add_note('(one) and (two)')  # parentheses of its own, not around all of it
    assert format_config_error(exc) == ('RuntimeError: boom (raised in FailingHook.after_train_iter; '
                                        'config a.py, key hooks[1]; (one) and (two))')


def test_config_error_exit_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        with config_error_exit(prog='tool.py'):
            raise ConfigError('bad value', 'c.py', 'a.b')
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert err.startswith('tool.py: error: config c.py, key a.b: bad value') and '--debug' in err


def test_config_error_exit_with_debug_re_raises_unchanged():
    with pytest.raises(ConfigError, match='bad value'):
        with config_error_exit(debug=True):
            raise ConfigError('bad value')
    with config_error_exit():
        pass  # no error, no exit
