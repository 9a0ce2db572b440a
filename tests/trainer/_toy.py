"""A tiny real setup for trainer tests: MLP, synthetic data, the real Engine."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from colossal_runner.engine import Engine


def make_engine(seed: int = 0, dropout: float = 0.0, lr_scheduler: bool = True, in_features: int = 8,
                num_classes: int = 3, **engine_kwargs) -> Engine:
    torch.manual_seed(seed)
    layers = [nn.Linear(in_features, 16), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(16, num_classes))
    model = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5) if lr_scheduler else None
    return Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler, **engine_kwargs)


def make_dataset(num_samples: int, seed: int = 0, in_features: int = 8,
                 num_classes: int = 3) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    data = torch.randn(num_samples, in_features, generator=gen)
    labels = torch.randint(num_classes, (num_samples,), generator=gen)
    return TensorDataset(data, labels)


def make_loader(num_samples: int, batch_size: int = 4, seed: int = 0, **kwargs) -> DataLoader:
    return DataLoader(make_dataset(num_samples, seed), batch_size=batch_size, **kwargs)
