"""Which face of a still photo is its subject: the rule enrolment and ``gallery search`` share.

Ordinary portraits often hold more than the person: MTCNN reports a small, low-score "face" in
the hair or a person far behind. One face is the subject when it clearly dominates the others:

1. it is the largest and at least ``area_ratio`` times the area of the next largest, or
2. its detector score beats every other face's by ``score_margin`` or more, and it is not much
   smaller than any of them (its area at least ``1 / area_ratio`` of the largest).

Otherwise the photo is ambiguous (two comparable faces) and no face is chosen; the reason says
why. A ``pick`` policy (``largest``, ``center``, ``score``) overrides the rule.

>>> faces = Faces(boxes=np.array([[0, 0, 100, 120], [150, 10, 180, 45]]), scores=np.array([0.99, 0.74]))
>>> choose_subject(faces, (250, 250, 3)).index
0
>>> twins = Faces(boxes=np.array([[0, 0, 100, 120], [120, 0, 215, 118]]), scores=np.array([0.99, 0.98]))
>>> choose_subject(twins, (250, 250, 3)).reason
'2 faces found and none is clearly the subject (largest 100x120 px score 0.99, next 95x118 px score 0.98): crop the photo or choose one with --pick largest|center|score'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamproc.align import PickPolicy, pick_face
from streamproc.types import Faces


@dataclass(frozen=True)
class Subject:
    """The chosen face's row (None when there is no clear subject) and, when None, why."""

    index: int | None
    reason: str = ""


def choose_subject(
    faces: Faces,
    image_shape: tuple[int, ...],
    *,
    pick: PickPolicy | None = None,
    area_ratio: float = 2.0,
    score_margin: float = 0.2,
) -> Subject:
    """The subject of a photo by the module's rule, or by ``pick`` when given."""
    if len(faces) == 0:
        return Subject(None, "no face found")
    if pick is not None:
        return Subject(pick_face(faces, image_shape, pick))
    if len(faces) == 1:
        return Subject(0)
    areas = faces.widths * faces.heights
    by_area = np.argsort(-areas, kind="stable")
    if areas[by_area[0]] >= area_ratio * areas[by_area[1]]:
        return Subject(int(by_area[0]))
    by_score = np.argsort(-faces.scores, kind="stable")
    best = int(by_score[0])
    margin = faces.scores[best] - faces.scores[by_score[1]]
    if margin >= score_margin and areas[best] * area_ratio >= areas[by_area[0]]:
        return Subject(best)
    return Subject(None, _ambiguous(faces, by_area))


def _ambiguous(faces: Faces, by_area: np.ndarray) -> str:
    a, b = (int(i) for i in by_area[:2])

    def describe(i: int) -> str:
        return f"{faces.widths[i]:.0f}x{faces.heights[i]:.0f} px score {faces.scores[i]:.2f}"

    return (
        f"{len(faces)} faces found and none is clearly the subject (largest {describe(a)}, "
        f"next {describe(b)}): crop the photo or choose one with --pick largest|center|score"
    )
