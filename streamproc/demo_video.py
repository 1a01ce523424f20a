"""A demo video synthesised from still photos: one shot per photo, a face moving over a background.

Each shot shows one person's face (cut around the detected face of a photo) sliding across a
plain background, in a lane that alternates between shots so no track carries over. The
ground truth is the list of shots with their times, so a run's track decisions can be scored.

Example:
    >>> shots = plan_shots({"ada": [Path("a1.jpg")], "bob": [Path("b1.jpg")]}, fps=12)
    >>> [(s.person, s.start_s) for s in shots]
    [('ada', 0.0), ('bob', 1.666667)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamproc.detect import Detector
from streamproc.errors import InputError
from streamproc.sources.synth import write_video

WIDTH, HEIGHT, FPS = 480, 360, 12
SPRITE = 112  # side of the pasted patch; the face inside is about 70 px
SHOT_FRAMES = 18  # 1.5 s per shot at 12 fps
GAP_FRAMES = 2  # empty background between shots


@dataclass(frozen=True)
class Shot:
    person: str
    photo: Path
    start_s: float
    end_s: float
    lane: int


def plan_shots(people: dict[str, list[Path]], fps: int = FPS) -> list[Shot]:
    """One shot per photo, people interleaved (a, b, c, a, b, c, ...), lanes alternating."""
    order = []
    for i in range(max(map(len, people.values()), default=0)):
        order += [(name, photos[i]) for name, photos in sorted(people.items()) if i < len(photos)]
    period = (SHOT_FRAMES + GAP_FRAMES) / fps
    return [
        Shot(name, photo, round(k * period, 6), round(k * period + SHOT_FRAMES / fps, 6), k % 2)
        for k, (name, photo) in enumerate(order)
    ]


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


def render(shots: Sequence[Shot], sprite_of: Callable[[Shot], np.ndarray]) -> list[np.ndarray]:
    background = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    background[:, :, 1] = np.linspace(60, 160, WIDTH).astype(np.uint8)[None, :]
    frames = []
    for shot in shots:
        sprite = sprite_of(shot)
        y = 40 if shot.lane == 0 else HEIGHT - 40 - SPRITE
        for step in range(SHOT_FRAMES):
            frame = background.copy()
            x = 30 + step * 12 if shot.lane == 0 else WIDTH - 30 - SPRITE - step * 12
            frame[y : y + SPRITE, x : x + SPRITE] = sprite
            frames.append(frame)
        frames.extend(background.copy() for _ in range(GAP_FRAMES))
    return frames


def make_demo_video(
    detector: Detector, people: dict[str, list[Path]], path: Path, read: Callable[[Path], np.ndarray]
) -> list[Shot]:
    """Write the video to ``path`` and return its shots (the ground truth)."""
    shots = plan_shots(people)
    if not shots:
        raise InputError("no photos to make a demo video from")
    write_video(path, render(shots, lambda s: face_sprite(detector, read(s.photo))), FPS)
    return shots


def shot_at(shots: Sequence[Shot], first_pts: float, last_pts: float) -> Shot | None:
    """The shot that overlaps a track's time span the most (None if none does)."""
    best, best_overlap = None, 0.0
    for shot in shots:
        overlap = min(last_pts, shot.end_s) - max(first_pts, shot.start_s)
        if overlap >= best_overlap and overlap >= 0:
            best, best_overlap = shot, overlap
    return best
