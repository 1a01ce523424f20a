"""Faces and FrameBatch: validation, masking, merging."""

from __future__ import annotations

import numpy as np
import pytest

from streamproc.types import Faces, FrameBatch


def make_faces(n: int, dim: int | None = None, frame: int = 0) -> Faces:
    boxes = np.array([[i, i, i + 10, i + 12] for i in range(n)], np.float32)
    emb = None if dim is None else np.eye(n, dim, dtype=np.float32)
    return Faces(boxes=boxes, scores=np.linspace(0.5, 1.0, n), embedding=emb, frame_index=np.full(n, frame))


def test_mask_and_merge() -> None:
    faces = make_faces(4, dim=8)
    picked = faces[faces.scores > 0.6]
    assert len(picked) == 3 and picked.embedding is not None and picked.embedding.shape == (3, 8)
    merged = Faces.merge([faces, make_faces(2, dim=8, frame=1)])
    assert len(merged) == 6 and merged.frame_index.tolist() == [0, 0, 0, 0, 1, 1]  # type: ignore[union-attr]
    assert Faces.merge([faces, make_faces(1)]).embedding is None
    assert faces.widths.tolist() == [10] * 4 and faces.heights.tolist() == [12] * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": np.zeros(2)}, "expected 1 rows"),
        ({"landmarks": np.zeros((1, 4, 2))}, "axis 1 of size 5"),
        ({"embedding": np.zeros(128)}, "expected 2-D"),
    ],
)
def test_faces_validation(kwargs: dict, message: str) -> None:
    base = {"boxes": np.zeros((1, 4)), "scores": np.zeros(1)}
    with pytest.raises(ValueError, match=message):
        Faces(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("frames", "pts", "message"),
    [
        (np.zeros((2, 4, 4), np.uint8), [0, 1], "expected \\(B, H, W, 3\\) uint8"),
        (np.zeros((2, 4, 4, 3), np.float32), [0, 1], "uint8"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0], "expected 2 values"),
    ],
)
def test_frame_batch_validation(frames: np.ndarray, pts: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameBatch(stream_id="s", frames=frames, pts=np.array(pts, float))


def test_frame_batch_rejects_faces_past_last_frame() -> None:
    with pytest.raises(ValueError, match="past the last frame"):
        FrameBatch(
            stream_id="s", frames=np.zeros((1, 4, 4, 3), np.uint8), pts=[0.0], faces=make_faces(1, frame=3)
        )


def test_public_surface_resolves() -> None:
    import streamproc

    for name in streamproc.__all__:
        assert getattr(streamproc, name) is not None
    with pytest.raises(AttributeError):
        _ = streamproc.no_such_thing  # type: ignore[attr-defined]
