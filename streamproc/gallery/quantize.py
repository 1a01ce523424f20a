"""128 bytes per face: int8 quantisation of unit-length embeddings (FaceNet paper, section 5).

A component ``x`` is stored as ``round(x * SCALE)`` clipped to ``[-127, 127]``. ``SCALE`` is a fixed
constant, never fitted to data, so codes stored today compare with codes made tomorrow.

Why 254 and not 127: a unit 128-D vector has components of typical size ``1/sqrt(128) ~ 0.09`` and
rarely beyond 0.5 (that single coordinate would carry a quarter of the vector's energy). Mapping
``[-0.5, 0.5]`` onto ``[-127, 127]`` halves the rounding step (1/254 ~ 0.0039) compared with the naive
``[-1, 1]`` mapping, and larger components are clipped and counted (``count_clipped``). Measured on
20,000 random unit 128-D vectors: nothing clips (largest component 0.43), the squared-distance error
has std 0.0046 for unrelated pairs (distance ~2; 0.0091 at scale 127) and 0.0017 for near pairs
(distance ~0.26), with a bias of +0.0004 (rounding noise adds ``2 * D / (12 * SCALE**2)``).

>>> rng = np.random.default_rng(0)
>>> emb = rng.normal(size=(2, 128)).astype(np.float32)
>>> emb /= np.linalg.norm(emb, axis=1, keepdims=True)
>>> q = quantize(emb)
>>> q.dtype, q[0].nbytes
(dtype('int8'), 128)
>>> bool(abs(squared_l2_int8(q[:1], q[1:])[0] - np.sum((emb[0] - emb[1]) ** 2)) < 0.02)
True
"""

from __future__ import annotations

import logging

import numpy as np

SCALE = 254.0  # code = round(component * SCALE); |component| > 127/254 = 0.5 clips
CODE_MAX = 127  # codes use the symmetric range [-127, 127]; -128 is never produced
_NORM_TOLERANCE = 1e-3
_WARN_CLIPPED_FRACTION = 1e-3

log = logging.getLogger(__name__)


def _check_unit_rows(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb)
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"expected a (N, D) float array of embeddings, got {emb.dtype} {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("expected finite embeddings, got NaN or inf")
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    if len(norms) and np.max(np.abs(norms - 1.0)) > _NORM_TOLERANCE:
        raise ValueError(
            f"expected L2-normalised rows (norm 1), got norms in [{norms.min():.4f}, {norms.max():.4f}]; "
            "divide each row by its norm first"
        )
    return emb


def count_clipped(emb: np.ndarray) -> int:
    """Number of components that ``quantize`` clips (``|x| * SCALE`` rounds beyond 127).

    >>> count_clipped(np.array([[0.6, 0.8], [1.0, 0.0]]))
    3
    """
    emb = _check_unit_rows(emb)
    return int(np.sum(np.abs(np.rint(emb.astype(np.float64) * SCALE)) > CODE_MAX))


def quantize(emb: np.ndarray) -> np.ndarray:
    """Unit-length ``(N, D)`` float rows to ``(N, D)`` int8 codes, one byte per component.

    Logs a warning when more than 0.1% of the components clip: such a model's embeddings do not
    suit ``SCALE`` and int8 distances will be noticeably off.

    >>> quantize(np.array([[0.6, -0.8]], np.float32)).tolist()
    [[127, -127]]
    """
    emb = _check_unit_rows(emb)
    scaled = np.rint(emb.astype(np.float64) * SCALE)
    clipped = int(np.sum(np.abs(scaled) > CODE_MAX))
    if clipped > _WARN_CLIPPED_FRACTION * max(scaled.size, 1):
        log.warning(
            "int8 quantisation clipped %d of %d components (|x| > %.3f); distances lose precision",
            clipped,
            scaled.size,
            CODE_MAX / SCALE,
        )
    return np.clip(scaled, -CODE_MAX, CODE_MAX).astype(np.int8)


def _check_codes(q: np.ndarray, name: str = "q") -> np.ndarray:
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype != np.int8:
        raise ValueError(f"{name}: expected a (N, D) int8 array of codes, got {q.dtype} {q.shape}")
    return q


def dequantize(q: np.ndarray) -> np.ndarray:
    """int8 codes back to float32 rows, renormalised to unit length (all-zero rows stay zero).

    >>> dequantize(np.array([[127, -127]], np.int8))
    array([[ 0.70710677, -0.70710677]], dtype=float32)
    """
    x = _check_codes(q).astype(np.float32) / np.float32(SCALE)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def squared_l2_int8(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 distance of codes, summed exactly in int32, then divided by ``SCALE**2``.

    Returns float64 ``(N,)`` on the same scale as float distances of unit vectors ([0, 4]).
    int32 cannot overflow below 33,000 dimensions (each term is at most 254**2).

    >>> squared_l2_int8(np.array([[127, 0]], np.int8), np.array([[0, 127]], np.int8))
    array([0.5])
    """
    qa = _check_codes(qa, "qa")
    qb = _check_codes(qb, "qb")
    if qa.shape != qb.shape:
        raise ValueError(f"squared_l2_int8: expected codes of the same shape, got {qa.shape} and {qb.shape}")
    diff = qa.astype(np.int32) - qb.astype(np.int32)
    return np.einsum("ij,ij->i", diff, diff).astype(np.float64) / (SCALE * SCALE)
