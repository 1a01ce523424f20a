"""A demo video synthesised from still photos: one shot per photo, joined by hard cuts.

Each shot shows one person's photo composited into a scene (``streamproc.scenes``): the face
drifts slowly, and the next shot's face appears **where the last one stood** (a same-place cut);
every third cut keeps the backdrop, so only the face tells those shots apart. Every fourth shot is
a short appearance (0.6 s). The ground truth is the list of shots with their times, so a run's
decisions can be scored per appearance.

Example:
    >>> shots = plan_shots({"ada": [Path("a1.jpg")], "bob": [Path("b1.jpg")]}, fps=12)
    >>> [(s.person, s.start_s, s.end_s) for s in shots]
    [('ada', 0.0, 1.5), ('bob', 1.5, 3.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamproc import scenes
from streamproc.detect import Detector
from streamproc.errors import InputError

WIDTH, HEIGHT, FPS = 480, 360, 12
SPRITE = 112  # side of a face patch cut by ``face_sprite`` (tests and benches paste these)
SHOT_S, SHORT_S = 1.5, 0.6  # a shot, and every fourth (a short appearance)
FACE_WIDTH = 80  # face box width in the demo video


@dataclass(frozen=True)
class Shot:
    person: str
    photo: Path
    start_s: float
    end_s: float


def plan_shots(people: dict[str, list[Path]], fps: int = FPS) -> list[Shot]:
    """One shot per photo, people interleaved (a, b, c, a, b, c, ...), every fourth one short."""
    order = []
    for i in range(max(map(len, people.values()), default=0)):
        order += [(name, photos[i]) for name, photos in sorted(people.items()) if i < len(photos)]
    shots, start = [], 0.0
    for k, (name, photo) in enumerate(order):
        length = round(round((SHORT_S if k % 4 == 3 else SHOT_S) * fps) / fps, 6)
        shots.append(Shot(name, photo, round(start, 6), round(start + length, 6)))
        start += length
    return shots


def face_sprite(detector: Detector, image: np.ndarray, size: int = SPRITE) -> np.ndarray:
    """A square patch around the largest face of ``image`` (1.6x the face box), ``size`` px a side."""
    faces = detector([image])[0]
    if len(faces) == 0:
        raise InputError("no face found in a demo photo")
    x1, y1, x2, y2 = faces.boxes[int(np.argmax(faces.widths * faces.heights))].tolist()
    side = int(max(x2 - x1, y2 - y1) * 1.6)
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_REPLICATE)
    left, top = int((x1 + x2) / 2 - side / 2) + side, int((y1 + y2) / 2 - side / 2) + side
    patch = padded[top : top + side, left : left + side]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def scene_shots(shots: Sequence[Shot], photos: Sequence[scenes.Photo]) -> list[scenes.Shot]:
    """The scene of each shot: the face drifts from where the previous shot's face ended."""
    out, place = [], scenes.box_at(WIDTH / 2, HEIGHT / 2, FACE_WIDTH)
    rng = np.random.default_rng(0)
    for k, (shot, photo) in enumerate(zip(shots, photos, strict=True)):
        dx, dy = rng.uniform(-40, 40), rng.uniform(-20, 20)
        end = (place[0] + dx, place[1] + dy, place[2] + dx, place[3] + dy)
        end = _inside(end)
        backdrop = k - 1 if k % 3 == 2 else k  # every third cut keeps the backdrop
        duration = shot.end_s - shot.start_s
        out.append(scenes.Shot(duration, [scenes.Appearance(photo, 0.0, duration, place, end)], backdrop))
        place = end
    return out


def _inside(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    dx = max(0.0, 8 - box[0]) - max(0.0, box[2] - (WIDTH - 8))
    dy = max(0.0, 8 - box[1]) - max(0.0, box[3] - (HEIGHT - 8))
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def make_demo_video(
    detector: Detector, people: dict[str, list[Path]], path: Path, read: Callable[[Path], np.ndarray]
) -> list[Shot]:
    """Write the video to ``path`` and return its shots (the ground truth)."""
    shots = plan_shots(people)
    if not shots:
        raise InputError("no photos to make a demo video from")
    photos = []
    for shot in shots:
        image = read(shot.photo)
        faces = detector([image])[0]
        if len(faces) == 0:
            raise InputError(f"no face found in demo photo {shot.photo}")
        box = faces.boxes[int(np.argmax(faces.widths * faces.heights))]
        photos.append(scenes.Photo(shot.person, image, tuple(float(v) for v in box)))  # type: ignore[arg-type]
    scenes.render(scene_shots(shots, photos), path, size=(WIDTH, HEIGHT), fps=FPS)
    return shots


def shot_at(shots: Sequence[Shot], first_pts: float, last_pts: float) -> Shot | None:
    """The shot that overlaps a track's time span the most (None if none does)."""
    best, best_overlap = None, 0.0
    for shot in shots:
        overlap = min(last_pts, shot.end_s) - max(first_pts, shot.start_s)
        if overlap >= best_overlap and overlap >= 0:
            best, best_overlap = shot, overlap
    return best
