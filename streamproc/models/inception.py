"""The paper's Inception family: NN2, NN3, NN4, NNS1 and NNS2, each one table of layer specs.

NN2 is Table 2 of the paper row by row: GoogLeNet with L2 pooling where the table says 'L2', max
pooling elsewhere; the pooling is always 3x3 and runs in parallel to the 1x1 / 3x3 / 5x5 branches,
optionally followed by a 1x1 'pool proj'. Stride-2 modules (3c, 4e) downsample in their 3x3, 5x5
and pool branches, with the 1x1 reductions at full resolution (that is what makes the table's
FLOPS add up), and pass the pooled channels straight through.

* NN3 is NN2 at 160x160 (paper: "identical in architecture but has a reduced input size").
* NN4 is NN2 at 96x96 without the 5x5 branches of 4e, 5a and 5b (paper: "does not use 5x5
  convolutions in the higher layers as the receptive field is already too small by then"); at
  96x96 these are the modules whose 5x5 sees a 6x6 or 3x3 map. It lands on the paper's 285M
  multiply-adds and at the low end of its "6.6M-7.5M" parameters for Inception models.
* NNS1 ("mini Inception", 165x165) and NNS2 ("tiny Inception", the paper's Table 3 says
  140x116; we use 140x140) are not described beyond their budgets: 26M params / 220M FLOPS and
  4.3M params / 20M FLOPS. Our tables are our own design that meets those budgets: a narrow
  Inception trunk, and, as in NN1, most parameters in a flattened maxout layer.

Differences from the paper: every convolution is followed by batch norm (no conv bias); the
'norm' rows are local response normalisation.

Measured with :func:`streamproc.models.flops.count` (128-d embedding) vs. the paper:

    ======  =====  ===============  ======================
    model   input  params (paper)   multiply-adds (paper)
    ======  =====  ===============  ======================
    NN2     224    7.46M (7.5M)     1.597G (1.6B)
    NN3     160    7.46M (-)        0.815G (-)
    NN4     96     6.62M (-)        0.285G (285M)
    NNS1    165    25.83M (26M)     0.219G (220M)
    NNS2    140    4.29M (4.3M)     0.020G (20M)
    ======  =====  ===============  ======================

The paper gives no per-model parameter counts for NN3 and NN4 beyond "around 6.6M-7.5M" for its
Inception models, and no FLOPS for NN3.

    >>> import torch
    >>> InceptionNet("nns2", embedding_dim=64)(torch.zeros(2, 3, 140, 140)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from streamproc.errors import ConfigError
from streamproc.models.layers import (
    Conv,
    ConvBNReLU,
    EmbeddingNet,
    Flatten,
    GlobalAvgPool,
    LayerSpec,
    Maxout,
    Norm,
    Pool,
    Shape,
    pool_module,
    same_size,
)


@dataclass(frozen=True)
class Inception:
    """One Inception row of a table, in the paper's columns (Table 2).

    A zero width drops that branch; ``pool_proj=0`` passes the pooled channels through.

    >>> Inception("3a", 64, 96, 128, 16, 32, "max", 32).out_channels(192)
    256
    """

    name: str
    n1x1: int
    n3x3_reduce: int
    n3x3: int
    n5x5_reduce: int
    n5x5: int
    pool: Literal["max", "l2"]
    pool_proj: int = 0
    stride: int = 1

    def out_channels(self, in_channels: int) -> int:
        return self.n1x1 + self.n3x3 + self.n5x5 + (self.pool_proj or in_channels)

    def make(self, shape: Shape) -> tuple[nn.Module, Shape]:
        out = Shape(self.out_channels(shape.channels), same_size(shape.size, self.stride))
        return InceptionBlock(shape.channels, self), out


def _reduce_then_conv(in_channels: int, reduce: int, out: int, kernel: int, stride: int) -> nn.Module:
    if reduce == 0:
        return ConvBNReLU(in_channels, out, kernel, stride)
    return nn.Sequential(ConvBNReLU(in_channels, reduce, 1), ConvBNReLU(reduce, out, kernel, stride))


class InceptionBlock(nn.Module):
    """Parallel 1x1, 3x3, 5x5 and 3x3-pool branches, concatenated along channels.

    >>> block = InceptionBlock(192, Inception("3a", 64, 96, 128, 16, 32, "max", 32))
    >>> block(torch.zeros(1, 192, 28, 28)).shape
    torch.Size([1, 256, 28, 28])
    """

    def __init__(self, in_channels: int, spec: Inception) -> None:
        super().__init__()
        branches: list[nn.Module] = []
        if spec.n1x1:
            branches.append(ConvBNReLU(in_channels, spec.n1x1, 1, spec.stride))
        if spec.n3x3:
            branches.append(_reduce_then_conv(in_channels, spec.n3x3_reduce, spec.n3x3, 3, spec.stride))
        if spec.n5x5:
            branches.append(_reduce_then_conv(in_channels, spec.n5x5_reduce, spec.n5x5, 5, spec.stride))
        pool = pool_module(spec.pool, 3, spec.stride)
        branches.append(
            nn.Sequential(pool, ConvBNReLU(in_channels, spec.pool_proj, 1)) if spec.pool_proj else pool
        )
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


NN2_TABLE: tuple[LayerSpec, ...] = (
    Conv(64, 7, 2),  # conv1 (7x7x3, 2)   224 -> 112x112x64
    Pool("max"),  # max pool + norm      -> 56x56x64
    Norm(),
    Conv(64, 1),  # inception (2): 3x3 reduce 64
    Conv(192, 3),  # inception (2): 3x3 192  -> 56x56x192
    Norm(),  # norm + max pool
    Pool("max"),  # -> 28x28x192
    #         name  1x1  3x3r 3x3  5x5r 5x5  pool  proj  stride
    Inception("3a", 64, 96, 128, 16, 32, "max", 32),  # 28x28x256
    Inception("3b", 64, 96, 128, 32, 64, "l2", 64),  # 28x28x320
    Inception("3c", 0, 128, 256, 32, 64, "max", 0, 2),  # 14x14x640
    Inception("4a", 256, 96, 192, 32, 64, "l2", 128),  # 14x14x640
    Inception("4b", 224, 112, 224, 32, 64, "l2", 128),
    Inception("4c", 192, 128, 256, 32, 64, "l2", 128),
    Inception("4d", 160, 144, 288, 32, 64, "l2", 128),
    Inception("4e", 0, 160, 256, 64, 128, "max", 0, 2),  # 7x7x1024
    Inception("5a", 384, 192, 384, 48, 128, "l2", 128),  # 7x7x1024
    Inception("5b", 384, 192, 384, 48, 128, "max", 128),
    GlobalAvgPool(),  # avg pool -> 1024; the embedding layer is 'fully conn'
)


def without_5x5(table: tuple[LayerSpec, ...], names: frozenset[str]) -> tuple[LayerSpec, ...]:
    """The table with the 5x5 branches of the named Inception modules removed."""
    return tuple(
        dataclasses.replace(spec, n5x5_reduce=0, n5x5=0)
        if isinstance(spec, Inception) and spec.name in names
        else spec
        for spec in table
    )


NN4_TABLE = without_5x5(NN2_TABLE, frozenset({"4e", "5a", "5b"}))

NNS1_TABLE: tuple[LayerSpec, ...] = (
    Conv(48, 7, 2),  # 165 -> 83x83x48
    Pool("max"),  # -> 42
    Norm(),
    Conv(32, 1),
    Conv(96, 3),  # 42x42x96
    Norm(),
    Pool("max"),  # -> 21
    #         name  1x1  3x3r 3x3  5x5r 5x5  pool  proj  stride
    Inception("3a", 32, 48, 64, 8, 16, "max", 16),  # 21x21x128
    Inception("3b", 32, 48, 64, 16, 32, "l2", 32),  # 21x21x160
    Inception("3c", 0, 64, 128, 16, 32, "max", 0, 2),  # 11x11x320
    Inception("4a", 128, 64, 128, 16, 32, "l2", 64),  # 11x11x352
    Inception("4e", 0, 96, 192, 32, 64, "max", 0, 2),  # 6x6x608
    Flatten(),  # 21888
    Maxout(560),
    Maxout(512),
)

NNS2_TABLE: tuple[LayerSpec, ...] = (
    Conv(16, 3, 2),  # 140 -> 70x70x16
    Pool("max"),  # -> 35
    Conv(16, 1),
    Conv(48, 3),  # 35x35x48
    Pool("max"),  # -> 18
    #         name  1x1  3x3r 3x3  5x5r 5x5  pool  proj  stride
    Inception("3a", 16, 16, 32, 8, 8, "max", 8),  # 18x18x64
    Inception("3c", 0, 32, 64, 8, 16, "max", 0, 2),  # 9x9x144
    Pool("max"),  # -> 5x5x144
    Flatten(),
    Maxout(580),
)

TABLES: dict[str, tuple[int, tuple[LayerSpec, ...]]] = {
    "nn2": (224, NN2_TABLE),
    "nn3": (160, NN2_TABLE),
    "nn4": (96, NN4_TABLE),
    "nns1": (165, NNS1_TABLE),
    "nns2": (140, NNS2_TABLE),
}


class InceptionNet(EmbeddingNet):
    """One of the paper's Inception models by name: 'nn2', 'nn3', 'nn4', 'nns1' or 'nns2'.

    >>> InceptionNet("nn3").input_size
    160
    """

    def __init__(self, arch: str, embedding_dim: int = 128) -> None:
        if arch not in TABLES:
            raise ConfigError(f"unknown Inception model {arch!r}; choose one of {', '.join(TABLES)}")
        input_size, table = TABLES[arch]
        super().__init__(table, input_size, embedding_dim)
        self.arch = arch
