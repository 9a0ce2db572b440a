"""Config.fromfile / fromstring: formats, _base_ inheritance, substitutions, custom_imports, errors."""
import os.path as osp
import sys
import warnings

import pytest

from colossal_runner.config import Config, ConfigDict, ConfigError

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'config')


def path(name):
    return osp.join(DATA, name)


@pytest.mark.parametrize('name', ['plain.json', 'plain.yaml', 'plain.yml'])
def test_json_and_yaml_files_load_as_utf8(name):
    cfg = Config.fromfile(path(name))
    assert cfg.lr == 0.1
    assert cfg.name == 'Grüße'
    assert cfg.nested.a == [1, 2] and cfg.nested.b is None and cfg.nested.c is True
    assert isinstance(cfg.nested, ConfigDict)
    assert cfg.filename == path(name)
    assert 'Grüße' in cfg.text


def test_py_file_keeps_data_and_drops_modules_functions_and_dunders():
    cfg = Config.fromfile(path('plain.py'))
    assert cfg.lr == pytest.approx(0.1)
    assert cfg.name == osp.join('a', 'b')
    assert cfg.unicode_text == 'Grüße, 世界'
    assert cfg._private == 1
    for dropped in ('osp', 'helper', '__dunder', '__file__', '__builtins__'):
        assert dropped not in cfg
    assert cfg.nested.a[2].b == (3, 4)
    assert cfg.nested.c['not-an-identifier'] == 5 and cfg.nested.c[7] == 'int key'


def test_base_inheritance_across_formats_with_delete_and_references():
    cfg = Config.fromfile(path('child.py'))
    # dicts merge recursively, other values are replaced
    assert cfg.optimizer == dict(type='SGD', lr=0.01, momentum=0.9)
    assert cfg.max_epochs == 8
    # _delete_ replaces the base dict instead of merging into it, and is not kept
    assert cfg.model.act == dict(type='GELU')
    assert cfg.model.hidden == [32, 16]
    # values from the yaml and json bases
    assert cfg.hooks[1].interval == 2 and cfg.log.name == 'base yaml'
    assert cfg.data.dataset.type == 'Digits' and cfg.seed == 3
    # {{ _base_.x }} references, including list indices
    assert cfg.batch == 16 and cfg.first_hook == 'LossHook' and cfg.hidden == [32, 16]
    assert cfg.extra == 'only in child'
    # the text holds every file, bases first
    text = cfg.text
    assert text.index('base_model.py') < text.index('base_runtime.yaml') < text.index('child.py')


def test_recursive_bases_and_a_single_base_string():
    cfg = Config.fromfile(path('grandchild.yaml'))
    assert cfg.max_epochs == 12
    assert cfg.data.batch_size == 32 and cfg.data.num_workers == 0
    assert cfg.batch == 16  # resolved in child.py against its own base
    single = Config.fromfile(path('single_base.json'))
    assert single.optimizer.lr == 0.5 and single.optimizer.momentum == 0.9
    assert '_base_' not in single


def test_predefined_variables_can_be_turned_off():
    cfg = Config.fromfile(path('predefined.py'))
    assert cfg.dirname == DATA.replace('\\', '/')
    assert (cfg.basename, cfg.stem, cfg.ext) == ('predefined.py', 'predefined', '.py')
    assert cfg.work_dir == './work_dirs/predefined'
    # text is the source as written
    assert "work_dir = './work_dirs/{{ fileBasenameNoExtension }}'" in cfg.text
    raw = Config.fromfile(path('predefined.py'), use_predefined_variables=False)
    assert raw.stem == '{{ fileBasenameNoExtension }}'


def test_fromstring_matches_fromfile_and_accepts_format_without_dot():
    for name, fmt in [('plain.json', 'json'), ('plain.yaml', '.yaml'), ('plain.py', '.py')]:
        with open(path(name), encoding='utf-8') as f:
            from_text = Config.fromstring(f.read(), fmt)
        assert from_text.to_dict() == Config.fromfile(path(name)).to_dict()
        assert from_text.filename is None
    with pytest.warns(UserWarning, match='.py config'):
        Config.fromstring('a: "dict(x=1)"', '.yaml')
    with pytest.raises(ConfigError, match=r"unsupported config format '\.toml'.*\.py, \.json, \.yaml, \.yml"):
        Config.fromstring('a = 1', 'toml')


def test_custom_imports_imports_only_what_it_names(monkeypatch):
    monkeypatch.syspath_prepend(DATA)
    monkeypatch.delitem(sys.modules, 'cr_test_custom_module', raising=False)
    Config.fromfile(path('custom_imports_ok.py'), import_custom_modules=False)
    assert 'cr_test_custom_module' not in sys.modules
    cfg = Config.fromfile(path('custom_imports_ok.py'))
    assert sys.modules['cr_test_custom_module'].IMPORTED is True
    assert cfg.value == 1


def test_custom_imports_failure_raises_the_import_error_with_a_note():
    with pytest.raises(ModuleNotFoundError, match='cr_test_no_such_module') as info:
        Config.fromfile(path('custom_imports_missing.py'))
    assert any('custom_imports_missing.py' in note and 'allow_failed_imports' in note
               for note in info.value.__notes__)
    with pytest.warns(UserWarning, match='cr_test_no_such_module.*allow_failed_imports=True'):
        Config.fromfile(path('custom_imports_allowed.py'))


def test_custom_imports_find_a_module_in_the_working_directory(tmp_path, monkeypatch):
    # As under `python tools/train.py` or `colossal-train`: sys.path holds the script's folder,
    # not the working directory the user runs from.
    work = tmp_path / 'project'
    work.mkdir()
    (work / 'cr_cwd_module.py').write_text('IMPORTED = True\n', encoding='utf-8')
    (tmp_path / 'configs').mkdir()
    cfg_file = tmp_path / 'configs' / 'uses_cwd.py'
    cfg_file.write_text("custom_imports = dict(imports=['cr_cwd_module'])\n", encoding='utf-8')
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, 'path', [p for p in sys.path if p not in ('', '.', str(work))])
    monkeypatch.delitem(sys.modules, 'cr_cwd_module', raising=False)
    Config.fromfile(cfg_file)
    assert sys.modules['cr_cwd_module'].IMPORTED is True
    assert sys.path[-1] == str(work)  # after everything else: it never hides an installed package


def test_custom_imports_failure_names_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModuleNotFoundError) as info:
        Config.fromfile(path('custom_imports_missing.py'))
    assert any(f'working directory ({tmp_path})' in note for note in info.value.__notes__)


def test_custom_imports_shape_is_checked(tmp_path):
    bad = tmp_path / 'bad_imports.py'
    bad.write_text("custom_imports = dict(imports=['os', 3])\n")
    with pytest.raises(ConfigError, match=r'custom_imports\.imports\[1\].*expected a module name.*got 3'):
        Config.fromfile(bad)
    bad.write_text("custom_imports = dict(modules=['os'])\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['modules'\]"):
        Config.fromfile(bad)


# ---------------------------------------------------------------- errors

def test_missing_file_names_the_path():
    with pytest.raises(FileNotFoundError, match='no_such_config.py'):
        Config.fromfile(path('no_such_config.py'))


def test_missing_base_names_the_base_and_the_child():
    pattern = r"missing_base\.py: _base_ file './bases/does_not_exist\.py'"
    with pytest.raises(FileNotFoundError, match=pattern):
        Config.fromfile(path('missing_base.py'))


def test_unsupported_extension_lists_the_allowed_ones():
    pattern = r"'\.txt'.*wrong_ext\.txt.*expected one of \.py, \.json, \.yaml, \.yml"
    with pytest.raises(ConfigError, match=pattern):
        Config.fromfile(path('wrong_ext.txt'))


def test_syntax_error_names_file_and_line():
    with pytest.raises(SyntaxError) as info:
        Config.fromfile(path('syntax_error.py'))
    assert info.value.filename == path('syntax_error.py')
    assert info.value.lineno == 2


def test_runtime_error_in_py_config_keeps_its_type_and_names_the_file():
    with pytest.raises(NameError, match='undefined_name') as info:
        Config.fromfile(path('runtime_error.py'))
    assert any('runtime_error.py' in note for note in info.value.__notes__)
    # the traceback reaches into the config file itself
    files = []
    tb = info.value.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert path('runtime_error.py') in files


@pytest.mark.parametrize('name, pattern', [
    ('bad.yaml', r'bad\.yaml: invalid YAML at line 2'),
    ('bad.json', r'bad\.json: invalid JSON at line 2'),
    ('duplicate.json', r"key 'a' appears twice"),
    ('top_list.yaml', r'top level must be a mapping.*got a list'),
])
def test_bad_json_and_yaml_name_file_and_line(name, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        Config.fromfile(path(name))
    assert info.value.filename == path(name)


def test_base_cycle_is_detected_and_the_chain_named():
    with pytest.raises(ConfigError, match=r'cycle: .*a\.py -> .*b\.py -> .*c\.yaml -> .*a\.py'):
        Config.fromfile(path('cycle/a.py'))
    with pytest.raises(ConfigError, match=r'cycle: .*self_cycle\.py -> .*self_cycle\.py'):
        Config.fromfile(path('self_cycle.py'))


def test_same_key_in_two_bases_is_an_error_naming_both():
    pattern = r"'shared' is defined in two _base_ files, .*dup_a\.py and .*dup_b\.py"
    with pytest.raises(ConfigError, match=pattern) as info:
        Config.fromfile(path('duplicate_bases.py'))
    assert info.value.key_path == 'shared'


def test_a_base_listed_twice_is_named_as_such(tmp_path):
    (tmp_path / 'base.py').write_text('model = dict(type="MLP")\n', encoding='utf-8')
    (tmp_path / 'child.py').write_text("_base_ = ['base.py', './base.py']\n", encoding='utf-8')
    with pytest.raises(ConfigError) as info:
        Config.fromfile(tmp_path / 'child.py')
    assert info.value.message == (f"_base_ lists the file {tmp_path / 'base.py'} twice ('./base.py'); list "
                                  f'each base file once.')
    assert info.value.key_path == '_base_'


def test_unknown_base_reference_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"_base_\.optimizer\.lrr.*Did you mean 'lr'") as info:
        Config.fromfile(path('bad_base_ref.py'))
    assert info.value.key_path == 'lr' and info.value.filename == path('bad_base_ref.py')


def test_reserved_keys_are_rejected():
    with pytest.raises(ConfigError, match=r"'filename' is a reserved name"):
        Config.fromfile(path('reserved_key.py'))
    with pytest.raises(ConfigError, match=r"'pretty_text' is a reserved name"):
        Config(dict(pretty_text=1))
    cfg = Config(dict(a=1))
    with pytest.raises(ConfigError, match=r"'text' is a reserved name"):
        cfg.text = 'x'
    with pytest.raises(ConfigError, match=r"'filename' is a reserved name"):
        cfg.merge_from_dict({'filename': 'x'})


def test_dict_over_a_scalar_base_value_names_the_key_path_and_the_fix():
    with pytest.raises(ConfigError, match=r'key optimizer\.lr: .*existing float value 0\.1.*_delete_=True'):
        Config.fromfile(path('dict_over_scalar.py'))


def test_bad_base_value_type(tmp_path):
    bad = tmp_path / 'bad_base.py'
    bad.write_text('_base_ = 3\n')
    with pytest.raises(ConfigError, match=r'_base_ must be a path or a list of paths.*got 3'):
        Config.fromfile(bad)


def test_a_dict_may_replace_a_none_base_value(tmp_path):
    (tmp_path / 'base.py').write_text('lr_config = None\n')
    (tmp_path / 'child.py').write_text("_base_ = 'base.py'\nlr_config = dict(policy='step')\n")
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert Config.fromfile(tmp_path / 'child.py').lr_config.policy == 'step'


def test_a_utf8_bom_is_tolerated(tmp_path):
    bom = tmp_path / 'bom.py'
    bom.write_bytes('\ufeffname = "Grüße"\n'.encode('utf-8'))
    assert Config.fromfile(bom).name == 'Grüße'


def test_every_shipped_config_has_its_own_work_directory():
    """Two configs sharing a work directory (configs/digits/cnn.py and configs/mnist/cnn.py both
    defaulted to work_dirs/cnn) make --resume and tools/test.py read the other run's checkpoints.
    File names are unique instead of work_dir pinned, which a config built on one would inherit."""
    import glob
    import os

    from colossal_runner.initialize import default_work_dir

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    seen = {}
    for path in sorted(glob.glob(os.path.join(root, 'configs', '*', '*.py'))):
        if os.sep + '_base_' + os.sep in path:
            continue
        cfg = Config.fromfile(path)
        assert cfg.get('work_dir', None) is None, f'{path} pins work_dir (inherited by configs on it)'
        work_dir = default_work_dir(cfg)
        assert work_dir not in seen, f'{path} and {seen[work_dir]} both write to {work_dir}'
        seen[work_dir] = path
    assert len(seen) >= 7


def _write(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding='utf-8')
    return str(tmp_path / next(iter(files)))


@pytest.mark.parametrize('source, error, line', [
    ('a = 1\nb = 1 / 0\n', ZeroDivisionError, 'line 2: b = 1 / 0'),
    ('import cr_no_such_module_zz\n', ImportError, 'line 1: import cr_no_such_module_zz'),
    ('def f():\n    return {}["k"]\n\nx = 1\ny = f()\n', KeyError, 'line 2: return {}["k"]'),
])
def test_a_runtime_error_in_a_py_config_names_the_line_that_raised(tmp_path, source, error, line):
    cfg_file = _write(tmp_path, {'c.py': source})
    with pytest.raises(error) as info:
        Config.fromfile(cfg_file)
    assert info.value.__notes__[0] == f'raised while executing config {cfg_file}, {line}'


def test_a_runtime_error_line_shows_a_base_reference_as_written(tmp_path):
    cfg_file = _write(tmp_path, {'c.py': "_base_ = './b.py'\nx = [{{ _base_.a }}][0] + 1 / 0\n",
                                 'b.py': 'a = 1\n'})
    with pytest.raises(ZeroDivisionError) as info:
        Config.fromfile(cfg_file)
    assert info.value.__notes__[0].endswith('line 2: x = [{{ _base_.a }}][0] + 1 / 0')


@pytest.mark.parametrize('bases', ["['./b.py']", "'./b.py'"])
def test_mmengine_base_attribute_access_gets_a_hint(tmp_path, bases):
    cfg_file = _write(tmp_path, {'c.py': f'_base_ = {bases}\nmodel = _base_.model\n',
                                 'b.py': "model = dict(type='MLP')\n"})
    with pytest.raises(AttributeError) as info:
        Config.fromfile(cfg_file)
    notes = info.value.__notes__
    assert notes[0].endswith('line 2: model = _base_.model')
    assert "mmengine's `_base_.model` is not supported" in notes[1]
    assert 'write {{ _base_.model }}' in notes[1] and 'model = dict(key=new_value)' in notes[1]


def test_other_attribute_errors_get_no_base_hint(tmp_path):
    cfg_file = _write(tmp_path, {'c.py': "_base_ = './b.py'\nx = (1).real.nope\n", 'b.py': 'a = 1\n'})
    with pytest.raises(AttributeError) as info:
        Config.fromfile(cfg_file)
    assert len(info.value.__notes__) == 1


@pytest.mark.parametrize('name, text', [('c.py', "data_root = '{{$DATA_ROOT:/data/x}}'\n"),
                                        ('c.yaml', "data_root: '{{ $DATA_ROOT:/data/x }}'\n")])
def test_mmengine_environment_variables_warn_that_they_are_not_supported(tmp_path, name, text):
    cfg_file = _write(tmp_path, {name: text})
    with pytest.warns(UserWarning, match=r"config .*c\.(py|yaml): mmengine's \{\{\$NAME:default\}\} "
                                         r'environment-variable syntax is not supported'):
        cfg = Config.fromfile(cfg_file)
    assert '$DATA_ROOT' in cfg.data_root  # left as written


def _diamond_error(tmp_path, b='', c='', d=''):
    """Load a.py, which inherits b.py and c.py, which both inherit d.py (each with the text given
    after its _base_ line): the ConfigError, and the paths of b.py, c.py and d.py."""
    cfg_file = _write(tmp_path, {'a.py': "_base_ = ['./b.py', './c.py']\n",
                                 'b.py': "_base_ = './d.py'\n" + b, 'c.py': "_base_ = './d.py'\n" + c,
                                 'd.py': d})
    with pytest.raises(ConfigError) as info:
        Config.fromfile(cfg_file)
    return (info.value, *(str(tmp_path / n) for n in ('b.py', 'c.py', 'd.py')))


def test_a_key_from_a_file_two_bases_share_names_that_file_and_both_paths(tmp_path):
    error, b, c, d = _diamond_error(tmp_path, b='model = dict(a=1)\n', c='data = dict(a=1)\n',
                                    d='runtime = dict(seed=1)\n')
    assert error.key_path == 'runtime'
    assert error.message == (f"'runtime' is defined in {d}, which two _base_ files bring in: {b} -> {d} "
                             f'and {c} -> {d}; a key may come from only one base. Let only one of {b} '
                             f'and {c} inherit {d}.')


def test_a_diamond_is_named_as_one_also_when_a_middle_base_sets_the_shared_key(tmp_path):
    """b.py merges into d.py's model: removing it from b.py would not help, so it is the diamond."""
    error, b, c, d = _diamond_error(tmp_path, b='model = dict(hidden=[8])\n',
                                    d='model = dict(hidden=[4], depth=2)\n')
    assert error.message.endswith(f'Let only one of {b} and {c} inherit {d}.')


def test_a_diamond_whose_middle_bases_both_set_the_key_says_both_fixes(tmp_path):
    error, b, c, d = _diamond_error(tmp_path, b='model = dict(hidden=[8])\n', c='model = dict(hidden=[16])\n',
                                    d='model = dict(hidden=[4], depth=2)\n')
    assert error.message.startswith(f"'model' is set in both {b} and {c}, which also both bring it in "
                                    f'from {d}')
    assert error.message.endswith(f'Set it in one of them, and let only one of {b} and {c} inherit {d}.')


def test_a_key_two_bases_inherit_from_different_files_names_the_defining_files(tmp_path):
    cfg_file = _write(tmp_path, {'a.py': "_base_ = ['./b.py', './c.py']\n",
                                 'b.py': "_base_ = './d.py'\n", 'c.py': 'runtime = 2\n',
                                 'd.py': 'runtime = 1\n'})
    with pytest.raises(ConfigError) as info:
        Config.fromfile(cfg_file)
    b, c, d = (str(tmp_path / n) for n in ('b.py', 'c.py', 'd.py'))
    assert info.value.message.startswith(f"'runtime' is defined in two _base_ files, {d} (through {b} -> "
                                         f'{d}) and {c};')


def test_a_dict_over_a_base_list_in_a_file_says_to_write_the_whole_list(tmp_path):
    cfg_file = _write(tmp_path, {'c.py': "_base_ = './b.py'\nhooks = {'0': dict(interval=5)}\n",
                                 'b.py': "hooks = [dict(type='A', interval=1)]\n"})
    with pytest.raises(ConfigError) as info:
        Config.fromfile(cfg_file)
    message = info.value.message
    assert info.value.key_path == 'hooks'
    assert 'a config file cannot change single items of a base list; write the whole list here' in message
    assert '_delete_' not in message and 'allow list keys' not in message
