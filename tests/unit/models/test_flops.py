"""count(): parameters and multiply-adds checked against hand-computed layers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import nn

from streamproc.models.flops import ModelCost, count

# Each case: a model on a (1, 3, size, size) image, its parameter count and multiply-adds by hand.
CASES: list[tuple[str, Callable[[], nn.Module], int, int, int]] = [
    # 8 filters of 3x3x3 (+8 biases); 4x4x8 = 128 outputs of 27 products each.
    ("conv_same", lambda: nn.Conv2d(3, 8, 3, padding=1), 4, 3 * 8 * 9 + 8, 128 * 27),
    # 2x2 kernel at stride 2 on 6x6: 3x3x4 = 36 outputs of 2*2*3 = 12 products.
    ("conv_stride2", lambda: nn.Conv2d(3, 4, 2, stride=2, bias=False), 6, 4 * 12, 36 * 12),
    # groups=3: each of 6 outputs sees 6/3 = 2 input channels -> 2*3*3 = 18 products, 4x4x6 outputs;
    # the 1x1 conv before it: 4x4x6 outputs of 3 products.
    (
        "grouped_conv",
        lambda: nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1, groups=3)),
        4,
        (3 * 6 + 6) + (6 * 2 * 9 + 6),
        96 * 3 + 96 * 18,
    ),
    # depthwise: 5x5x3 outputs of 3*3 products.
    ("depthwise_conv", lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False), 5, 27, 75 * 9),
    # Linear 12 -> 5: 5 outputs of 12 products; 60 weights + 5 biases.
    ("linear", lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 5)), 2, 65, 60),
    # pooling, activations and batch norm cost nothing here (BN has 2 x 3 parameters).
    ("uncounted_layers", lambda: nn.Sequential(nn.MaxPool2d(2), nn.ReLU(), nn.BatchNorm2d(3)), 4, 6, 0),
]


@pytest.mark.parametrize(
    ("make", "size", "params", "multiply_adds"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_count_matches_hand_computation(
    make: Callable[[], nn.Module], size: int, params: int, multiply_adds: int
) -> None:
    assert count(make(), size) == ModelCost(params=params, multiply_adds=multiply_adds)


def test_count_restores_modes_and_removes_hooks() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout())
    model.train()
    model[1].eval()

    count(model, 8)

    assert [m.training for m in model.modules()] == [True, True, False, True]
    assert all(not m._forward_hooks for m in model.modules())


def test_describe_is_readable() -> None:
    assert ModelCost(7_500_000, 1_600_000_000).describe() == "7.50M params, 1.60G multiply-adds"
