"""NMS against hand-placed boxes and a brute-force Python reference."""

from __future__ import annotations

import pytest
import torch

from streamproc.detect.nms import TILE, batched_nms, nms


def _overlap(a: list[float], b: list[float], mode: str) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (min(area_a, area_b) if mode == "min" else area_a + area_b - inter)


def reference_nms(boxes: list[list[float]], scores: list[float], groups: list[int], thr: float, mode: str):
    """Textbook greedy NMS: walk boxes best first, keep one unless a kept box of its group overlaps it."""
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        if all(groups[j] != groups[i] or _overlap(boxes[i], boxes[j], mode) <= thr for j in kept):
            kept.append(i)
    return kept


def random_boxes(n: int, seed: int, spread: float = 200.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g, dtype=torch.float64) * spread
    size = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40 + 5
    return torch.cat([corner, corner + size], dim=1), torch.rand(n, generator=g, dtype=torch.float64)


SQUARE = [0.0, 0.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("boxes", "scores", "thr", "mode", "expected"),
    [
        ([SQUARE, [1, 1, 11, 11], [20, 20, 30, 30]], [0.9, 0.8, 0.7], 0.5, "union", [0, 2]),
        ([SQUARE, [1, 1, 11, 11], [20, 20, 30, 30]], [0.5, 0.8, 0.7], 0.5, "union", [1, 2]),
        ([SQUARE, [1, 1, 11, 11]], [0.9, 0.8], 0.7, "union", [0, 1]),  # IoU 0.68 <= 0.7
        ([SQUARE, [5, 0, 15, 10]], [0.9, 0.8], 1 / 3, "union", [0, 1]),  # IoU exactly 1/3: kept
        ([SQUARE, [2, 2, 6, 6]], [0.9, 0.8], 0.5, "union", [0, 1]),  # IoU 0.16
        ([SQUARE, [2, 2, 6, 6]], [0.9, 0.8], 0.5, "min", [0]),  # inside the big one
        ([SQUARE, [2, 2, 6, 6]], [0.8, 0.9], 0.5, "min", [1]),  # inner box first, still 'min' = 1
        ([SQUARE, SQUARE, SQUARE], [0.1, 0.3, 0.2], 0.5, "union", [1]),
        ([SQUARE, [10, 10, 20, 20]], [0.9, 0.8], 0.0, "union", [0, 1]),  # touching corners
    ],
)
def test_hand_placed(boxes, scores, thr, mode, expected):
    kept = nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), thr, mode)
    assert kept.tolist() == expected


def test_chain_is_greedy_not_transitive():
    # 0 suppresses 1; 1 would suppress 2, but 1 is gone, so 2 survives.
    boxes = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]


@pytest.mark.parametrize("n", [0, 1, 7, 60, TILE + 37, 3 * TILE + 5])
@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_matches_reference(n, mode, thr):
    boxes, scores = random_boxes(n, seed=n)
    kept = nms(boxes, scores, thr, mode).tolist()
    assert kept == reference_nms(boxes.tolist(), scores.tolist(), [0] * n, thr, mode)


@pytest.mark.parametrize("n", [5, 80, 2 * TILE + 11])  # small: offset trick; large: per-group runs
@pytest.mark.parametrize("mode", ["union", "min"])
def test_batched_matches_reference(n, mode):
    boxes, scores = random_boxes(n, seed=100 + n, spread=60.0)
    groups = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(n))
    kept = batched_nms(boxes, scores, groups, 0.5, mode).tolist()
    assert kept == reference_nms(boxes.tolist(), scores.tolist(), groups.tolist(), 0.5, mode)


@pytest.mark.parametrize("copies", [2, TILE + 1])
def test_batched_never_suppresses_across_groups(copies):
    boxes = torch.tensor([SQUARE] * copies)
    scores = torch.linspace(1.0, 0.5, copies)
    kept = batched_nms(boxes, scores, torch.arange(copies), 0.1)
    assert sorted(kept.tolist()) == list(range(copies))
    assert batched_nms(boxes, scores, torch.zeros(copies, dtype=torch.long), 0.1).tolist() == [0]


def test_batched_keeps_large_group_numbers_apart():
    boxes = torch.tensor([[1000.0, 1000, 1001, 1001], [1000.0, 1000, 1001.5, 1001]])
    kept = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([90_000, 90_000]), 0.5)
    assert kept.tolist() == [0]


def test_empty_inputs():
    empty = torch.zeros(0, 4)
    assert nms(empty, torch.zeros(0), 0.5).tolist() == []
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []


@pytest.mark.parametrize(
    ("boxes", "scores", "mode", "error"),
    [
        (torch.zeros(3, 4), torch.zeros(3), "max", ValueError),
        (torch.zeros(3, 5), torch.zeros(3), "union", ValueError),
        (torch.zeros(3, 4), torch.zeros(2), "union", ValueError),
    ],
)
def test_bad_arguments(boxes, scores, mode, error):
    with pytest.raises(error):
        nms(boxes, scores, 0.5, mode)


def test_batched_bad_groups():
    with pytest.raises(ValueError, match="groups"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5)
