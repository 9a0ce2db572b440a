"""DictAction: --cfg-options KEY=VALUE parsing."""
import argparse
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colossal_runner.config import DictAction
from colossal_runner.config.dict_action import parse_value


def make_parser(**kwargs):
    parser = argparse.ArgumentParser(prog='prog', exit_on_error=False)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, **kwargs)
    return parser


def parse(*tokens):
    return make_parser().parse_args(['--cfg-options', *tokens]).cfg_options


@pytest.mark.parametrize('text, expected', [
    ('1', 1), ('-3', -3), ('1_000', 1000), ('1e-3', 1e-3), ('0.5', 0.5),
    ('true', True), ('FALSE', False), ('True', True), ('None', None),
    ('none', 'none'), ('abc', 'abc'), ('path/to/x.pt', 'path/to/x.pt'), ('', ''),
    ('[a,b]', ['a', 'b']), ('(1,2)', (1, 2)), ('[1, 2.5, true]', [1, 2.5, True]),
    ('[(1,2),[3,[4]]]', [(1, 2), [3, [4]]]), ('a,b', ['a', 'b']), ('1,2,', [1, 2]),
    ('[]', []), ('()', ()), ('(a)', ('a',)), ('[a,]', ['a']),
    ('a b', 'a b'), ('"a b"', 'a b'), ("'a, b'", 'a, b'), ('["x y", z]', ['x y', 'z']),
    ("'1'", '1'), ("it's", "it's"), ('[ a b , c ]', ['a b', 'c']),
])
def test_values(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_tokens_become_a_dict_and_repeated_flags_accumulate():
    parser = make_parser()
    args = parser.parse_args(['--cfg-options', 'optimizer.lr=0.01', 'hooks.0.interval=5',
                              '--cfg-options', 'name=my run', 'optimizer.lr=0.02'])
    assert args.cfg_options == {'optimizer.lr': 0.02, 'hooks.0.interval': 5, 'name': 'my run'}


def test_value_may_contain_equals_and_default_dict_is_not_mutated():
    default = {'a': 1}
    parser = make_parser(default=default)
    assert parser.parse_args(['--cfg-options', 'expr=x=1']).cfg_options == {'a': 1, 'expr': 'x=1'}
    assert default == {'a': 1}
    assert parser.parse_args([]).cfg_options == {'a': 1}


def test_token_without_equals_is_a_clear_argparse_error():
    with pytest.raises(argparse.ArgumentError, match=r"argument --cfg-options: invalid token 'lr': expected "
                                                     r'KEY=VALUE'):
        parse('a=1', 'lr')
    with pytest.raises(argparse.ArgumentError, match=r"invalid token '=3'"):
        parse('=3')


@pytest.mark.parametrize('value, pattern', [
    ('[a', r"missing '\]'"), ('a]', r"unexpected '\]'"), ('[a]b', r"unexpected 'b'"),
    ('[a,,b]', 'empty item'), ("'abc", 'missing closing'), ('(a]', r"unexpected '\]'.*expected '\)'"),
])
def test_malformed_values_name_the_token(value, pattern):
    token = re.escape(repr(f'k={value}'))
    with pytest.raises(argparse.ArgumentError, match=rf'cannot parse the value of {token}: .*{pattern}'):
        parse(f'k={value}')


def test_argparse_exits_with_usage_on_a_bad_token(capsys):
    parser = argparse.ArgumentParser(prog='prog')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(['--cfg-options', 'oops'])
    assert info.value.code == 2
    assert "invalid token 'oops'" in capsys.readouterr().err


words = st.text(alphabet=st.sampled_from('abcXYZ_-/.: '), min_size=1, max_size=6).filter(
    lambda w: w.strip() == w and w.lower() not in ('true', 'false', 'none', 'nan', 'inf', 'infinity'))
items = st.recursive(st.one_of(st.integers(-100, 100), words),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.lists(inner, max_size=3).map(tuple)), max_leaves=8)


def render(value):
    if isinstance(value, list):
        return '[' + ','.join(render(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ','.join(render(v) for v in value) + (',' if len(value) == 1 else '') + ')'
    return str(value)


@settings(max_examples=80, deadline=None)
@given(items)
def test_written_values_parse_back_property(value):
    text = render(value)
    try:
        float(text)
        return  # bare words that happen to be numbers parse as numbers, by design
    except ValueError:
        pass
    parsed = parse_value(text)
    if isinstance(value, (list, tuple)) or not isinstance(value, str):
        assert parsed == value and type(parsed) is type(value)
    else:
        assert parsed == value
