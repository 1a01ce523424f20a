"""Test videos composed from face photos, with per-frame ground truth.

A video is a list of ``Shot`` s joined by hard cuts. A shot has a background (a blurred, noisy random
gradient drawn from its seed), an optional slow camera zoom/pan, and ``Appearance`` s: a ``Photo`` 's face,
cut out with a soft elliptical edge, moving in a straight line from one box to another. ``render``
writes the H.264 file and returns a ``GroundTruth``: for every frame, which person's face is where.

The box of an appearance is where the photo's *face box* lands (for LFW deep-funneled photos the
MTCNN box of the subject is about ``LFW_FACE_BOX``), so a detector's box on the pasted face overlaps
the ground-truth box. Scenario builders make the hard cases of real footage: ``same_place_cut``,
``crossing``, ``short_appearance``, ``crowd``.

Example:
    >>> import tempfile
    >>> photo = Photo("ada", np.full((250, 250, 3), 128, np.uint8))
    >>> shots = same_place_cut(photo, Photo("bob", photo.image), seconds=(1.0, 0.5))
    >>> truth = render(shots, Path(tempfile.mkdtemp()) / "cut.mp4", fps=10)
    >>> truth.n_frames, truth.cuts, [(a.person, a.first_frame, a.last_frame) for a in truth.appearances]
    (15, [10], [('ada', 0, 9), ('bob', 10, 14)])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamproc.sources.synth import write_video

__all__ = [
    "LFW_FACE_BOX",
    "Appearance",
    "AppearanceTruth",
    "FaceTruth",
    "GroundTruth",
    "Photo",
    "Shot",
    "box_at",
    "crossing",
    "crowd",
    "frames",
    "render",
    "same_place_cut",
    "short_appearance",
]

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
LFW_FACE_BOX: Box = (79.0, 65.0, 172.0, 188.0)  # median MTCNN box of the subject, 250x250 deep-funneled
FACE_ASPECT = (188.0 - 65.0) / (172.0 - 79.0)  # height / width of a face box
HEAD_SCALE = (1.45, 1.35)  # the pasted ellipse's axes, as multiples of the face box's width and height


@dataclass(frozen=True)
class Photo:
    """One RGB photo of ``person``; ``face_box`` is where the face is in it."""

    person: str
    image: np.ndarray
    face_box: Box = LFW_FACE_BOX


@dataclass(frozen=True)
class Appearance:
    """``photo`` 's face from ``start_s`` to ``end_s`` (shot time), its face box moving linearly
    from ``start_box`` to ``end_box`` (a changing size is a zoom on the face)."""

    photo: Photo
    start_s: float
    end_s: float
    start_box: Box
    end_box: Box | None = None  # None: stays at start_box

    def __post_init__(self) -> None:
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(f"appearance: expected 0 <= start_s < end_s, got {self.start_s}, {self.end_s}")

    @property
    def person(self) -> str:
        return self.photo.person

    def frames(self, fps: float, n: int) -> range:
        """The indices, within a shot of ``n`` frames at ``fps``, of the frames that show this face."""
        return range(n)[math.ceil(self.start_s * fps - 1e-9) : math.ceil(self.end_s * fps - 1e-9)]

    def box(self, u: float) -> Box:
        """The face box at progress ``u`` (0: the first frame showing it, 1: the last)."""
        end = self.end_box or self.start_box
        u = min(1.0, max(0.0, u))
        return tuple(a + (b - a) * u for a, b in zip(self.start_box, end, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class Shot:
    """``duration_s`` of one camera view. The camera zooms from 1 to ``zoom`` (about the frame centre)
    and pans by ``pan`` pixels (x, y) over the shot; appearances are painted in order (later on top)."""

    duration_s: float
    appearances: Sequence[Appearance] = ()
    background_seed: int = 0
    zoom: float = 1.0
    pan: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class FaceTruth:
    """A face in one frame: whose, where (clipped to the frame), which appearance, how much shows."""

    person: str
    box: Box
    appearance: int  # index into GroundTruth.appearances
    visible: float  # fraction of the face box neither covered by a face on top nor outside the frame


@dataclass(frozen=True)
class AppearanceTruth:
    person: str
    shot: int
    first_frame: int
    last_frame: int


@dataclass
class GroundTruth:
    """Per-frame faces of a rendered video; frame ``i`` has pts ``i / fps``."""

    fps: float
    size: tuple[int, int]  # width, height
    faces: list[list[FaceTruth]] = field(default_factory=list)  # one list per frame
    cuts: list[int] = field(default_factory=list)  # first frame of every shot after the first
    appearances: list[AppearanceTruth] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.faces)

    def frame_at(self, pts: float) -> int:
        return round(pts * self.fps)


def box_at(cx: float, cy: float, width: float, aspect: float = FACE_ASPECT) -> Box:
    """A face box of ``width`` centred on (cx, cy), ``aspect`` times as tall as wide."""
    h = width * aspect
    return (cx - width / 2, cy - h / 2, cx + width / 2, cy + h / 2)


# --- drawing --------------------------------------------------------------------------------------
def background(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A plausible backdrop: a two-colour gradient at a random angle, soft blobs, fine grain."""
    rng = np.random.default_rng(seed)
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = (xs * np.cos(angle) + ys * np.sin(angle)) / (w + h)
    u = (u - u.min()) / max(1e-6, float(u.max() - u.min()))
    c0, c1 = rng.uniform(20, 230, 3), rng.uniform(20, 230, 3)
    image = c0[None, None, :] * (1 - u[..., None]) + c1[None, None, :] * u[..., None]
    blobs = rng.normal(0, 30, (6, 10, 1)) + rng.normal(0, 8, (6, 10, 3))  # mostly light and shade
    image = image + cv2.resize(blobs.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 8))):  # blurred shapes: furniture, windows, people far away
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        rw, rh = int(rng.integers(w // 20, w // 4)), int(rng.integers(h // 10, h // 2))
        tone = (c0 + c1) / 2 + rng.normal(0, 40, 3)
        cv2.rectangle(image, (x, y), (x + rw, y + rh), np.clip(tone, 0, 255).tolist(), -1)
    image = cv2.GaussianBlur(image, (0, 0), 4) + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _head_mask(photo: Photo) -> np.ndarray:
    """Alpha (float32, photo-sized) of a feathered ellipse around the face."""
    h, w = photo.image.shape[:2]
    x1, y1, x2, y2 = photo.face_box
    axes = (int((x2 - x1) * HEAD_SCALE[0] / 2), int((y2 - y1) * HEAD_SCALE[1] / 2))
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int((x1 + x2) / 2), int((y1 + y2) / 2)), axes, 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, (x2 - x1) * 0.06))


def _paste(
    canvas: np.ndarray, photo: Photo, mask: np.ndarray, box: Box
) -> tuple[tuple[int, int], np.ndarray]:
    """Paint ``photo`` so its face box lands on ``box``; returns the painted region's corner and alpha."""
    fx1, fy1, fx2, fy2 = photo.face_box
    sx, sy = (box[2] - box[0]) / (fx2 - fx1), (box[3] - box[1]) / (fy2 - fy1)
    ph, pw = photo.image.shape[:2]
    H, W = canvas.shape[:2]
    left, top = max(0, int(box[0] - fx1 * sx)), max(0, int(box[1] - fy1 * sy))
    right, bottom = (
        min(W, int(np.ceil(box[0] + (pw - fx1) * sx))),
        min(H, int(np.ceil(box[1] + (ph - fy1) * sy))),
    )
    if right <= left or bottom <= top:
        return (0, 0), np.zeros((0, 0), np.float32)
    m = np.array([[sx, 0, box[0] - fx1 * sx - left], [0, sy, box[1] - fy1 * sy - top]], np.float32)
    size = (right - left, bottom - top)
    sprite = cv2.warpAffine(photo.image, m, size, flags=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR)[..., None]
    region = canvas[top:bottom, left:right]
    region[:] = region * (1 - alpha) + sprite * alpha
    return (left, top), alpha[..., 0]


def _camera(shot: Shot, u: float, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine taking scene pixels to frame pixels at shot progress ``u`` in [0, 1]."""
    w, h = size
    z = 1 + (shot.zoom - 1) * u
    dx, dy = shot.pan[0] * u, shot.pan[1] * u
    return np.array([[z, 0, (1 - z) * w / 2 - dx], [0, z, (1 - z) * h / 2 - dy]], np.float64)


def _transform(box: Box, cam: np.ndarray, size: tuple[int, int]) -> tuple[Box, float]:
    """``box`` through the camera, clipped to the frame; and the fraction of it left inside."""
    x1, y1 = cam[:, :2] @ (box[0], box[1]) + cam[:, 2]
    x2, y2 = cam[:, :2] @ (box[2], box[3]) + cam[:, 2]
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(size[0]), x2), min(float(size[1]), y2)
    inside = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1) / max(1e-6, (x2 - x1) * (y2 - y1))
    return (float(cx1), float(cy1), float(cx2), float(cy2)), float(inside)


def _compose(
    shot: Shot, i: int, fps: float, n: int, back: np.ndarray, masks: list[np.ndarray]
) -> tuple[np.ndarray, list[tuple[int, Box, float]]]:
    """Frame ``i`` of ``n`` of the scene (before the camera): image, and (appearance, box, visible) per face."""
    canvas = back.astype(np.float32)
    cover = np.zeros(back.shape[:2], np.float32)  # how much of each pixel later faces hide
    painted: list[tuple[int, Box, tuple[int, int], np.ndarray]] = []
    for k, a in enumerate(shot.appearances):
        shown = a.frames(fps, n)
        if i in shown:
            box = a.box((i - shown[0]) / max(1, len(shown) - 1))
            corner, alpha = _paste(canvas, a.photo, masks[k], box)
            painted.append((k, box, corner, alpha))
    faces = []
    for k, box, (left, top), alpha in reversed(painted):  # the top face first
        x1, y1, x2, y2 = (round(v) for v in box)
        inner = cover[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
        faces.append((k, box, 1.0 - float(inner.mean()) if inner.size else 0.0))
        region = cover[top : top + alpha.shape[0], left : left + alpha.shape[1]]
        region += (1 - region) * alpha
    return canvas, faces[::-1]


def frames(
    shots: Sequence[Shot],
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    *,
    noise: float = 2.0,
    jpeg_quality: int | None = None,
    seed: int = 0,
    truth: GroundTruth | None = None,
) -> Iterator[np.ndarray]:
    """The RGB frames of ``shots``; fills ``truth`` (when given) as frames are made.

    ``noise``: standard deviation of per-frame sensor noise; ``jpeg_quality``: each frame goes through a
    JPEG round trip at this quality first (blocking and ringing, as a re-encoded broadcast shows)."""
    rng = np.random.default_rng(seed)
    first = 0
    for s, shot in enumerate(shots):
        n = round(shot.duration_s * fps)
        back = background(shot.background_seed, size)
        masks = [_head_mask(a.photo) for a in shot.appearances]
        if truth is not None:
            _note_shot(truth, shot, s, first, n, fps)
        for i in range(n):
            scene, faces = _compose(shot, i, fps, n, back, masks)
            cam = _camera(shot, i / max(1, n - 1), size)
            image = cv2.warpAffine(scene, cam, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            if truth is not None:
                truth.faces.append(_frame_truth(truth, shot, faces, cam, size))
            yield _degrade(image, rng, noise, jpeg_quality)
        first += n


def _degrade(
    image: np.ndarray, rng: np.random.Generator, noise: float, jpeg_quality: int | None
) -> np.ndarray:
    """A float scene image as a camera and a re-encoder leave it: noisy, clipped, JPEG-blocky."""
    if noise > 0:
        image = image + rng.normal(0, noise, image.shape).astype(np.float32)
    out = np.clip(image, 0, 255).astype(np.uint8)
    if jpeg_quality is None:
        return out
    _ok, data = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(np.asarray(decoded)[:, :, ::-1])


def _note_shot(truth: GroundTruth, shot: Shot, index: int, first: int, n: int, fps: float) -> None:
    if index > 0:
        truth.cuts.append(first)
    for a in shot.appearances:
        shown = a.frames(fps, n)
        first_f, last_f = (first + shown[0], first + shown[-1]) if shown else (-1, -1)
        truth.appearances.append(AppearanceTruth(a.person, index, first_f, last_f))


def _frame_truth(
    truth: GroundTruth,
    shot: Shot,
    faces: list[tuple[int, Box, float]],
    cam: np.ndarray,
    size: tuple[int, int],
) -> list[FaceTruth]:
    base = len(truth.appearances) - len(shot.appearances)  # this shot's first appearance
    out = []
    for k, box, visible in faces:
        frame_box, inside = _transform(box, cam, size)
        if inside > 0:
            out.append(FaceTruth(shot.appearances[k].person, frame_box, base + k, round(visible * inside, 4)))
    return out


def render(
    shots: Sequence[Shot],
    path: str | Path,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    *,
    crf: int = 23,
    noise: float = 2.0,
    jpeg_quality: int | None = None,
    seed: int = 0,
) -> GroundTruth:
    """Write ``shots`` as an H.264 video at ``path`` (libx264 at ``crf``) and return its ground truth."""
    if not shots:
        raise ValueError("render: expected at least one shot, got none")
    truth = GroundTruth(fps, size)
    write_video(
        path,
        frames(shots, size, fps, noise=noise, jpeg_quality=jpeg_quality, seed=seed, truth=truth),
        fps,
        crf=crf,
    )
    return truth


# --- scenarios ------------------------------------------------------------------------------------
def same_place_cut(
    a: Photo,
    b: Photo,
    *,
    box: Box | None = None,
    seconds: tuple[float, float] = (2.0, 2.0),
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    same_background: bool = False,
) -> list[Shot]:
    """Shot 1: ``a`` 's face at ``box``; a hard cut; shot 2: ``b`` 's face at the very same box.

    ``same_background`` keeps the backdrop across the cut, so only the face tells the shots apart."""
    box = box or box_at(size[0] / 2, size[1] / 2, 100)
    drift = (box[0] - 12, box[1] + 4, box[2] - 12, box[3] + 4)  # a walks slowly towards the box
    return [
        Shot(seconds[0], [Appearance(a, 0.0, seconds[0], drift, box)], seed),
        Shot(seconds[1], [Appearance(b, 0.0, seconds[1], box, drift)], seed if same_background else seed + 1),
    ]


def crossing(
    a: Photo,
    b: Photo,
    *,
    seconds: float = 3.0,
    width: float = 90,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
) -> list[Shot]:
    """One shot: ``a`` walks left to right, ``b`` right to left a little lower, passing in front of ``a``
    (their boxes overlap mid-way)."""
    w, h = size
    margin = width * 0.8
    cy = h / 2
    left, right = box_at(margin, cy, width), box_at(w - margin, cy + width * 0.15, width)
    right_start, left_end = right, box_at(w - margin, cy, width)
    right_end = box_at(margin, cy + width * 0.15, width)
    return [
        Shot(
            seconds,
            [
                Appearance(a, 0.0, seconds, left, left_end),
                Appearance(b, 0.0, seconds, right_start, right_end),
            ],
            seed,
        )
    ]


def short_appearance(
    a: Photo, seconds: float = 0.5, *, width: float = 100, size: tuple[int, int] = (640, 360), seed: int = 0
) -> list[Shot]:
    """One shot of ``seconds + 1`` s in which ``a`` shows only from 0.5 s to 0.5 s + ``seconds``."""
    box = box_at(size[0] * 0.4, size[1] * 0.5, width)
    moved = (box[0] + 10, box[1], box[2] + 10, box[3])
    return [Shot(seconds + 1.0, [Appearance(a, 0.5, 0.5 + seconds, box, moved)], seed)]


def crowd(
    photos: Sequence[Photo],
    *,
    seconds: float = 3.0,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    widths: tuple[float, float] = (60, 130),
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.0, 0.0),
) -> Shot:
    """One shot with every photo's face in its own column, drifting slowly; faces of ``widths`` px."""
    if not photos:
        raise ValueError("crowd: expected at least one photo, got none")
    rng = np.random.default_rng(seed)
    w, h = size
    column = w / len(photos)
    appearances = []
    for i, photo in enumerate(photos):
        width = float(rng.uniform(widths[0], min(widths[1], column * 0.7)))
        half_h = width * FACE_ASPECT / 2
        cx = column * (i + 0.5) + rng.uniform(-0.1, 0.1) * column
        cy = float(rng.uniform(half_h + 4, h - half_h - 4))
        dx, dy = rng.uniform(-0.1, 0.1) * column, rng.uniform(-10, 10)
        end_cy = min(h - half_h - 2, max(half_h + 2, cy + dy))
        appearances.append(
            Appearance(photo, 0.0, seconds, box_at(cx, cy, width), box_at(cx + dx, end_cy, width))
        )
    return Shot(seconds, appearances, seed, zoom, pan)
