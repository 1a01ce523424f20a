"""Inception-ResNet-v1 (Szegedy et al. 2016) as used for FaceNet embeddings, 160x160 input.

The layout follows the widely used FaceNet variant: a stem, 5 x Block35 (residual scale
0.17), reduction A, 10 x Block17 (0.1), reduction B, 5 x Block8 (0.2), a last Block8
without activation, global average pooling, a 1792 -> D bottleneck with batch norm, and
L2 normalisation. Batch norms have no learned scale (gamma fixed at 1), epsilon 1e-3.

Example:
    >>> import torch
    >>> model = InceptionResnetV1(embedding_dim=128).eval()
    >>> model(torch.zeros(1, 3, 160, 160)).shape
    torch.Size([1, 128])
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.005  # torch's momentum = 1 - Keras momentum (0.995)


class BasicConv(nn.Module):
    """Conv (no bias) -> batch norm without learned scale -> ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = True
    ):
        super().__init__()
        padding: str | int = "same" if same and stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.bn.weight.requires_grad_(False)  # Keras scale=False: gamma stays 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Parallel branches, concatenated, projected by a 1x1 conv, added with a scale."""

    def __init__(self, channels: int, branches: list[nn.Sequential], mixed: int, scale: float, relu: bool):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.conv = nn.Conv2d(mixed, channels, 1, bias=True)
        self.scale = scale
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([b(x) for b in self.branches], dim=1)
        out = x + self.scale * self.conv(mixed)
        return torch.relu(out) if self.relu else out


def block35(scale: float = 0.17) -> Residual:
    return Residual(
        256,
        [
            nn.Sequential(BasicConv(256, 32, 1)),
            nn.Sequential(BasicConv(256, 32, 1), BasicConv(32, 32, 3)),
            nn.Sequential(BasicConv(256, 32, 1), BasicConv(32, 32, 3), BasicConv(32, 32, 3)),
        ],
        mixed=96,
        scale=scale,
        relu=True,
    )


def block17(scale: float = 0.1) -> Residual:
    return Residual(
        896,
        [
            nn.Sequential(BasicConv(896, 128, 1)),
            nn.Sequential(BasicConv(896, 128, 1), BasicConv(128, 128, (1, 7)), BasicConv(128, 128, (7, 1))),
        ],
        mixed=256,
        scale=scale,
        relu=True,
    )


def block8(scale: float = 0.2, relu: bool = True) -> Residual:
    return Residual(
        1792,
        [
            nn.Sequential(BasicConv(1792, 192, 1)),
            nn.Sequential(BasicConv(1792, 192, 1), BasicConv(192, 192, (1, 3)), BasicConv(192, 192, (3, 1))),
        ],
        mixed=384,
        scale=scale,
        relu=relu,
    )


class Reduction(nn.Module):
    """Strided conv branches plus a 3x3/2 max pool, concatenated."""

    def __init__(self, branches: list[nn.Sequential]):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([*(b(x) for b in self.branches), self.pool(x)], dim=1)


def reduction_a() -> Reduction:  # 256 -> 384 + 256 + 256 = 896 channels
    return Reduction(
        [
            nn.Sequential(BasicConv(256, 384, 3, stride=2)),
            nn.Sequential(BasicConv(256, 192, 1), BasicConv(192, 192, 3), BasicConv(192, 256, 3, stride=2)),
        ]
    )


def reduction_b() -> Reduction:  # 896 -> 384 + 256 + 256 + 896 = 1792 channels
    return Reduction(
        [
            nn.Sequential(BasicConv(896, 256, 1), BasicConv(256, 384, 3, stride=2)),
            nn.Sequential(BasicConv(896, 256, 1), BasicConv(256, 256, 3, stride=2)),
            nn.Sequential(BasicConv(896, 256, 1), BasicConv(256, 256, 3), BasicConv(256, 256, 3, stride=2)),
        ]
    )


class InceptionResnetV1(nn.Module):
    """FaceNet's Inception-ResNet-v1 trunk with an L2-normalised D-dimensional head."""

    input_size = 160

    def __init__(self, embedding_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(
            BasicConv(3, 32, 3, stride=2),
            BasicConv(32, 32, 3, same=False),
            BasicConv(32, 64, 3),
            nn.MaxPool2d(3, stride=2),
            BasicConv(64, 80, 1),
            BasicConv(80, 192, 3, same=False),
            BasicConv(192, 256, 3, stride=2),
        )
        self.repeat_1 = nn.Sequential(*(block35() for _ in range(5)))
        self.mixed_6a = reduction_a()
        self.repeat_2 = nn.Sequential(*(block17() for _ in range(10)))
        self.mixed_7a = reduction_b()
        self.repeat_3 = nn.Sequential(*(block8() for _ in range(5)))
        self.block8 = block8(scale=1.0, relu=False)
        self.dropout = nn.Dropout(dropout)
        self.bottleneck = nn.Linear(1792, embedding_dim, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(embedding_dim, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.bottleneck_bn.weight.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1792-D pooled trunk output (before the embedding head)."""
        x = self.stem(x)
        x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
        x = self.block8(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck_bn(self.bottleneck(self.dropout(self.features(x))))
        return nn.functional.normalize(x, p=2, dim=1)
