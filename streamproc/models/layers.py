"""Building blocks shared by the paper's networks, and the table vocabulary they are written in.

Every network here is a table: a list of layer specs (``Conv``, ``Pool``, ``Norm``, ``Flatten``,
``Maxout``, ``GlobalAvgPool``, and ``Inception`` from :mod:`streamproc.models.inception`). Each spec
knows the module it stands for and how it changes the (channels, size) shape, so :func:`stack`
builds the trunk without running a dummy forward pass. :class:`EmbeddingNet` checks the input,
runs the trunk, projects to the embedding and L2-normalises it (the paper's Figure 2).

    >>> net = EmbeddingNet([Conv(8, 3, 2), GlobalAvgPool()], input_size=32, embedding_dim=64)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from streamproc.errors import ConfigError, InputError

EMBEDDING_SIZES = (64, 128, 256, 512)


def check_embedding_dim(embedding_dim: int) -> None:
    """Raise ConfigError unless ``embedding_dim`` is one the paper tried (Table 5)."""
    if embedding_dim not in EMBEDDING_SIZES:
        choices = ", ".join(str(size) for size in EMBEDDING_SIZES)
        raise ConfigError(f"embedding size must be one of {choices}, got {embedding_dim}")


def same_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution or pooling: ceil(size / stride)."""
    return (size - 1) // stride + 1


class L2Normalize(nn.Module):
    """Scale each row to unit L2 norm (the embedding lives on the hypersphere).

    >>> L2Normalize()(torch.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=1, eps=self.eps)


class L2Pool2d(nn.Module):
    """The paper's L2 pooling: the square root of the sum of squares over each window.

    Zero padding adds nothing to the sum, so padded windows at the border are exact.
    ``eps`` keeps the gradient finite where a window is all zeros (common after ReLU).

    >>> L2Pool2d(3, stride=1, padding=1)(torch.ones(1, 1, 3, 3))[0, 0, 1, 1]
    tensor(3.)
    """

    def __init__(self, kernel_size: int, stride: int = 1, padding: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        area = self.kernel_size * self.kernel_size
        mean_square = F.avg_pool2d(x * x, self.kernel_size, self.stride, self.padding, count_include_pad=True)
        return torch.sqrt(mean_square * area + self.eps)


class ConvBNReLU(nn.Sequential):
    """A 'same'-padded convolution, batch norm and ReLU (the conv has no bias: BN supplies it).

    >>> ConvBNReLU(3, 8, kernel_size=3, stride=2)(torch.zeros(1, 3, 9, 9)).shape
    torch.Size([1, 8, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class MaxoutLinear(nn.Module):
    """A fully connected maxout layer (Goodfellow et al.): ``pieces`` linear maps, keep the max.

    >>> MaxoutLinear(6, 4, pieces=2)(torch.zeros(5, 6)).shape
    torch.Size([5, 4])
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2) -> None:
        super().__init__()
        self.out_features = out_features
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(-1, self.out_features, self.pieces).amax(dim=2)


class Shape(NamedTuple):
    """Activation shape between specs: channels (or features once flattened) and spatial size."""

    channels: int
    size: int


class LayerSpec(Protocol):
    """One row of an architecture table: builds its module and says what shape comes out."""

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]: ...


@dataclass(frozen=True)
class Conv:
    """``out`` filters of ``kernel`` x ``kernel`` at ``stride``, as ConvBNReLU."""

    out: int
    kernel: int
    stride: int = 1

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        module = ConvBNReLU(shape.channels, self.out, self.kernel, self.stride)
        return module, Shape(self.out, same_size(shape.size, self.stride))


def pool_module(kind: Literal["max", "l2"], kernel: int, stride: int) -> nn.Module:
    """A 'same'-padded max or L2 pooling layer."""
    if kind == "max":
        return nn.MaxPool2d(kernel, stride, padding=kernel // 2)
    return L2Pool2d(kernel, stride, padding=kernel // 2)


@dataclass(frozen=True)
class Pool:
    """Max ('max') or L2 ('l2') pooling, 'same'-padded; channels pass through."""

    kind: Literal["max", "l2"] = "max"
    kernel: int = 3
    stride: int = 2

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        module = pool_module(self.kind, self.kernel, self.stride)
        return module, Shape(shape.channels, same_size(shape.size, self.stride))


@dataclass(frozen=True)
class Norm:
    """Local response normalisation (the tables' 'rnorm' / 'norm' rows), AlexNet's constants."""

    size: int = 5

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        return nn.LocalResponseNorm(self.size, alpha=1e-4, beta=0.75, k=1.0), shape


@dataclass(frozen=True)
class GlobalAvgPool:
    """Average over all positions and flatten: (B, C, S, S) -> (B, C)."""

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), Shape(shape.channels, 1)


@dataclass(frozen=True)
class Flatten:
    """Flatten the feature map: (B, C, S, S) -> (B, C*S*S)."""

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        return nn.Flatten(), Shape(shape.channels * shape.size * shape.size, 1)


@dataclass(frozen=True)
class Maxout:
    """A fully connected maxout layer with ``out`` outputs, after Flatten or GlobalAvgPool."""

    out: int
    pieces: int = 2

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        if shape.size != 1:
            raise ConfigError(f"Maxout needs a flattened input, got spatial size {shape.size}")
        return MaxoutLinear(shape.channels, self.out, self.pieces), Shape(self.out, 1)


def stack(specs: Sequence[LayerSpec], shape: Shape) -> tuple[nn.Sequential, Shape]:
    """Build the modules of a table in order; return them and the shape that comes out."""
    modules = []
    for spec in specs:
        module, shape = spec.make(shape)
        modules.append(module)
    return nn.Sequential(*modules), shape


class EmbeddingNet(nn.Module):
    """A trunk built from a table, then a linear embedding and L2 normalisation.

    The trunk must end flattened (GlobalAvgPool, Flatten or Maxout). ``forward`` checks that the
    batch is (B, 3, input_size, input_size) and returns (B, embedding_dim) unit rows.

    >>> net = EmbeddingNet([Conv(4, 3), Flatten()], input_size=8, embedding_dim=128).eval()
    >>> net(torch.rand(2, 3, 8, 8)).norm(dim=1).allclose(torch.ones(2))
    True
    """

    def __init__(self, specs: Sequence[LayerSpec], input_size: int, embedding_dim: int = 128) -> None:
        super().__init__()
        check_embedding_dim(embedding_dim)
        self.input_size = input_size
        self.embedding_dim = embedding_dim
        self.trunk, shape = stack(specs, Shape(3, input_size))
        if shape.size != 1:
            raise ConfigError(f"the table must end flattened, but it ends at spatial size {shape.size}")
        self.embedding = nn.Linear(shape.channels, embedding_dim)
        self.normalize = L2Normalize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (3, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(
                f"expected a batch of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        return self.normalize(self.embedding(self.trunk(x)))
