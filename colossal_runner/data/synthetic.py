"""A generated classification set: learnable, seeded, any size; for tests and benchmarks."""
from __future__ import annotations

from typing import Any, Tuple

import torch
from torch.utils.data import Dataset

from ..registry import DATASETS
from ..utils.checks import check_positive_int
from .dataloader import ItemTransforms


@DATASETS.register_module()
class SyntheticClassification(ItemTransforms, Dataset):
    """Gaussian clusters around one random centre per class.

    The centres depend only on ``seed`` (so a train and a test set built with the same
    seed share them); ``split`` changes the samples drawn, not the task.

    Args:
        num_samples: number of items.
        num_features: length of each input vector (or ``shape`` gives its shape).
        num_classes: number of labels.
        seed: seeds the centres and, combined with ``split``, the samples.
        noise: standard deviation of the samples around their centre; smaller is easier.
        split: ``'train'`` or ``'test'``.
        shape: optional input shape (e.g. ``(1, 8, 8)``) whose product is ``num_features``.
        transform / target_transform: applied to each item's input / label tensor: a callable,
            or a config (or a list of configs, composed) from TRANSFORMS.
    """

    def __init__(self, num_samples: int = 1024, num_features: int = 16, num_classes: int = 4,
                 seed: int = 0, noise: float = 0.5, split: str = 'train', shape=None,
                 transform: Any = None, target_transform: Any = None):
        for name, value in (('num_samples', num_samples), ('num_features', num_features),
                            ('num_classes', num_classes)):
            check_positive_int(f'SyntheticClassification {name}', value)
        if split not in ('train', 'test'):
            raise ValueError(f"SyntheticClassification split must be 'train' or 'test', got {split!r}")
        if shape is not None:
            shape = tuple(shape)
            if torch.Size(shape).numel() != num_features:
                raise ValueError(f'SyntheticClassification shape {shape} has {torch.Size(shape).numel()} '
                                 f'elements but num_features={num_features}; make them agree.')
        gen = torch.Generator().manual_seed(seed)
        centres = torch.randn(num_classes, num_features, generator=gen) * 2.0
        sample_gen = torch.Generator().manual_seed(seed * 2 + (0 if split == 'train' else 1) + 1_000_003)
        self.targets = torch.randint(num_classes, (num_samples,), generator=sample_gen)
        noise_part = noise * torch.randn(num_samples, num_features, generator=sample_gen)
        self.data = centres[self.targets] + noise_part
        if shape is not None:
            self.data = self.data.reshape(num_samples, *shape)
        self.num_classes = num_classes
        self.set_transforms(transform, target_transform)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        data, target = self.data[index], self.targets[index]
        return self.transformed(data, target)
