"""Weights saved by a plain torch loop load with finetune=True; a full resume refuses them clearly."""
import pytest
import torch

from colossal_runner.checkpoint import load_checkpoint
from colossal_runner.trainer import Trainer

from ._toy import make_engine


@pytest.mark.parametrize('layout, where', [
    ('state_dict', 'a state_dict'),
    ('hand_loop', "its 'model' entry"),
    ('lightning_like', "its 'state_dict' entry"),
])
def test_bare_weights_load_as_weights_only_with_finetune(tmp_path, project_log, layout, where):
    source = make_engine(seed=1)
    weights = source.model.state_dict()
    content = {'state_dict': weights,
               'hand_loop': {'epoch': 3, 'model': weights, 'optimizer': source.optimizer.state_dict()},
               'lightning_like': {'epoch': 3, 'state_dict': weights}}[layout]
    path = tmp_path / 'weights.pt'
    torch.save(content, path)
    target = make_engine(seed=2)
    trainer = Trainer(target)
    trainer.resume(str(path), finetune=True)
    for name, value in source.model.state_dict().items():
        assert torch.equal(target.model.state_dict()[name], value), name
    assert trainer.states['epoch'] == trainer.states['iteration'] == 0
    assert not target.optimizer.state_dict()['state']  # nothing but the weights
    assert (f'loaded only model weights ({where}): the file is not a colossal_runner training checkpoint, '
            f'so nothing else (optimizer, progress) is restored') in project_log.lines


def test_bare_weights_of_another_model_fail_as_a_mismatch(tmp_path):
    torch.save(torch.nn.Linear(8, 3).state_dict(), tmp_path / 'other.pt')
    with pytest.raises(KeyError, match=r"does not fit the model: missing keys \['0\.bias'"):
        Trainer(make_engine()).resume(str(tmp_path / 'other.pt'), finetune=True)


def test_a_full_resume_refuses_bare_weights_saying_how_to_load_them(tmp_path):
    torch.save(make_engine().model.state_dict(), tmp_path / 'weights.pt')
    state = load_checkpoint(str(tmp_path / 'weights.pt'))
    with pytest.raises(KeyError) as info:
        Trainer(make_engine()).load_state_dict(state)
    assert info.value.args[0] == (
        "not a colossal_runner training checkpoint: expected the keys 'engine', 'states', 'hooks', 'rng'; "
        "got ['0.bias', '0.weight', '2.bias', '2.weight']. It holds bare model weights (a state_dict), "
        'without an optimizer state or a position to resume from: load them as weights only, in a config '
        "(tools/train.py without --resume) with hooks=[..., dict(type='LoadCheckpointHook', "
        "checkpoint_dir=PATH, finetune=True)], or in Python with trainer.resume(PATH, finetune=True) before "
        'fit; tools/test.py evaluates such a file as it is.')
    torch.save({'epoch': 3, 'note': 'no weights'}, tmp_path / 'other.pt')
    with pytest.raises(KeyError, match=r"got \['epoch', 'note'\]\. Give a checkpoint written by"):
        Trainer(make_engine()).resume(str(tmp_path / 'other.pt'), finetune=True)


def test_load_checkpoint_hook_finetunes_from_bare_weights(tmp_path, project_log):
    """The config route to fine-tuning (LoadCheckpointHook(finetune=True)) takes them too."""
    from colossal_runner.trainer.hooks import LoadCheckpointHook
    from ._toy import make_loader
    source = make_engine(seed=1)
    (tmp_path / 'pretrained').mkdir()
    torch.save(source.model.state_dict(), tmp_path / 'pretrained' / 'epoch_1.pt')
    target = make_engine(seed=2)
    hook = LoadCheckpointHook(checkpoint_dir=str(tmp_path / 'pretrained'), epoch=1, finetune=True)
    trainer = Trainer(target, hooks=[hook])
    trainer.evaluate(make_loader(8))  # before_test loads it
    for name, value in source.model.state_dict().items():
        assert torch.equal(target.model.state_dict()[name], value), name
    assert any(line.startswith(f"loaded checkpoint from {tmp_path / 'pretrained' / 'epoch_1.pt'} (bare model "
                               f"weights, weights only)") for line in project_log.lines), project_log.lines


def test_weights_that_match_no_key_are_refused_even_with_strict_false(tmp_path, project_log):
    """DDP saved them with its 'module.' prefix: loading "what matches" would load nothing at all."""
    weights = make_engine(seed=1).model.state_dict()
    torch.save({f'module.{k}': v for k, v in weights.items()}, tmp_path / 'ddp.pt')
    with pytest.raises(KeyError, match=r"none of the checkpoint's 4 weights fits the model: .*the saved keys "
                                       r"carry the prefix 'module\.': strip it"):
        Trainer(make_engine()).resume(str(tmp_path / 'ddp.pt'), strict=False, finetune=True)
    with pytest.raises(KeyError) as info:  # strict: the same hint, and not "load with strict=False"
        Trainer(make_engine()).resume(str(tmp_path / 'ddp.pt'), finetune=True)
    assert "the saved keys carry the prefix 'module.'" in info.value.args[0]
    assert 'strict=False' not in info.value.args[0]
    partial = dict(weights)
    del partial['2.bias']
    torch.save(partial, tmp_path / 'part.pt')
    target = make_engine(seed=2)
    Trainer(target).resume(str(tmp_path / 'part.pt'), strict=False, finetune=True)
    assert torch.equal(target.model.state_dict()['0.weight'], weights['0.weight'])
    assert ("loaded 3 of the model's 4 weights (strict=False): missing ['2.bias'] (these keep their initial "
            "values), unexpected [] (ignored)") in project_log.lines
