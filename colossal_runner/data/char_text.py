"""Character-level language modelling over text that ships with every CPython install."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from ..registry import DATASETS
from ..utils.checks import check_positive_int
from .dataloader import ItemTransforms
from .digits import check_ratio


def default_corpus() -> str:
    """The standard library's pydoc topic help (about 465k characters of English and code)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some Linux distributions split pydoc_data out
        raise ImportError('CharText needs the standard library module pydoc_data (missing from this '
                          'Python build; on Debian/Ubuntu install the python3 "-doc" or full package), '
                          'or pass text=... / text_file=... to CharText.') from exc
    return ''.join(topics[key] for key in sorted(topics))


class VocabularyError(ValueError):
    """Text with characters outside the vocabulary given to :class:`CharText` (``missing``)."""

    def __init__(self, message: str, missing: List[str]):
        super().__init__(message)
        self.missing = missing


def vocabulary_text(chars: Sequence[str], limit: int = 100) -> str:
    """A vocabulary as one quoted string for a message, its first ``limit`` characters when longer."""
    text = ''.join(map(str, chars))
    return repr(text) if len(text) <= limit else f"{repr(text[:limit])[:-1]}...' and {len(text) - limit} more"


def _check_chars(chars: Any) -> List[str]:
    """``chars`` as a list of distinct single characters, or a ValueError saying what is wrong."""
    if isinstance(chars, str):
        chars = list(chars)
    if not isinstance(chars, (list, tuple)) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise ValueError(f'CharText chars must be a string or a list of single characters (the vocabulary, '
                         f'id i being chars[i]; None: the characters of the text), got {chars!r}')
    repeated = sorted(c for c, n in Counter(chars).items() if n > 1)
    if repeated:
        raise ValueError(f'CharText chars must not repeat a character (each needs one id), got '
                         f'{"".join(repeated)!r} more than once')
    if not chars:
        raise ValueError('CharText chars is empty; give the vocabulary, or None for the text\'s characters')
    return list(chars)


@DATASETS.register_module()
class CharText(ItemTransforms, Dataset):
    """Sequences of ``block_size`` characters and the same sequence shifted by one.

    The vocabulary is the sorted set of characters of the whole corpus (after ``max_chars``),
    so the two splits of one text share it; ``chars`` gives one instead (``initialize`` gives
    the test dataset the training dataset's). The first ``1 - test_ratio`` of the text is the
    train split, the rest the test split (contiguous, not shuffled); items are consecutive
    windows starting every ``stride`` characters (``block_size`` by default: non-overlapping).

    Args:
        split: ``'train'`` or ``'test'``.
        block_size: characters per item.
        text / text_file: the corpus; the pydoc topics text by default.
        test_ratio: the share of the text in the test split, in [0, 1].
        max_chars: use only the first ``max_chars`` characters (quick runs; a positive int).
        stride: distance between the starts of consecutive items (a positive int; None:
            ``block_size``).
        transform / target_transform: applied to each item's input / target tensor: a
            callable, or a config (or a list of configs, composed) from TRANSFORMS.
        chars: the vocabulary, a string or list of distinct characters, id ``i`` being
            ``chars[i]``; a character of the split outside it is a :class:`VocabularyError`.
            None: the sorted characters of the text.

    Items are ``(input int64[block_size], target int64[block_size])`` (before the transforms).
    """

    def __init__(self, split: str = 'train', block_size: int = 64, text: Optional[str] = None,
                 text_file: Optional[str] = None, test_ratio: float = 0.1,
                 max_chars: Optional[int] = None, stride: Optional[int] = None,
                 transform: Any = None, target_transform: Any = None,
                 chars: Optional[Sequence[str]] = None):
        if split not in ('train', 'test'):
            raise ValueError(f"CharText split must be 'train' or 'test', got {split!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f'CharText block_size must be a positive int, got {block_size!r}')
        # 0 puts all the text in the train split (a split left empty is an error below)
        check_ratio('CharText test_ratio', test_ratio, closed=True)
        if stride is not None:
            hint = ' (characters from one item to the next; None: block_size)'
            stride = check_positive_int('CharText stride', stride, hint)
        if max_chars is not None:
            hint = ' (use the first max_chars characters of the text; None: all of it)'
            max_chars = check_positive_int('CharText max_chars', max_chars, hint)
        self.set_transforms(transform, target_transform)
        if text is not None and text_file is not None:
            raise ValueError('CharText takes text= or text_file=, not both')
        if text_file is not None:
            with open(text_file, encoding='utf-8') as f:
                text = f.read()
        if text is None:
            text = default_corpus()
        if max_chars is not None:
            text = text[:max_chars]
        self.chars: List[str] = sorted(set(text)) if chars is None else _check_chars(chars)
        self.stoi: Dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        cut = int(len(text) * (1.0 - test_ratio))
        part = text[:cut] if split == 'train' else text[cut:]
        if text and not part:  # not a matter of block_size: test_ratio leaves nothing to this split
            fix = ('set a positive test_ratio, or leave the test split out (no data.test)' if split == 'test'
                   else 'set test_ratio below 1, or leave the train split out (no data.train)')
            raise ValueError(f'the {split} split is empty: test_ratio={test_ratio} puts '
                             f'{"none" if split == "test" else "all"} of the text in the test split; {fix}.')
        if len(part) < block_size + 1:
            raise ValueError(f'the {split} split has {len(part)} characters, fewer than block_size + 1 = '
                             f'{block_size + 1}; use a smaller block_size or more text.')
        self.split = split
        self.block_size = block_size
        self.stride = stride or block_size
        missing = sorted(set(part) - set(self.stoi)) if chars is not None else []
        if missing:
            shown = ''.join(missing[:20]) + ('...' if len(missing) > 20 else '')
            raise VocabularyError(f'the {split} split has {len(missing)} distinct characters that are not in '
                                  f'the vocabulary chars ({self.vocab_size} characters): {shown!r}; give '
                                  f'chars that hold every character of the text, or chars=None for the '
                                  f"text's own vocabulary (whose ids a model trained on another "
                                  f'vocabulary does not share)', missing)
        self.ids = torch.tensor(self.encode(part), dtype=torch.long)
        self._num = (len(self.ids) - block_size - 1) // self.stride + 1

    def encode(self, text: str) -> List[int]:
        """Characters to ids; a character outside the vocabulary raises KeyError naming it."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise KeyError(f'character {exc.args[0]!r} is not in the vocabulary of {self.vocab_size} '
                           f'characters of this corpus') from None

    def decode(self, ids) -> str:
        """Ids (list or tensor) back to text."""
        return ''.join(self.chars[int(i)] for i in ids)

    def unigram_entropy(self) -> float:
        """Entropy (nats) of this split's character frequencies: the loss of a model that
        ignores context, the bar a language model has to get well below."""
        counts = torch.bincount(self.ids, minlength=self.vocab_size).double()
        probs = counts[counts > 0] / counts.sum()
        return float(-(probs * probs.log()).sum())

    def __len__(self) -> int:
        return self._num

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += self._num
        if not 0 <= index < self._num:
            raise IndexError(f'CharText index {index} out of range for {self._num} items')
        start = index * self.stride
        chunk = self.ids[start:start + self.block_size + 1]
        data, target = chunk[:-1], chunk[1:]
        return self.transformed(data, target)
