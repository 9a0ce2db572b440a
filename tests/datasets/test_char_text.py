import math
from collections import Counter

import pytest
import torch

from colossal_runner.data import CharText, default_corpus


def test_default_corpus_is_the_pydoc_topics_text():
    text = default_corpus()
    assert len(text) > 100_000
    assert 'for' in text and 'class' in text


def test_items_are_shifted_windows_and_decode_back():
    ds = CharText('train', block_size=16, max_chars=5000)
    x, y = ds[3]
    assert x.shape == y.shape == (16,) and x.dtype == torch.long
    assert torch.equal(x[1:], y[:-1])
    text = default_corpus()[:5000]
    assert ds.decode(x) == text[3 * 16:4 * 16]
    assert ds.decode(ds.encode('def')) == 'def'
    assert len(ds) == (int(5000 * 0.9) - 17) // 16 + 1
    last_x, last_y = ds[len(ds) - 1]
    assert last_y.shape == (16,)
    with pytest.raises(IndexError, match='out of range'):
        ds[len(ds)]


def test_train_and_test_share_vocabulary_but_not_text():
    train = CharText('train', block_size=8, max_chars=20000)
    test = CharText('test', block_size=8, max_chars=20000)
    assert train.chars == test.chars and train.vocab_size == len(set(default_corpus()[:20000]))
    assert len(train.ids) + len(test.ids) == 20000


def test_unigram_entropy_matches_the_counts():
    ds = CharText('train', block_size=8, text='aab' * 100 + 'c' * 50, test_ratio=0.1)
    counts = Counter(ds.decode(ds.ids))
    n = sum(counts.values())
    expected = -sum(c / n * math.log(c / n) for c in counts.values())
    assert ds.unigram_entropy() == pytest.approx(expected)


def test_stride_gives_overlapping_windows():
    ds = CharText('train', block_size=8, text='abcdefghij' * 10, stride=1, test_ratio=0.5)
    assert torch.equal(ds[1][0], ds.ids[1:9]) and torch.equal(ds[1][0][:-1], ds[0][0][1:])
    assert len(ds) == 50 - 8


def test_errors():
    with pytest.raises(ValueError, match='fewer than block_size'):
        CharText('test', block_size=64, text='x' * 100)
    with pytest.raises(KeyError, match="character 'Z' is not in the vocabulary"):
        CharText('train', block_size=2, text='abcabcabc').encode('aZ')
    with pytest.raises(ValueError, match='text= or text_file='):
        CharText(text='a', text_file='f')


def test_text_file(tmp_path):
    path = tmp_path / 'corpus.txt'
    path.write_text('hello world ' * 20, encoding='utf-8')
    ds = CharText('train', block_size=4, text_file=str(path))
    assert ds.decode(ds[0][0]) == 'hell'


@pytest.mark.parametrize('kwargs, message', [
    (dict(test_ratio=1.5), r'CharText test_ratio must be a number in \[0, 1\].*got 1\.5'),
    (dict(test_ratio=-0.5), r'CharText test_ratio must be a number in \[0, 1\].*got -0\.5'),
    (dict(test_ratio=1), r'the train split is empty: test_ratio=1 puts all of the text in the test split; '
                         r'set test_ratio below 1, or leave the train split out \(no data.train\)'),
    (dict(test_ratio='0.1'), r"CharText test_ratio must be a number in \[0, 1\].*got '0\.1'"),
    (dict(stride=0), r'CharText stride must be a positive int \(.*None: block_size\), got 0'),
    (dict(stride=-4), r'CharText stride must be a positive int .*got -4'),
    (dict(stride=2.0), r'CharText stride must be a positive int .*got 2\.0'),
])
def test_bad_ratio_and_stride_say_what_is_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CharText('train', block_size=4, text='abcdefghij' * 10, **kwargs)


def test_stride_none_means_block_size():
    ds = CharText('train', block_size=4, text='abcdefghij' * 10, stride=None, test_ratio=0.5)
    assert ds.stride == 4 and torch.equal(ds[1][0], ds.ids[4:8])


def test_a_test_ratio_of_0_trains_on_all_the_text():
    ds = CharText('train', block_size=4, text='abcdefghij' * 10, test_ratio=0)
    assert len(ds.ids) == 100 and ds.decode(ds.ids[-4:]) == 'ghij'


def test_an_empty_test_split_says_to_set_a_positive_test_ratio():
    # test_ratio=0 leaves nothing to the test split: block_size is not the problem
    message = (r'the test split is empty: test_ratio=0 puts none of the text in the test split; set a '
               r'positive test_ratio, or leave the test split out \(no data.test\)')
    with pytest.raises(ValueError, match=message):
        CharText('test', block_size=4, text='abcdefghij' * 10, test_ratio=0)
    with pytest.raises(ValueError, match=r'the test split has 0 characters, fewer than block_size'):
        CharText('test', block_size=4, text='')  # no text at all: more text is the fix


@pytest.mark.parametrize('max_chars', [-100, 0, 2.5, True, '100'])
def test_max_chars_must_be_a_positive_int(max_chars):
    # -100 used to drop the last 100 characters silently, 2.5 to fail inside slicing
    message = (rf'CharText max_chars must be a positive int \(use the first max_chars characters of the '
               rf'text; None: all of it\), got {max_chars!r}')
    with pytest.raises(ValueError, match=message):
        CharText('train', block_size=4, text='abcdefghij' * 10, max_chars=max_chars)


def test_chars_sets_the_vocabulary_and_its_ids():
    text = 'abcabcabcabc' * 10
    ds = CharText('train', block_size=4, text=text, chars='zcba', test_ratio=0.5)
    assert ds.chars == ['z', 'c', 'b', 'a'] and ds.vocab_size == 4
    assert ds.ids[:3].tolist() == [3, 2, 1]  # id i is chars[i], in the order given
    assert ds.decode(ds[0][0]) == text[:4]
    listed = CharText('train', block_size=4, text=text, chars=['a', 'b', 'c'], test_ratio=0.5)
    assert listed.ids[:3].tolist() == [0, 1, 2] and listed.vocab_size == 3
    # None: the text's own sorted characters, as before
    assert CharText('train', block_size=4, text=text, chars=None, test_ratio=0.5).chars == ['a', 'b', 'c']


def test_a_test_split_with_the_training_vocabulary_keeps_its_ids():
    train = CharText('train', block_size=4, text='Aabcd' * 40)
    held_out = 'dcba' * 30  # no 'A': a vocabulary of its own would give each character another id
    test = CharText('test', block_size=4, text=held_out, test_ratio=0.5, chars=train.chars)
    own = CharText('test', block_size=4, text=held_out, test_ratio=0.5)
    assert test.chars == train.chars and test.vocab_size == 5 and own.vocab_size == 4
    assert test.ids.tolist() == [train.stoi[c] for c in held_out[60:]]
    assert torch.equal(test.ids, own.ids + 1) and test.decode(test.ids) == own.decode(own.ids)


@pytest.mark.parametrize('chars, message', [
    ('aab', r"CharText chars must not repeat a character \(each needs one id\), got 'a' more than once"),
    (['ab', 'c'], r"CharText chars must be a string or a list of single characters .*got \['ab', 'c'\]"),
    (5, r'CharText chars must be a string or a list of single characters .*got 5'),
    ('', r'CharText chars is empty'),
])
def test_bad_chars_say_what_is_expected(chars, message):
    with pytest.raises(ValueError, match=message):
        CharText('train', block_size=4, text='abcabcabc' * 10, chars=chars)


def test_a_character_outside_chars_is_an_error_naming_it():
    from colossal_runner.data.char_text import VocabularyError
    message = (r"the train split has 2 distinct characters that are not in the vocabulary chars "
               r"\(2 characters\): 'cd'")
    with pytest.raises(VocabularyError, match=message) as info:
        CharText('train', block_size=4, text='abcd' * 30, chars='ab', test_ratio=0.1)
    assert info.value.missing == ['c', 'd']
