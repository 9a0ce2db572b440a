"""mmcv's by_epoch in an lr_scheduler config gets the hook that steps per epoch, not torch's
last_epoch as a close name; a registry's argument_hints reach its children too."""
import pytest
import torch

from colossal_runner.registry import LR_SCHEDULERS, MODELS, Registry


def _optimizer():
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)


def test_by_epoch_points_to_the_lr_scheduler_hook():
    cfg = dict(type='MultiStepLR', by_epoch=True, milestones=[2, 3], total_steps=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'by_epoch'") as info:
        LR_SCHEDULERS.build(cfg, default_args=dict(optimizer=_optimizer()))
    note = ' '.join(info.value.__notes__)
    assert "by_epoch is not a scheduler argument here" in note
    assert "dict(type='LRSchedulerHook', by_epoch=True) to hooks" in note
    assert "'last_epoch' for 'by_epoch'" not in note
    assert 'It takes: optimizer, total_steps, milestones, gamma, last_epoch' in note


def test_other_misspelt_arguments_still_get_a_close_name():
    cfg = dict(type='MultiStepLR', by_epoch=True, milestone=[2], total_steps=4)
    with pytest.raises(TypeError) as info:
        LR_SCHEDULERS.build(cfg, default_args=dict(optimizer=_optimizer()))
    note = ' '.join(info.value.__notes__)
    assert 'by_epoch is not a scheduler argument' in note and "'milestones' for 'milestone'" in note


def test_a_child_registry_uses_its_parents_hints_and_only_its_own_registry_has_them():
    child = Registry('lr_scheduler', parent=LR_SCHEDULERS, scope='my_scheds')
    try:
        @child.register_module()
        def constant(optimizer, total_steps):
            return optimizer

        with pytest.raises(TypeError) as info:
            child.build(dict(type='constant', total_steps=3, by_epoch=True),
                        default_args=dict(optimizer=None))
        assert 'LRSchedulerHook' in ' '.join(info.value.__notes__)
    finally:
        LR_SCHEDULERS.children.pop('my_scheds')  # the root registries outlive this test

    @MODELS.register_module(name='_HintlessNet', force=True)
    class _HintlessNet(torch.nn.Module):
        def __init__(self, last_epoch=0):
            super().__init__()

    try:
        with pytest.raises(TypeError) as info:
            MODELS.build(dict(type='_HintlessNet', by_epoch=True))
        assert "did you mean 'last_epoch' for 'by_epoch'?" in ' '.join(info.value.__notes__)
    finally:
        MODELS.module_dict.pop('_HintlessNet')
