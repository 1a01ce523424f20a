"""int8 codes of unit embeddings: 128 bytes per face, distances close to the float ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from streamproc.eval.verification import squared_l2
from streamproc.gallery.quantize import (
    CODE_MAX,
    SCALE,
    count_clipped,
    dequantize,
    quantize,
    squared_l2_int8,
)


def make_unit(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Random unit rows, float32, direction uniform on the sphere."""
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def perturb(emb: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    x = emb + np.random.default_rng(seed).normal(scale=sigma, size=emb.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_scale_is_the_documented_constant() -> None:
    """Stored codes depend on SCALE: changing it invalidates every gallery. Change it knowingly."""
    assert SCALE == 254.0
    assert CODE_MAX == 127


@pytest.mark.parametrize("dim", [128, 64, 512])
def test_storage_is_one_byte_per_component(dim: int) -> None:
    codes = quantize(make_unit(10, dim))
    assert codes.dtype == np.int8
    assert codes.shape == (10, dim)
    assert codes.nbytes == 10 * dim
    assert len(codes[3].tobytes()) == dim  # what a gallery stores per face


def test_round_trip_error_bound() -> None:
    """Rounding moves each component by at most half a step; renormalising barely adds to it."""
    emb = make_unit(2000)
    back = dequantize(quantize(emb))
    assert back.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-5)
    assert np.abs(back - emb).max() < 1.5 * 0.5 / SCALE
    # whole-vector error: sqrt(D / 12) / SCALE ~ 0.013 for D = 128
    assert np.linalg.norm(back - emb, axis=1).max() < 0.02


@pytest.mark.parametrize(
    ("sigma", "max_error"),
    [
        (None, 0.025),  # unrelated pairs, distance ~2: error std ~0.005
        (0.05, 0.01),  # near pairs, distance ~0.26: error std ~0.002
    ],
)
def test_int8_distances_close_to_float(sigma: float | None, max_error: float) -> None:
    a = make_unit(1000, seed=2)
    b = make_unit(1000, seed=3) if sigma is None else perturb(a, sigma)
    exact = squared_l2(a, b)
    approx = squared_l2_int8(quantize(a), quantize(b))
    assert np.abs(approx - exact).max() < max_error


def test_ranking_preserved_for_well_separated_neighbours() -> None:
    """Each probe's nearest gallery entry (distance ~0.1 vs ~2 for the rest) is the same in int8."""
    gallery = make_unit(200, seed=4)
    probes = perturb(gallery, 0.02, seed=5)
    exact = ((probes[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    qg, qp = quantize(gallery), quantize(probes)
    approx = np.stack(
        [squared_l2_int8(np.repeat(qp[i : i + 1], len(qg), axis=0), qg) for i in range(len(qp))]
    )
    np.testing.assert_array_equal(exact.argmin(axis=1), np.arange(len(gallery)))
    np.testing.assert_array_equal(approx.argmin(axis=1), exact.argmin(axis=1))


def test_clipping_is_counted_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """A component beyond 0.5 clips to 127 with a warning; random unit vectors never get there."""
    assert count_clipped(make_unit(1000)) == 0
    spiky = np.array([[0.8, 0.6, 0.0], [0.0, -1.0, 0.0]], np.float32)
    assert count_clipped(spiky) == 3
    np.testing.assert_array_equal(quantize(spiky), [[127, 127, 0], [0, -127, 0]])
    assert "clipped 3 of 6" in caplog.text


def test_zero_codes_dequantize_to_zero() -> None:
    np.testing.assert_array_equal(dequantize(np.zeros((1, 4), np.int8)), np.zeros((1, 4), np.float32))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: quantize(np.ones((2, 4), np.float32)), ValueError, "L2-normalised rows"),
        (lambda: quantize(np.zeros(4, np.float32)), ValueError, r"\(N, D\) float"),
        (lambda: quantize(np.array([[1, 0]])), ValueError, r"\(N, D\) float"),
        (lambda: quantize(np.array([[np.nan, 0.0]])), ValueError, "finite"),
        (lambda: dequantize(np.zeros((2, 4), np.int16)), ValueError, "int8"),
        (
            lambda: squared_l2_int8(np.zeros((2, 4), np.int8), np.zeros((2, 5), np.int8)),
            ValueError,
            "same shape",
        ),
        (lambda: squared_l2_int8(np.zeros((2, 4), np.int8), np.zeros((2, 4))), ValueError, "qb: expected"),
        (lambda: quantize(np.eye(3, dtype=np.float32)), None, ""),
    ],
)
def test_input_validation(call: Callable[[], object], error: type[Exception] | None, match: str) -> None:
    if error is None:
        call()
    else:
        with pytest.raises(error, match=match):
            call()
