"""Character-level language modelling over text that ships with every CPython install."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

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


@DATASETS.register_module()
class CharText(ItemTransforms, Dataset):
    """Sequences of ``block_size`` characters and the same sequence shifted by one.

    The vocabulary is the sorted set of characters of the whole corpus, so train and test
    share it. The first ``1 - test_ratio`` of the text is the train split, the rest the
    test split; items are consecutive windows starting every ``stride`` characters
    (``block_size`` by default: non-overlapping).

    Args:
        split: ``'train'`` or ``'test'``.
        block_size: characters per item.
        text / text_file: the corpus; the pydoc topics text by default.
        test_ratio: the share of the text in the test split, in [0, 1].
        max_chars: use only the first ``max_chars`` characters (quick runs).
        stride: distance between the starts of consecutive items (a positive int; None:
            ``block_size``).
        transform / target_transform: applied to each item's input / target tensor: a
            callable, or a config (or a list of configs, composed) from TRANSFORMS.

    Items are ``(input int64[block_size], target int64[block_size])`` (before the transforms).
    """

    def __init__(self, split: str = 'train', block_size: int = 64, text: Optional[str] = None,
                 text_file: Optional[str] = None, test_ratio: float = 0.1,
                 max_chars: Optional[int] = None, stride: Optional[int] = None,
                 transform: Any = None, target_transform: Any = None):
        if split not in ('train', 'test'):
            raise ValueError(f"CharText split must be 'train' or 'test', got {split!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f'CharText block_size must be a positive int, got {block_size!r}')
        # 0 puts all the text in the train split (a split left empty is an error below)
        check_ratio('CharText test_ratio', test_ratio, closed=True)
        if stride is not None:
            check_positive_int('CharText stride', stride, ' (characters from one item to the next; None: '
                                                          'block_size)')
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
        self.chars: List[str] = sorted(set(text))
        self.stoi: Dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        cut = int(len(text) * (1.0 - test_ratio))
        part = text[:cut] if split == 'train' else text[cut:]
        if len(part) < block_size + 1:
            raise ValueError(f'the {split} split has {len(part)} characters, fewer than block_size + 1 = '
                             f'{block_size + 1}; use a smaller block_size or more text.')
        self.split = split
        self.block_size = block_size
        self.stride = stride or block_size
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
