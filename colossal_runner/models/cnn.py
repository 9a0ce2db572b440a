"""A small convolutional classifier as a flat sequence of layers (pipeline-splittable)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..registry import MODELS


@MODELS.register_module()
class SimpleCNN(nn.Sequential):
    """Conv blocks, then a two-layer classifier, as one flat sequence of layers:
    ``(Conv3x3 -> BatchNorm -> ReLU [-> MaxPool2]) x len(channels) -> Flatten -> Linear -> ReLU -> Linear``.

    Args:
        in_channels: input channels (1 for Digits / MNIST, 3 for CIFAR-10).
        num_classes: output size.
        channels: output channels of each conv block.
        image_size: input height and width (8 for Digits, 28 for MNIST, 32 for CIFAR-10).
        pool: which conv blocks end with a 2x2 max-pool (default: every block after the first).
        hidden: width of the fully connected layer before the classifier.
        dropout: dropout before the classifier (0 adds no Dropout layer).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (32, 64),
                 image_size: int = 8, pool: Sequence[bool] = None, hidden: int = 128, dropout: float = 0.0):
        channels = list(channels)
        if not channels:
            raise ValueError('SimpleCNN channels must list at least one conv block, got []')
        pool = [i > 0 for i in range(len(channels))] if pool is None else list(pool)
        if len(pool) != len(channels):
            raise ValueError(f'SimpleCNN pool has {len(pool)} entries but channels has {len(channels)}; '
                             f'give one True/False per conv block')
        size = image_size
        layers = []
        prev = in_channels
        for ch, do_pool in zip(channels, pool):
            layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU()]
            if do_pool:
                if size < 2:
                    raise ValueError(f'SimpleCNN image_size={image_size} is too small for {sum(pool)} '
                                     f'max-pools; pass fewer pool=True entries')
                layers.append(nn.MaxPool2d(2))
                size //= 2
            prev = ch
        layers += [nn.Flatten(), nn.Linear(prev * size * size, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, num_classes))
        super().__init__(*layers)
