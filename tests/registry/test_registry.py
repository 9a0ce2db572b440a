import sys

import pytest
import torch

from colossal_runner.registry import (
    DATASETS,
    HOOKS,
    LAYERS,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    Registry,
    build_from_cfg,
)


def make_registry():
    reg = Registry('widget', scope='test')

    @reg.register_module()
    class Gear:
        def __init__(self, teeth=8, size=1.0):
            self.teeth = teeth
            self.size = size

    return reg, Gear


def test_register_as_decorator_and_build():
    reg, Gear = make_registry()
    assert 'Gear' in reg and len(reg) == 1
    assert reg.get('Gear') is Gear
    gear = reg.build(dict(type='Gear', teeth=12))
    assert isinstance(gear, Gear) and gear.teeth == 12 and gear.size == 1.0
    assert 'Gear' in repr(reg) and reg.module_dict == {'Gear': Gear}


def test_register_as_call_with_aliases():
    reg = Registry('widget', scope='test')

    def make_pair(a, b=2):
        return (a, b)

    reg.register_module(name=['pair', 'Pair'], module=make_pair)
    assert reg.get('pair') is make_pair and reg.get('Pair') is make_pair
    assert build_from_cfg(dict(type='pair', a=1), reg) == (1, 2)


def test_default_args_fill_only_missing_keys():
    reg, Gear = make_registry()
    gear = build_from_cfg(dict(type='Gear', teeth=3), reg, default_args=dict(teeth=99, size=2.5))
    assert gear.teeth == 3 and gear.size == 2.5
    # type may come from default_args too
    gear = build_from_cfg(dict(teeth=4), reg, default_args=dict(type='Gear'))
    assert gear.teeth == 4


def test_type_may_be_class_or_function():
    reg, Gear = make_registry()
    assert build_from_cfg(dict(type=Gear, teeth=5), reg).teeth == 5
    assert build_from_cfg(dict(type=lambda x: x * 2, x=4), reg) == 8


def test_duplicate_name_names_first_module():
    reg, Gear = make_registry()
    with pytest.raises(KeyError, match=r"'Gear' is already registered.*test_registry"):
        reg.register_module(name='Gear', module=dict)
    reg.register_module(name='Gear', module=dict, force=True)
    assert reg.get('Gear') is dict


def test_unknown_type_suggests_closest_and_how_to_register():
    reg, _ = make_registry()
    with pytest.raises(KeyError) as info:
        build_from_cfg(dict(type='Gaer'), reg)
    msg = str(info.value)
    assert "'Gaer' is not in the widget registry" in msg
    assert "Did you mean 'Gear'" in msg
    assert 'register_module()' in msg and 'custom_imports' in msg


def test_unknown_optimizer_suggests_torch_name():
    with pytest.raises(KeyError, match="Did you mean 'SGD'"):
        build_from_cfg(dict(type='SDG', lr=0.1), OPTIMIZERS)


def test_constructor_error_keeps_type_and_names_what_was_built():
    reg = Registry('widget', scope='test')

    @reg.register_module()
    class Broken:
        def __init__(self):
            raise ZeroDivisionError('inner failure')

    with pytest.raises(ZeroDivisionError, match='inner failure') as info:
        reg.build(dict(type='Broken'))
    assert any("building 'Broken'" in note for note in info.value.__notes__)


def test_bad_cfg_shapes():
    reg, _ = make_registry()
    with pytest.raises(TypeError, match='cfg must be a dict'):
        build_from_cfg(['Gear'], reg)
    with pytest.raises(KeyError, match='must contain the key "type"'):
        build_from_cfg(dict(teeth=1), reg)
    with pytest.raises(TypeError, match='type must be a str'):
        build_from_cfg(dict(type=3), reg)
    with pytest.raises(TypeError, match='only a class or a function'):
        reg.register_module(module=5)


def test_parent_child_scopes():
    parent = Registry('widget', scope='root')
    child = Registry('widget', parent=parent, scope='child')

    @parent.register_module()
    class Base:
        pass

    @child.register_module()
    class Leaf:
        pass

    assert child.parent is parent and parent.children == {'child': child}
    assert child.scope == 'child'
    assert child.get('Base') is Base  # falls back to the parent
    assert parent.get('child.Leaf') is Leaf  # scope.Name reaches a child
    assert child.get('root.Base') is Base
    assert parent.get('Leaf') is None
    assert child.build_func is parent.build_func


def test_scope_defaults_to_calling_package():
    assert OPTIMIZERS.scope == 'colossal_runner'


def test_fallbacks_to_torch_and_torchvision():
    model = torch.nn.Linear(2, 2)
    opt = build_from_cfg(dict(type='SGD', lr=0.1), OPTIMIZERS, dict(params=model.parameters()))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]['lr'] == 0.1
    assert isinstance(LOSSES.build(dict(type='CrossEntropyLoss')), torch.nn.CrossEntropyLoss)
    assert LAYERS.get('Conv2d') is torch.nn.Conv2d
    import torchvision
    assert MODELS.get('resnet18') is torchvision.models.resnet18
    assert DATASETS.get('MNIST') is torchvision.datasets.MNIST
    # Registering a name shadows the fall-back only in that registry.
    assert HOOKS.get('SGD') is None


def test_registering_shadows_fallback():
    reg = Registry('loss', scope='test', fallback='torch.nn')

    @reg.register_module(name='MSELoss')
    class MyMSE:
        pass

    assert reg.get('MSELoss') is MyMSE
    assert reg.get('L1Loss') is torch.nn.L1Loss


def test_non_string_key_is_a_clear_error():
    with pytest.raises(TypeError, match='registry keys are strings'):
        OPTIMIZERS.get(3)


def test_unknown_name_lists_what_the_fallback_module_offers():
    with pytest.raises(KeyError) as info:
        build_from_cfg(dict(type='Adamm', lr=0.1), OPTIMIZERS)
    msg = str(info.value)
    assert 'Registered here: []' not in msg and 'registered here: (none)' in msg
    listed = msg.split('from torch.optim: ')[1].split('. To use')[0].split(', ')
    assert {'SGD', 'Adam', 'AdamW'} <= set(listed)
    assert all(callable(getattr(torch.optim, name)) for name in listed)
    assert 'lr_scheduler' not in listed  # a module, not something to build


@pytest.fixture
def builtins_module(tmp_path, monkeypatch):
    """A registry whose built-ins module (not yet imported) registers 'Widget' in it."""
    (tmp_path / 'cr_reg_target.py').write_text('REGISTRY = None\n', encoding='utf-8')
    (tmp_path / 'cr_reg_builtins.py').write_text(
        'import cr_reg_target\n\n\n'
        '@cr_reg_target.REGISTRY.register_module()\n'
        'class Widget:\n'
        '    origin = "built-in"\n', encoding='utf-8')
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ('cr_reg_target', 'cr_reg_builtins'):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import cr_reg_target
    cr_reg_target.REGISTRY = Registry('widget', scope='test', builtins='cr_reg_builtins')
    return cr_reg_target.REGISTRY


def test_builtins_register_before_a_users_forced_replacement(builtins_module):
    reg = builtins_module
    assert 'cr_reg_builtins' not in sys.modules

    @reg.register_module(name='Widget', force=True)
    class MyWidget:
        origin = 'user'

    assert 'cr_reg_builtins' in sys.modules  # imported first, by the user's registration
    assert reg.get('Widget') is MyWidget
    import cr_reg_builtins  # noqa: F401 - importing it again changes nothing
    assert reg.get('Widget') is MyWidget


def test_builtins_are_there_for_a_lookup_and_a_clash_names_them(builtins_module):
    reg = builtins_module
    assert reg.get('Widget').origin == 'built-in' and len(reg) == 1
    with pytest.raises(KeyError, match=r"'Widget' is already registered.*cr_reg_builtins\.Widget.*"
                                       r"force=True"):
        reg.register_module(name='Widget', module=dict)


def test_register_module_without_parentheses_and_with_the_class_as_argument():
    """mmcv 1.x habits: @REG.register_module and REG.register_module(Cls)."""
    reg = Registry('widget', scope='test')

    @reg.register_module
    class Bare:
        pass

    def make(size=1):
        return size

    assert reg.register_module(make) is make
    assert reg.get('Bare') is Bare and reg.get('make') is make
    assert reg.build(dict(type='make', size=3)) == 3
    with pytest.raises(KeyError, match="'Bare' is already registered"):
        reg.register_module(Bare)
    reg.register_module(Bare, force=True)  # force still applies


def test_repr_shows_the_built_in_entries_before_any_lookup(builtins_module):
    assert 'cr_reg_builtins' not in sys.modules
    assert "items={'Widget': <class 'cr_reg_builtins.Widget'>}" in repr(builtins_module)


def test_a_child_registrys_unknown_name_lists_its_parents_names_too():
    child = Registry('model', parent=MODELS, scope='childtest')
    try:
        with pytest.raises(KeyError) as info:
            child.build(dict(type='MPL'))
        msg = info.value.args[0]
        assert "Did you mean 'MLP'?" in msg and 'registered here: (none)' in msg
        parents = "registered in the parent registry 'model' (scope colossal_runner): MLP, SimpleCNN, TinyGPT"
        assert parents in msg
        assert 'from torchvision.models: ' in msg  # the parent's fall-back is searched too
    finally:
        del MODELS._children['childtest']


def test_a_misspelled_constructor_argument_suggests_the_one_it_takes():
    reg, Gear = make_registry()
    with pytest.raises(TypeError) as info:
        reg.build(dict(type='Gear', teth=3))
    assert info.value.__notes__ == ["(raised while building 'Gear' from registry 'widget'; did you mean "
                                    "'teeth' for 'teth'? It takes: teeth, size)"]
    with pytest.raises(TypeError) as info:  # nothing close: no guess
        reg.build(dict(type='Gear', colour=3))
    assert info.value.__notes__ == ["(raised while building 'Gear' from registry 'widget')"]


def test_loss_and_optimizer_fallbacks_offer_losses_and_optimizers_only():
    with pytest.raises(KeyError) as info:
        LOSSES.build(dict(type='MSELos'))
    msg = info.value.args[0]
    assert "Did you mean 'MSELoss'" in msg and 'SELU' not in msg
    listed = msg.split('from torch.nn: ')[1].split('. To use')[0].split(', ')
    assert 'CrossEntropyLoss' in listed and 'MaxPool2d' not in listed and 'ReLU' not in listed
    assert LOSSES.get('ReLU') is None and LOSSES.get('L1Loss') is torch.nn.L1Loss
    with pytest.raises(KeyError) as info:
        OPTIMIZERS.build(dict(type='Optimzer'))
    listed = info.value.args[0].split('from torch.optim: ')[1].split('. To use')[0].split(', ')
    assert 'SGD' in listed and 'Optimizer' not in listed
    assert 'swap_in_optimizer_params_and_state' not in listed
    assert OPTIMIZERS.get('Optimizer') is None and OPTIMIZERS.get('AdamW') is torch.optim.AdamW


def test_model_and_sampler_fallbacks_offer_models_and_samplers_only():
    torchvision = pytest.importorskip('torchvision')
    models = MODELS._fallback_names()['torchvision.models']
    assert 'ResNet' in models and 'resnet18' in models and 'get_model' in models
    for not_a_model in ('GoogLeNetOutputs', 'InceptionOutputs', 'Weights', 'list_models', 'get_weight',
                        'get_model_weights', 'get_model_builder'):
        assert not_a_model not in models and MODELS.get(not_a_model) is None, not_a_model
    assert MODELS.get('resnet18') is torchvision.models.resnet18
    assert MODELS.get('VGG') is torchvision.models.VGG
    from colossal_runner.registry import DATA_SAMPLERS
    samplers = DATA_SAMPLERS._fallback_names()['torch.utils.data']
    assert 'WeightedRandomSampler' in samplers and 'BatchSampler' in samplers
    for not_a_sampler in ('DataLoader', 'random_split', 'TensorDataset', 'default_collate', 'Sampler'):
        assert not_a_sampler not in samplers and DATA_SAMPLERS.get(not_a_sampler) is None, not_a_sampler
    assert DATA_SAMPLERS.get('RandomSampler') is torch.utils.data.RandomSampler
    with pytest.raises(KeyError) as info:
        DATA_SAMPLERS.build(dict(type='RandomSampeler'))
    assert 'DataLoader' not in info.value.args[0] and "Did you mean 'RandomSampler'" in info.value.args[0]


def make_scoped():
    root, _ = make_registry()
    child = Registry('widget', parent=root, scope='myproj')

    @child.register_module()
    class ScopedNet:
        pass

    return root, child


def test_a_misspelled_scoped_name_is_looked_for_in_that_scopes_registry():
    root, _ = make_scoped()
    with pytest.raises(KeyError) as info:
        root.build(dict(type='myproj.ScopedNt'))
    msg = info.value.args[0]
    assert "'myproj.ScopedNt' is not in the widget registry. Did you mean 'myproj.ScopedNet'?" in msg
    assert "registered in scope 'myproj': ScopedNet; registered in the parent registry 'widget'" in msg


def test_a_plain_name_registered_only_in_a_child_suggests_its_scoped_name():
    root, child = make_scoped()
    with pytest.raises(KeyError) as info:
        root.build(dict(type='ScopedNet'))
    msg = info.value.args[0]
    assert "Did you mean 'myproj.ScopedNet'?" in msg
    assert "in scope 'myproj' (as 'myproj.Name'): ScopedNet" in msg
    # from a sibling registry the child's names are reached through the root as well
    sibling = Registry('widget', parent=root, scope='other')
    with pytest.raises(KeyError, match=r"Did you mean 'myproj\.ScopedNet'\?"):
        sibling.build(dict(type='scopednet'))
    assert root.get('myproj.ScopedNet') is child.get('ScopedNet') is not None


def test_a_misspelled_scope_suggests_the_close_scope():
    root, _ = make_scoped()
    with pytest.raises(KeyError) as info:
        root.build(dict(type='myprj.ScopedNet'))
    msg = info.value.args[0]
    assert "No registry of scope 'myprj' is reachable from it; the scopes are 'myproj', 'test'." in msg
    assert "Did you mean 'myproj.ScopedNet'?" in msg
    with pytest.raises(KeyError, match=r"Did you mean 'myproj\.ScopedNet'\?"):
        root.build(dict(type='myprj.ScopedNt'))  # both misspelled
    with pytest.raises(KeyError, match=r"No registry of scope 'nn'.*Did you mean 'Gear'\?"):
        root.build(dict(type='nn.Gaer'))  # not a scope at all: the plain names
