"""The subject rule of still photos: table-driven over hand-placed boxes and scores."""

from __future__ import annotations

import numpy as np
import pytest

from streamproc.subject import choose_subject
from streamproc.types import Faces

SHAPE = (250, 250, 3)


def faces(*rows: tuple[float, float, float, float, float]) -> Faces:
    """Faces from ``(x, y, width, height, score)`` rows."""
    arr = np.array(rows, np.float32).reshape(-1, 5)
    boxes = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:4]], axis=1)
    return Faces(boxes=boxes, scores=arr[:, 4])


# (faces, pick, expected index or None, reason fragment)
CASES = [
    ("none", faces(), None, None, "no face found"),
    ("one", faces((10, 10, 50, 60, 0.9)), None, 0, ""),
    ("small false face in the hair", faces((150, 5, 25, 30, 0.74), (60, 60, 100, 120, 0.99)), None, 1, ""),
    ("person far behind, confident", faces((60, 60, 100, 120, 0.99), (5, 5, 40, 45, 0.999)), None, 0, ""),
    ("exactly twice the area", faces((0, 0, 20, 20, 0.9), (50, 50, 20, 40, 0.9)), None, 1, ""),
    ("comparable size, far more confident", faces((0, 0, 90, 100, 0.97), (120, 0, 80, 90, 0.72)), None, 0, ""),
    ("two comparable faces", faces((0, 0, 100, 120, 0.99), (120, 0, 95, 118, 0.98)), None, None, "2 faces"),
    ("largest by area despite its score", faces((0, 0, 100, 100, 0.7), (150, 0, 60, 60, 0.99)), None, 0, ""),
    ("confident but much smaller", faces((0, 0, 100, 100, 0.7), (110, 0, 80, 80, 0.7), (200, 0, 50, 50, 0.99)), None, None, "3 faces"),
    ("three, two comparable", faces((0, 0, 90, 90, 0.99), (100, 0, 85, 90, 0.98), (200, 0, 10, 10, 0.7)), None, None, "3 faces"),
    ("pick largest overrides", faces((0, 0, 100, 120, 0.99), (120, 0, 95, 118, 0.98)), "largest", 0, ""),
    ("pick score overrides", faces((0, 0, 100, 120, 0.97), (120, 0, 95, 118, 0.98)), "score", 1, ""),
    ("pick center overrides", faces((0, 0, 100, 120, 0.99), (80, 70, 95, 118, 0.98)), "center", 1, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("found", "pick", "expected", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_choose_subject(found: Faces, pick: str | None, expected: int | None, reason: str) -> None:
    got = choose_subject(found, SHAPE, pick=pick)  # type: ignore[arg-type]
    assert got.index == expected
    assert reason in got.reason and (got.reason == "") == (expected is not None)


@pytest.mark.parametrize(
    ("area_ratio", "score_margin", "expected"), [(2.0, 0.2, None), (1.2, 0.2, 0), (2.0, 0.01, 0)]
)
def test_ratios_are_settings(area_ratio: float, score_margin: float, expected: int | None) -> None:
    found = faces((0, 0, 100, 120, 0.99), (120, 0, 90, 110, 0.97))
    got = choose_subject(found, SHAPE, area_ratio=area_ratio, score_margin=score_margin)
    assert got.index == expected
