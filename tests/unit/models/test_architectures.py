"""The architecture registry: shapes, unit-norm outputs, the paper's budgets, and bad requests."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from streamproc.errors import ConfigError, InputError
from streamproc.models import architectures
from streamproc.models.architectures import ARCHITECTURES, build, describe
from streamproc.models.flops import count
from streamproc.models.layers import L2Pool2d

_HAS_IRV1 = importlib.util.find_spec("streamproc.models.inception_resnet_v1") is not None


def _names() -> list[object]:
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name == "inception_resnet_v1" and not _HAS_IRV1,
                reason="streamproc/models/inception_resnet_v1.py is not there yet",
            ),
        )
        for name in ARCHITECTURES
    ]


@pytest.mark.parametrize("name", _names())
@pytest.mark.parametrize("embedding_dim", [64, 512])
def test_forward_gives_unit_rows_of_the_requested_size(name: str, embedding_dim: int) -> None:
    size = ARCHITECTURES[name].input_size
    model = build(name, embedding_dim).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, embedding_dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


# name, paper's params, paper's multiply-adds ("FLOPS"), from Tables 1-2 and section 3.3 of the
# paper; None where the paper gives no figure for that model.
PAPER_BUDGETS: list[tuple[str, float | None, float]] = [
    ("nn1", 140e6, 1.6e9),
    ("nn2", 7.5e6, 1.6e9),
    ("nn4", None, 285e6),
    ("nns1", 26e6, 220e6),
    ("nns2", 4.3e6, 20e6),
]


@pytest.mark.parametrize(("name", "params", "multiply_adds"), PAPER_BUDGETS)
def test_cost_is_within_ten_percent_of_the_paper(
    name: str, params: float | None, multiply_adds: float
) -> None:
    cost = count(build(name), ARCHITECTURES[name].input_size)
    if params is not None:
        assert cost.params == pytest.approx(params, rel=0.10)
    assert cost.multiply_adds == pytest.approx(multiply_adds, rel=0.10)


def test_nn3_is_nn2_at_a_smaller_input() -> None:
    nn2, nn3 = count(build("nn2"), 224), count(build("nn3"), 160)
    assert nn3.params == nn2.params
    assert nn3.multiply_adds < 0.6 * nn2.multiply_adds


@pytest.mark.parametrize(
    ("name", "embedding_dim", "message"),
    [
        ("nn5", 128, "choose one of: nn1, nn2, nn3, nn4, nns1, nns2, inception_resnet_v1"),
        ("NN2", 128, "unknown architecture 'NN2'"),
        ("nn2", 100, "embedding size must be one of 64, 128, 256, 512, got 100"),
        ("nn1", 1024, "got 1024"),
        ("inception_resnet_v1", 0, "got 0"),
    ],
)
def test_bad_requests_raise_config_error(name: str, embedding_dim: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(name, embedding_dim)


def test_wrong_input_size_is_an_input_error() -> None:
    model = build("nns2")
    with pytest.raises(
        InputError, match=r"expected a batch of shape \(B, 3, 140, 140\), got \(1, 3, 160, 160\)"
    ):
        model(torch.zeros(1, 3, 160, 160))


def test_registry_input_sizes_match_the_models() -> None:
    for name in ("nn1", "nn2", "nn3", "nn4", "nns1", "nns2"):
        assert build(name).input_size == ARCHITECTURES[name].input_size


def test_describe_rows_are_the_counts() -> None:
    (row,) = describe(64, names=["nns2"])
    cost = count(build("nns2", 64), 140)
    assert row == {
        "name": "nns2",
        "input_size": 140,
        "params": cost.params,
        "multiply_adds": cost.multiply_adds,
        "description": ARCHITECTURES["nns2"].description,
    }


def test_describe_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown architecture"):
        architectures.describe(names=["resnet50"])


def test_describe_checks_the_embedding_size() -> None:
    with pytest.raises(ConfigError, match="embedding size"):
        describe(100, names=["nns2"])


@pytest.mark.parametrize(
    ("stride", "padding", "expected"),
    [
        # 3x3 window of ones: sqrt(9) = 3 inside; zero padding leaves 4 or 6 ones at the border.
        (1, 1, [[2.0, 6**0.5, 2.0], [6**0.5, 3.0, 6**0.5], [2.0, 6**0.5, 2.0]]),
        (1, 0, [[3.0]]),
        (2, 1, [[2.0, 2.0], [2.0, 2.0]]),
    ],
)
def test_l2_pool_is_the_root_of_the_window_sum_of_squares(
    stride: int, padding: int, expected: list[list[float]]
) -> None:
    out = L2Pool2d(3, stride, padding)(torch.ones(1, 1, 3, 3))
    torch.testing.assert_close(out[0, 0], torch.tensor(expected))
