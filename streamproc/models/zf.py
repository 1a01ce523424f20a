"""NN1: the paper's Zeiler&Fergus-style network with 1x1 convolutions (Table 1), 220x220 input.

Each row of :data:`NN1_TABLE` is one row of the paper's Table 1 (the no-op 'concat' row left out).
Spatial sizes follow the table: 220 -> conv1 110 -> pool1 55 -> pool2 28 -> pool3 14 -> pool4 7,
then fc1 and fc2 are maxout layers (p=2) of 32x128 = 4096 units, and 'fc7128' is the embedding.

Differences from the paper: every convolution is followed by batch norm (the paper predates it;
it lets these nets train from scratch), so convolutions carry no bias; the two 'rnorm' rows are
kept as local response normalisation.

Measured with :func:`streamproc.models.flops.count` (128-d embedding) vs. the paper's Table 1:

    ======  ==================  =====================
    model   params (paper)      multiply-adds (paper)
    ======  ==================  =====================
    NN1     140.03M (140M)      1.606G (1.6B)
    ======  ==================  =====================

    >>> import torch
    >>> NN1(embedding_dim=64)(torch.zeros(2, 3, 220, 220)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from streamproc.models.layers import Conv, EmbeddingNet, Flatten, LayerSpec, Maxout, Norm, Pool

NN1_INPUT_SIZE = 220

NN1_TABLE: tuple[LayerSpec, ...] = (
    Conv(64, 7, 2),  # conv1    220x220x3   -> 110x110x64
    Pool("max"),  # pool1       110x110x64  -> 55x55x64
    Norm(),  # rnorm1
    Conv(64, 1),  # conv2a      55x55x64    -> 55x55x64
    Conv(192, 3),  # conv2      55x55x64    -> 55x55x192
    Norm(),  # rnorm2
    Pool("max"),  # pool2       55x55x192   -> 28x28x192
    Conv(192, 1),  # conv3a
    Conv(384, 3),  # conv3      28x28x192   -> 28x28x384
    Pool("max"),  # pool3       28x28x384   -> 14x14x384
    Conv(384, 1),  # conv4a
    Conv(256, 3),  # conv4      14x14x384   -> 14x14x256
    Conv(256, 1),  # conv5a
    Conv(256, 3),  # conv5
    Conv(256, 1),  # conv6a
    Conv(256, 3),  # conv6
    Pool("max"),  # pool4       14x14x256   -> 7x7x256
    Flatten(),  #               7x7x256     -> 12544
    Maxout(32 * 128),  # fc1    12544       -> 4096 (maxout p=2)
    Maxout(32 * 128),  # fc2    4096        -> 4096 (maxout p=2)
)


class NN1(EmbeddingNet):
    """The paper's NN1 (Table 1): ~140M parameters, ~1.6G multiply-adds at 220x220.

    >>> NN1().input_size
    220
    """

    def __init__(self, embedding_dim: int = 128) -> None:
        super().__init__(NN1_TABLE, NN1_INPUT_SIZE, embedding_dim)
