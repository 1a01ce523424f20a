"""Count a model's parameters and multiply-adds, the way the paper's tables do.

The paper's "FLOPS" column counts multiply-adds of the convolutional and fully connected layers
(Table 1: NN1's conv1 has 110*110*64 outputs of 7*7*3 products each, 115M). :func:`count` runs one
forward pass on a zero image with forward hooks on every Conv1d/2d/3d and Linear and adds up,
per layer, ``output elements x products per output``. Biases, batch norm, pooling, activations and
normalisation are not counted (they are cheap next to the convolutions, and the paper leaves them
out too).

    >>> count(nn.Conv2d(3, 8, 3, padding=1), input_size=4)
    ModelCost(params=224, multiply_adds=3456)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class ModelCost:
    """What one image costs a model: its parameter count and its multiply-adds per forward pass.

    >>> ModelCost(params=7_500_000, multiply_adds=1_600_000_000).describe()
    '7.50M params, 1.60G multiply-adds'
    """

    params: int
    multiply_adds: int

    def describe(self) -> str:
        """A short human-readable form."""
        return f"{self.params / 1e6:.2f}M params, {self.multiply_adds / 1e9:.2f}G multiply-adds"


def layer_multiply_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds one Conv or Linear layer spent to produce ``output`` (0 for other layers).

    A convolution output element is a dot product over ``in_channels / groups`` channels and the
    kernel window; a Linear output element is a dot product over ``in_features``.
    """
    if isinstance(module, _CONVS):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count(model: nn.Module, input_size: int) -> ModelCost:
    """Parameters and multiply-adds of ``model`` on one (1, 3, input_size, input_size) image.

    The model runs once in eval mode without gradients, on the device and dtype of its
    parameters; every submodule's training flag is restored afterwards.
    """
    params = sum(parameter.numel() for parameter in model.parameters())
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    total = 0

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_multiply_adds(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*_CONVS, nn.Linear))]
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    finally:
        for module, training in modes:
            module.training = training
        for handle in handles:
            handle.remove()
    return ModelCost(params=params, multiply_adds=total)
