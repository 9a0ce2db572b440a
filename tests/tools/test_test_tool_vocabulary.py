"""Checkpoints carry the vocabulary of a character model: tools/test.py reads a held-out text with
the training ids, and a resume or test on data whose ids mean other characters is refused."""
import pytest
import torch

from colossal_runner.checkpoint import save_checkpoint
from colossal_runner.config import Config
from colossal_runner.initialize import initialize

from .conftest import run_tool, run_tools_at_once

pytestmark = pytest.mark.usefixtures('fresh_logger')

TRAIN_TEXT = 'the cat sat on the mat. ' * 20  # 11 distinct characters
HELD_OUT = 'the men sent no hens ' * 10  # 7 of them: its own vocabulary would give other ids
SAME_SIZE = 'bdgijklpqruvwxyz01. ' * 20  # 20 characters, none shared: other ids for everything
GPT = dict(type='TinyGPT', vocab_size=None, block_size=8, n_layer=1, n_head=2, n_embd=8)


def _write_config(tmp_path, train_file, test_file, train_chars=None):
    train = dict(type='CharText', block_size=8, text_file=train_file)
    if train_chars is not None:
        train['chars'] = train_chars
    test = dict(type='CharText', split='test', block_size=8, test_ratio=1.0, text_file=test_file)
    hooks = [dict(type='LossHook'), dict(type='SaveCheckpointHook', interval=1)]
    cfg = dict(model=GPT, loss=dict(type='SequenceCrossEntropyLoss'), optimizer=dict(type='SGD', lr=0.1),
               max_epochs=1, seed=3, hooks=hooks,
               data=dict(train=dict(dataset=train, dataloader=dict(batch_size=4)),
                         test=dict(dataset=test, dataloader=dict(batch_size=4))))
    path = tmp_path / 'gpt.py'
    path.write_text(''.join(f'{key} = {value!r}\n' for key, value in cfg.items()))
    return str(path)


def _text(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _run(tmp_path, train_text, test_text=None, **kw):
    tmp_path.mkdir(exist_ok=True)
    config = _write_config(tmp_path, _text(tmp_path, 'a.txt', train_text),
                           _text(tmp_path, 'b.txt', test_text or train_text))
    return initialize(Config.fromfile(config), work_dir=str(tmp_path / 'run'), log_file=False, **kw)


def test_checkpoints_store_the_training_vocabulary_and_load_it_back(tmp_path):
    run = _run(tmp_path, TRAIN_TEXT)
    path = str(tmp_path / 'c.pt')
    save_checkpoint(run.trainer.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state['meta']['vocabulary'] == sorted(set(TRAIN_TEXT)) == run.train_dataloader.dataset.chars
    run.trainer.load_state_dict(state)  # its own vocabulary: loads


@pytest.mark.parametrize('finetune', [False, True])
def test_a_checkpoint_whose_ids_mean_other_characters_is_refused(tmp_path, finetune):
    saved = _run(tmp_path / 'a', TRAIN_TEXT).trainer.state_dict()
    # the same number of characters (same model shapes), other characters: it used to load silently
    other = ''.join(sorted(set(TRAIN_TEXT))).replace('a', 'z')
    run = _run(tmp_path / 'b', TRAIN_TEXT.replace('a', 'z'))
    assert run.trainer.vocabulary == sorted(other)
    expected = (r"the checkpoint's model was trained on a vocabulary of 11 tokens that this run's data does "
                r"not share: id 2 is 'a' there and 'c' here, so the model would read every text wrongly\. "
                r".*data\.train\.dataset\.chars and data\.test\.dataset\.chars = ' \.acehmnost'")
    weights = {k: v.clone() for k, v in run.engine.model.state_dict().items()}
    with pytest.raises(ValueError, match=expected):
        run.trainer.load_state_dict(saved, finetune=finetune)
    after = run.engine.model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # nothing was loaded


def test_a_vocabulary_that_adds_characters_after_the_saved_ones_loads(tmp_path):
    saved = _run(tmp_path / 'a', TRAIN_TEXT).trainer.state_dict()
    saved['meta']['vocabulary'] = saved['meta']['vocabulary'][:-1]  # as if trained on one character less
    run = _run(tmp_path / 'b', TRAIN_TEXT)
    run.trainer.load_state_dict(saved)  # every saved id keeps its character here


def test_test_tool_evaluates_with_the_checkpoints_vocabulary(tmp_path):
    train_file, held_file = _text(tmp_path, 'train.txt', TRAIN_TEXT), _text(tmp_path, 'held.txt', HELD_OUT)
    config = _write_config(tmp_path, train_file, held_file)
    work = str(tmp_path / 'run')
    trained = run_tool(['train.py', config, '--work-dir', work])
    assert trained.returncode == 0, trained.stderr
    odd_file = _text(tmp_path, 'odd.txt', 'the cat! ' * 10)
    # data.train setting its own chars (the same characters in another order) is kept: its ids are not
    # the checkpoint's
    (tmp_path / 'other').mkdir()
    reordered = _write_config(tmp_path / 'other', train_file, held_file,
                              train_chars=''.join(sorted(set(TRAIN_TEXT)))[::-1])
    kept, without_train, odd, refused = run_tools_at_once([
        ['test.py', config, work, '--json'],  # the training split in the config gave the vocabulary
        ['test.py', config, work, '--json', '--cfg-options', 'data.train=None'],  # the checkpoint gives it
        ['test.py', config, work, '--cfg-options', f'data.test.dataset.text_file={odd_file}'],
        ['test.py', reordered, work]])
    assert kept.returncode == 0, kept.stderr
    # without the training split the held-out text used to get its own 7-character vocabulary: a
    # model of another size that could not load the checkpoint
    assert without_train.returncode == 0, without_train.stderr
    assert kept.stdout.splitlines()[-1] == without_train.stdout.splitlines()[-1]
    assert odd.returncode != 0
    assert ("the test text has 1 distinct characters that the checkpoint's model was never trained on: '!'. "
            "Its vocabulary is the 11 characters of its training text (' .acehmnost')") in odd.stderr
    assert refused.returncode != 0
    assert "id 0 is ' ' there and 't' here" in refused.stderr
