"""The batch types that cross every stage boundary.

``Faces`` is columnar: one numpy array per field, one row per face. Index it with
a boolean mask or an index array to select faces; ``merge`` concatenates.

>>> f = Faces.empty()
>>> len(f)
0
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

EMBEDDING_DTYPE = np.float32


def _check(name: str, arr: np.ndarray, shape: tuple[int | None, ...], n: int) -> None:
    if arr.ndim != len(shape):
        raise ValueError(f"Faces.{name}: expected {len(shape)}-D array, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"Faces.{name}: expected {n} rows, got {arr.shape[0]}")
    for axis, want in enumerate(shape[1:], start=1):
        if want is not None and arr.shape[axis] != want:
            raise ValueError(f"Faces.{name}: expected axis {axis} of size {want}, got {arr.shape}")


@dataclass
class Faces:
    """Faces found in one or more frames, one row per face.

    Example:
        >>> faces = Faces(boxes=np.array([[0, 0, 10, 10]], np.float32), scores=np.array([0.9], np.float32))
        >>> faces[faces.scores > 0.5].boxes.shape
        (1, 4)
    """

    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in pixels
    scores: np.ndarray  # (N,) float32 detector confidence
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32: eyes, nose, mouth corners
    frame_index: np.ndarray | None = None  # (N,) int32, row in the FrameBatch
    track_id: np.ndarray | None = None  # (N,) int64, -1 = not tracked yet
    embedding: np.ndarray | None = None  # (N, D) float32, L2-normalised
    quality: np.ndarray | None = None  # (N,) float32 in [0, 1]
    needs_embedding: np.ndarray | None = None  # (N,) bool: the tracker still wants this face embedded

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        _check("scores", self.scores, (None,), n)
        if self.landmarks is None:
            self.landmarks = np.full((n, 5, 2), np.nan, np.float32)
        self.landmarks = np.asarray(self.landmarks, np.float32)
        _check("landmarks", self.landmarks, (None, 5, 2), n)
        if self.frame_index is None:
            self.frame_index = np.zeros(n, np.int32)
        self.frame_index = np.asarray(self.frame_index, np.int32)
        _check("frame_index", self.frame_index, (None,), n)
        if self.track_id is None:
            self.track_id = np.full(n, -1, np.int64)
        self.track_id = np.asarray(self.track_id, np.int64)
        _check("track_id", self.track_id, (None,), n)
        if self.quality is None:
            self.quality = np.ones(n, np.float32)
        self.quality = np.asarray(self.quality, np.float32)
        _check("quality", self.quality, (None,), n)
        if self.needs_embedding is None:
            self.needs_embedding = np.ones(n, bool)
        self.needs_embedding = np.asarray(self.needs_embedding, bool)
        _check("needs_embedding", self.needs_embedding, (None,), n)
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, EMBEDDING_DTYPE)
            _check("embedding", self.embedding, (None, None), n)

    @classmethod
    def empty(cls, embedding_dim: int | None = None) -> Faces:
        emb = None if embedding_dim is None else np.zeros((0, embedding_dim), EMBEDDING_DTYPE)
        return cls(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32), embedding=emb)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: np.ndarray | slice | int) -> Faces:
        if isinstance(index, int):
            index = slice(index, index + 1)
        kwargs: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kwargs[f.name] = None if value is None else value[index]
        return Faces(**kwargs)

    @classmethod
    def merge(cls, parts: Sequence[Faces]) -> Faces:
        """Concatenate faces; embeddings survive only when every part has them."""
        if not parts:
            return cls.empty()
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            kwargs[f.name] = None if any(v is None for v in values) else np.concatenate(values)
        return cls(**kwargs)

    def scaled(self, factor: float) -> Faces:
        """The same faces with boxes and landmarks multiplied by ``factor`` (another image size)."""
        assert self.landmarks is not None  # __post_init__ fills it
        return replace(self, boxes=self.boxes * factor, landmarks=self.landmarks * factor)

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]


@dataclass
class Crops:
    """Face crops on their way to an embedder, with the 5 landmarks in crop pixels (NaN: unknown).

    The pipeline cuts one kind of crop (``align`` config); each model adapts it to its own input
    (``ModelCard.alignment``): a resize, or a similarity warp through ``points``.

    Example:
        >>> c = Crops(np.zeros((2, 8, 8, 3), np.uint8))
        >>> len(Crops.concat([c, c[:1]])), c.points.shape
        (3, (2, 5, 2))
    """

    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    points: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 5, 2), np.float32)
    )  # (N, 5, 2) crop pixels

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"Crops.images: expected (N, S, S, 3) uint8, got {self.images.dtype} {self.images.shape}"
            )
        n = len(self.images)
        if len(self.points) == 0 and n:
            self.points = np.full((n, 5, 2), np.nan, np.float32)
        self.points = np.asarray(self.points, np.float32)
        if self.points.shape != (n, 5, 2):
            raise ValueError(f"Crops.points: expected shape {(n, 5, 2)}, got {self.points.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice | np.ndarray) -> Crops:
        return Crops(self.images[index], self.points[index])

    @staticmethod
    def concat(parts: Sequence[Crops]) -> Crops:
        if not parts:
            raise ValueError("Crops.concat: expected at least one part")
        return Crops(np.concatenate([p.images for p in parts]), np.concatenate([p.points for p in parts]))


@dataclass(frozen=True)
class Decision:
    """One identification of one track, emitted once per (stream, track, model version, revision).

    ``identity`` is None for an unknown face. ``revision`` 0 is the first decision; a later
    change of mind is a separate update event with a higher revision.
    """

    stream_id: str
    track_id: int
    first_pts: float
    last_pts: float
    identity: str | None
    distance: float
    n_frames: int
    model_version: str
    gallery_version: str
    revision: int = 0
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    threshold: float = float("nan")  # the squared-L2 distance up to which a match was accepted

    @property
    def event_id(self) -> str:
        """Idempotent id: the same decision always gets the same id."""
        key = f"{self.stream_id}|{self.track_id}|{self.model_version}|{self.revision}"
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    @property
    def kind(self) -> str:
        return "decision" if self.revision == 0 else "update"

    def to_event(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "stream_id": self.stream_id,
            "track_id": self.track_id,
            "first_pts": round(self.first_pts, 6),
            "last_pts": round(self.last_pts, 6),
            "identity": self.identity,
            "known": self.identity is not None,
            "distance": None if not np.isfinite(self.distance) else round(float(self.distance), 6),
            "n_frames": self.n_frames,
            "model_version": self.model_version,
            "gallery_version": self.gallery_version,
            "revision": self.revision,
            "threshold": None if not np.isfinite(self.threshold) else round(float(self.threshold), 6),
        }


@dataclass
class FrameBatch:
    """Consecutive frames of one stream and the faces found in them.

    Example:
        >>> frames = np.zeros((2, 48, 64, 3), np.uint8)
        >>> batch = FrameBatch(stream_id="cam1", frames=frames, pts=np.array([0.0, 0.04]))
        >>> len(batch), len(batch.faces)
        (2, 0)
    """

    stream_id: str
    frames: np.ndarray  # (B, H, W, 3) uint8 RGB
    pts: np.ndarray  # (B,) float64 seconds from the stream
    faces: Faces = field(default_factory=Faces.empty)
    end_of_stream: bool = False
    model_version: str = ""
    closed_tracks: list[int] = field(default_factory=list)  # tracks that ended in this batch
    decisions: list[Decision] = field(default_factory=list)
    detected: np.ndarray | None = None  # (B,) bool: the frame got a detector pass (None: not scheduled yet)
    cuts: np.ndarray | None = None  # (B,) bool: a shot cut right before this frame

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"FrameBatch.frames: expected (B, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}"
            )
        self.pts = np.asarray(self.pts, np.float64).reshape(-1)
        if len(self.pts) != len(self.frames):
            raise ValueError(f"FrameBatch.pts: expected {len(self.frames)} values, got {len(self.pts)}")
        if len(self.faces) and int(self.faces.frame_index.max()) >= len(self.frames):  # type: ignore[union-attr]
            raise ValueError("FrameBatch.faces: frame_index points past the last frame")
        for name in ("detected", "cuts"):
            mask = getattr(self, name)
            if mask is not None:
                mask = np.asarray(mask, bool).reshape(-1)
                if len(mask) != len(self.frames):
                    raise ValueError(
                        f"FrameBatch.{name}: expected {len(self.frames)} values, got {len(mask)}"
                    )
                setattr(self, name, mask)

    def __len__(self) -> int:
        return len(self.frames)
