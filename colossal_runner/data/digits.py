"""The 8x8 handwritten digits that ship with scikit-learn: real data with no download."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import DATASETS
from .dataloader import ItemTransforms

# The split must never change between runs or machines, so it is fixed here rather than
# taken from the user's seed: a checkpoint trained on "train" is always tested on "test".
_SPLIT_SEED = 0


def check_ratio(name: str, value: Any, closed: bool = False) -> float:
    """``value`` when it is a number between 0 and 1 (a share of the data; 0 and 1 themselves only
    when ``closed``), else a ValueError."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not ((0.0 <= value <= 1.0) if closed else (0.0 < value < 1.0)):
        raise ValueError(f'{name} must be a number in {"[0, 1]" if closed else "(0, 1)"}, the share of the '
                         f'data in the test split; got {value!r}')
    return value


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - sklearn is an install requirement
        raise ImportError('the Digits dataset needs scikit-learn, which bundles the data: '
                          'run `pip install scikit-learn` (or `pip install -e ".[dev]"`).') from exc
    return load_digits()


@DATASETS.register_module()
class Digits(ItemTransforms, Dataset):
    """1797 8x8 grey-scale digit images (0-9) bundled with scikit-learn.

    Args:
        split: ``'train'`` (80%, 1437 images) or ``'test'`` (20%, 360 images); the split is
            stratified and fixed, the same on every machine.
        flatten: ``True`` gives 64-float vectors (for MLP), ``False`` 1x8x8 images (for CNNs).
        normalize: standardise with the mean/std of the training split (pixels are 0..16).
        test_ratio: the share of the images in the test split, in (0, 1).
        transform / target_transform: applied to each item's image / label tensor: a callable,
            or a config (or a list of configs, composed) from TRANSFORMS.

    Items are ``(float32 tensor, int64 label)`` (before the transforms).
    """

    SPLITS = ('train', 'test')

    def __init__(self, split: str = 'train', flatten: bool = True, normalize: bool = True,
                 test_ratio: float = 0.2, transform: Any = None, target_transform: Any = None):
        if split not in self.SPLITS:
            raise ValueError(f"Digits split must be one of {self.SPLITS}, got {split!r}")
        check_ratio('Digits test_ratio', test_ratio)
        self.set_transforms(transform, target_transform)
        from sklearn.model_selection import train_test_split

        raw = _load_digits()
        data = raw.data.astype(np.float32)
        target = raw.target.astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(
            data, target, test_size=test_ratio, random_state=_SPLIT_SEED, stratify=target)
        if normalize:
            mean, std = float(x_train.mean()), float(x_train.std())
            x_train = (x_train - mean) / std
            x_test = (x_test - mean) / std
        x, y = (x_train, y_train) if split == 'train' else (x_test, y_test)
        self.split = split
        self.flatten = flatten
        self.data = torch.from_numpy(np.ascontiguousarray(x))
        if not flatten:
            self.data = self.data.reshape(-1, 1, 8, 8)
        self.targets = torch.from_numpy(np.ascontiguousarray(y))
        self.num_classes = 10

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        data, target = self.data[index], self.targets[index]
        return self.transformed(data, target)

    def __repr__(self) -> str:
        return f'Digits(split={self.split!r}, flatten={self.flatten}, size={len(self)})'
