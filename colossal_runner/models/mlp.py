"""A multi-layer perceptron built as a flat sequence of layers (pipeline-splittable)."""
from __future__ import annotations

from typing import Sequence, Union

from torch import nn

from ..registry import MODELS
from ..utils.checks import check_positive_int


def make_activation(name: str) -> nn.Module:
    """``'ReLU'``, ``'GELU'``, ``'Tanh'``... : any activation class of ``torch.nn`` by name."""
    cls = getattr(nn, name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f'activation {name!r} is not a torch.nn module; use e.g. "ReLU", "GELU", "Tanh"')
    return cls()


@MODELS.register_module()
class MLP(nn.Sequential):
    """``Flatten -> (Linear -> activation [-> Dropout]) x len(hidden) -> Linear``.

    Args:
        in_features: input size after flattening (64 for Digits).
        hidden: width of each hidden layer (an int for one layer).
        num_classes: output size.
        activation: name of a ``torch.nn`` activation.
        dropout: dropout probability after each activation (0 adds no Dropout layer).

    Parameters use the layers' default initialization, so building layer by layer (as the
    pipeline does, on the meta device) gives the same weights as building the whole model.
    """

    def __init__(self, in_features: int = 64, hidden: Union[int, Sequence[int]] = (128,),
                 num_classes: int = 10, activation: str = 'ReLU', dropout: float = 0.0):
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        for name, value in [('in_features', in_features), ('num_classes', num_classes)] + \
                [(f'hidden[{i}]', h) for i, h in enumerate(hidden)]:
            check_positive_int(f'MLP {name}', value)
        layers = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
