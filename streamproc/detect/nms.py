"""Non-maximum suppression in torch (greedy, highest score first).

Two overlap measures: ``"union"`` (IoU, the usual one) and ``"min"`` (intersection over the
smaller box, which MTCNN's last stage uses to drop a small box sitting inside a bigger one).
Boxes are ``x1 y1 x2 y2`` in continuous coordinates, area ``(x2 - x1) * (y2 - y1)``.

>>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
>>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
[0, 2]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

OverlapMode = Literal["union", "min"]
TILE = 256  # boxes compared as one block; bounds memory at TILE x (boxes kept so far)


def overlap_matrix(a: torch.Tensor, b: torch.Tensor, mode: OverlapMode = "union") -> torch.Tensor:
    """Overlap of every box in ``a`` (A, 4) with every box in ``b`` (B, 4), as (A, B).

    >>> overlap_matrix(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]])).tolist()
    [[0.3333333432674408]]
    """
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)[:, None]
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)[None, :]
    denom = torch.minimum(area_a, area_b) if mode == "min" else area_a + area_b - inter
    return inter / denom.clamp(min=1e-12)


def _greedy(over: np.ndarray) -> list[int]:
    """Greedy pass over a boolean "i suppresses j" matrix of boxes sorted best first."""
    suppressed = np.zeros(len(over), bool)
    keep = []
    for i in range(len(over)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return keep


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, mode: OverlapMode = "union"
) -> torch.Tensor:
    """Indices of the boxes kept, best score first.

    A box is dropped when its overlap with an already kept, higher-scoring box is greater
    than ``iou_threshold``. Sorted boxes are handled in tiles: a tile is first matched
    against every box kept so far (one matrix), then the survivors are thinned greedily
    among themselves (one small matrix and a loop over the tile).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms: expected mode 'union' or 'min', got {mode!r}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: expected boxes (N, 4) and scores (N,), got {boxes.shape} and {scores.shape}")
    order = torch.argsort(scores, descending=True, stable=True)
    ordered = boxes[order].detach().cpu()
    if not ordered.is_floating_point():
        ordered = ordered.float()
    kept = torch.zeros(0, dtype=torch.long)
    for start in range(0, len(ordered), TILE):
        tile = torch.arange(start, min(start + TILE, len(ordered)))
        if len(kept):
            hit = (overlap_matrix(ordered[tile], ordered[kept], mode) > iou_threshold).any(dim=1)
            tile = tile[~hit]
        if len(tile):
            over = overlap_matrix(ordered[tile], ordered[tile], mode) > iou_threshold
            kept = torch.cat([kept, tile[_greedy(over.numpy())]])
    return order[kept.to(order.device)]


def _split(groups: torch.Tensor) -> list[torch.Tensor]:
    """Indices of each group's members, one tensor per distinct group value."""
    order = torch.argsort(groups, stable=True)
    counts = torch.unique_consecutive(groups[order], return_counts=True)[1]
    return list(torch.split(order, counts.tolist()))


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    mode: OverlapMode = "union",
) -> torch.Tensor:
    """NMS that never lets a box suppress one of another group (image, scale, class).

    Up to ``TILE`` boxes, each group is shifted by its own offset, larger than every
    coordinate, so boxes of different groups cannot overlap and one ``nms`` call handles all
    groups. Beyond that, each group runs on its own (cheaper than comparing across groups).

    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    >>> batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist()
    [0, 1]
    """
    if groups.shape != boxes.shape[:1]:
        raise ValueError(
            f"batched_nms: expected groups of shape {tuple(boxes.shape[:1])}, got {groups.shape}"
        )
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if len(boxes) > TILE:
        kept = [
            members[nms(boxes[members], scores[members], iou_threshold, mode)] for members in _split(groups)
        ]
        merged = torch.cat(kept)
        return merged[torch.argsort(scores[merged], descending=True, stable=True)]
    wide = boxes.double()  # float64: large offsets must not eat the coordinates' precision
    span = wide.max() - wide.min() + 1
    shifted = wide - wide.min() + (groups.to(wide) * span)[:, None]
    return nms(shifted, scores, iou_threshold, mode)
