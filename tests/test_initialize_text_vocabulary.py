"""A text model's data and the model agree before training: the test split reads the training
vocabulary, vocab_size comes from the test text when there is no training split (tools/test.py), and
a model block_size shorter than the samples is a config error naming it."""
import os

import pytest
import torch

from colossal_runner.config import Config, ConfigError
from colossal_runner.initialize import initialize

TINY = os.path.join(os.path.dirname(__file__), 'data', 'e2e', 'tiny.py')
TRAIN_TEXT = 'the cat sat on the mat. ' * 20  # 11 distinct characters
GPT = dict(type='TinyGPT', vocab_size=None, block_size=8, n_layer=1, n_head=2, n_embd=8)


def _cfg(train_dataset, test_dataset, model=GPT):
    cfg = Config.fromfile(TINY).to_dict()
    cfg.update(model=dict(model), loss=dict(type='SequenceCrossEntropyLoss'), lr_scheduler=None, hooks=[],
               data=dict(test=dict(dataset=test_dataset, dataloader=dict(batch_size=2))))
    if train_dataset is not None:
        cfg['data']['train'] = dict(dataset=train_dataset, dataloader=dict(batch_size=2))
    return cfg


def test_the_test_split_reads_the_training_vocabulary(tmp_path):
    # a held-out text without 'a', 'c' or '.': its own vocabulary would give every character another id
    held_out = 'the men sent no hens ' * 10
    cfg = _cfg(dict(type='CharText', block_size=8, text=TRAIN_TEXT),
               dict(type='CharText', split='test', block_size=8, text=held_out, test_ratio=1.0))
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    train, test = run.train_dataloader.dataset, run.test_dataloader.dataset
    assert test.chars == train.chars and len(set(held_out)) < train.vocab_size == 11
    assert test.ids.tolist() == [train.stoi[c] for c in held_out]
    assert run.engine.module.vocab_size == 11
    _, label, loss = run.engine.evaluate_step(iter(run.test_dataloader))
    assert train.decode(label[0]) == held_out[1:9] and torch.isfinite(loss)


def test_an_explicit_chars_of_the_test_dataset_is_kept(tmp_path):
    held_out = 'the hen ' * 10
    cfg = _cfg(dict(type='CharText', block_size=8, text=TRAIN_TEXT),
               dict(type='CharText', split='test', block_size=8, text=held_out, test_ratio=1.0, chars=None))
    test = initialize(cfg, work_dir=str(tmp_path), log_file=False).test_dataloader.dataset
    assert test.chars == sorted(set(held_out))  # chars=None: its own vocabulary, as asked


def test_test_characters_the_training_text_lacks_are_a_config_error(tmp_path):
    # max_chars=40000 on the training text only: the test split had characters the model never saw,
    # and the test step failed with "index out of range in self" after an epoch of training
    cfg = _cfg(dict(type='CharText', block_size=8, text=TRAIN_TEXT, max_chars=100),
               dict(type='CharText', split='test', block_size=8, text=TRAIN_TEXT + 'A dog! ' * 5))
    expected = (r"key data.test.dataset: the test text has 4 distinct characters that the training text "
                r"has not: '!Adg'\. The test dataset is given the training dataset's vocabulary "
                r'\(11 characters\), so that each id means the same character as in training\. Use the same '
                r'text and max_chars in data.train.dataset and data.test.dataset')
    with pytest.raises(ConfigError, match=expected):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


def test_a_test_vocabulary_larger_than_the_model_is_a_config_error(tmp_path):
    chars = sorted(set(TRAIN_TEXT)) + ['!']  # the training ids first, then one more
    cfg = _cfg(dict(type='CharText', block_size=8, text=TRAIN_TEXT),
               dict(type='CharText', split='test', block_size=8, text='sat! ' * 10, test_ratio=1.0,
                    chars=chars))
    # vocab_size=None took 11 from the training split: "or to None" would be no advice
    expected = (r'key model.vocab_size: model.vocab_size=None took vocab_size=11 from the training dataset, '
                r'but the test dataset has a vocabulary of 12 tokens: set model.vocab_size to at least 12, '
                r"or give the test dataset the training dataset's vocabulary")
    with pytest.raises(ConfigError, match=expected):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


@pytest.mark.parametrize('lr_scheduler', [None, dict(type='CosineAnnealingWarmupLR', warmup_epochs=0.5)])
def test_vocab_size_comes_from_the_test_text_without_a_training_split(tmp_path, lr_scheduler):
    # tools/test.py CONFIG CKPT --cfg-options data.train=None: "TinyGPT vocab_size must be a positive int,
    # got None"; then a scheduler's total_steps "cannot be computed" without the training data
    cfg = _cfg(None, dict(type='CharText', split='test', block_size=8, text=TRAIN_TEXT))
    cfg['lr_scheduler'] = lr_scheduler
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False, read_only=True)
    assert run.train_dataloader is None and run.engine.lr_scheduler is None  # evaluation steps none
    assert run.engine.module.vocab_size == run.config.model.vocab_size == 11
    assert run.test_dataloader.dataset.chars == sorted(set(TRAIN_TEXT))
    assert torch.isfinite(run.engine.evaluate_step(iter(run.test_dataloader))[2])


@pytest.mark.parametrize('with_train', [True, False])
def test_a_model_block_size_shorter_than_the_samples_is_a_config_error(tmp_path, with_train):
    dataset = dict(type='CharText', block_size=16, text=TRAIN_TEXT)
    cfg = _cfg(dataset if with_train else None, dict(dataset, split='test'), model=dict(GPT, block_size=12))
    split = 'training' if with_train else 'test'
    expected = (rf'key model.block_size: the model \(TinyGPT\) has block_size=12, but each {split} sample is '
                rf'a sequence of 16 tokens: set model.block_size=16, or give the dataset a block_size of at '
                rf'most 12')
    with pytest.raises(ConfigError, match=expected):
        initialize(cfg, work_dir=str(tmp_path), log_file=False, read_only=not with_train)


def test_a_model_block_size_longer_than_the_samples_is_fine(tmp_path):
    cfg = _cfg(dict(type='CharText', block_size=8, text=TRAIN_TEXT), None, model=dict(GPT, block_size=16))
    cfg['data'].pop('test')
    run = initialize(cfg, work_dir=str(tmp_path), log_file=False)
    output, _, _ = run.engine.step(iter(run.train_dataloader))
    assert output.shape == (2, 8, 11)


def test_test_samples_longer_than_the_models_block_size_are_a_config_error(tmp_path):
    # the training samples fit: before, the first evaluation failed, after a whole epoch of training
    cfg = _cfg(dict(type='CharText', block_size=8, text=TRAIN_TEXT),
               dict(type='CharText', split='test', block_size=16, text=TRAIN_TEXT),
               model=dict(GPT, block_size=8))
    expected = (r'key model.block_size: the model \(TinyGPT\) has block_size=8, but each test sample is a '
                r'sequence of 16 tokens')
    with pytest.raises(ConfigError, match=expected):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)
