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
    (dict(test_ratio=1), r'the train split has 0 characters'),
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
