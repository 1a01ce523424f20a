"""MTCNN (Zhang et al., 2016): a three-stage cascade of small CNNs giving boxes and 5 landmarks.

P-Net scans an image pyramid fully convolutionally and proposes windows; R-Net (24x24 crops)
and O-Net (48x48 crops) re-score and refine them; O-Net also places the landmarks. The
weights are the facenet-pytorch 2.6.0 state dicts (``pnet.pt``, ``rnet.pt``, ``onet.pt``).

Conventions those weights need (checked on LFW faces, see ``tests/unit/detect/test_mtcnn.py``):
pixels in RGB order, scaled as ``(x - 127.5) / 128``, laid out N x C x H x W with the image
*upright* (no Caffe-style transpose of the image), but the feature map is flattened in
C x W x H order before R-Net's and O-Net's dense layers, as the Caffe originals did. Box
regressions are ``(dx1, dy1, dx2, dy2)`` in units of the box size; O-Net's landmarks are
five x fractions followed by five y fractions of the box.

>>> from streamproc.config import DetectorConfig
>>> from streamproc.models.fetch import mtcnn_weights_dir
>>> detector = MTCNN(DetectorConfig(), mtcnn_weights_dir())  # doctest: +SKIP
>>> faces = detector([image])[0]                                # doctest: +SKIP
>>> faces.boxes.shape, faces.landmarks.shape                    # doctest: +SKIP
((1, 4), (1, 5, 2))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from streamproc.config import DetectorConfig
from streamproc.detect.base import Detector
from streamproc.detect.nms import batched_nms
from streamproc.errors import ConversionError, ModelError
from streamproc.models.fetch import ARTIFACTS
from streamproc.models.integrity import verify_sha256
from streamproc.types import Faces

PNET_CELL, PNET_STRIDE = 12, 2
# the only MTCNN weights these nets take: the fetched files' digests, checked at every load
WEIGHTS_SHA256 = {member.rsplit("/", 1)[-1]: digest for member, digest in ARTIFACTS["mtcnn"].members.items()}


def _flatten_caffe(x: torch.Tensor) -> torch.Tensor:
    """Flatten N x C x H x W in C x W x H order, the order the dense weights were trained with."""
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, a 12x12 window per output cell, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refine net on 24x24 crops: face probability and box regression."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_caffe(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: probability, box regression and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_caffe(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def load_net(net: nn.Module, path: Path, sha256: str | None = None) -> nn.Module:
    """Load a state dict strictly, after checking the file's ``sha256`` when given (the same checks
    as ``checkpoint``): corrupt bytes, a truncated file, name or shape mismatches are ``ModelError`` s."""
    if not path.is_file():
        raise ModelError(f"MTCNN weights {path} not found; run `streamproc models fetch`")
    if sha256 is not None:
        verify_sha256(path, sha256, "run `streamproc models fetch` to fetch the MTCNN weights again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ModelError(
            f"MTCNN weights {path} cannot be read ({exc}); run `streamproc models fetch`"
        ) from exc
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{path.name} does not fit {type(net).__name__}: {exc}") from exc
    return net.eval()


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from ``min_face_size`` up to the image.

    >>> [round(s, 3) for s in pyramid_scales(40, 40, 20, 0.5)]
    [0.6, 0.3]
    """
    first = PNET_CELL / min_face_size
    scales = []
    scale = first
    while min(height, width) * scale >= PNET_CELL:
        scales.append(scale)
        scale *= factor
    return scales


def pyramid(
    image: np.ndarray, sizes: list[tuple[int, int]], integral_from: float = 16.0, min_image: int = 1 << 17
) -> list[np.ndarray]:
    """The image area-averaged to each (width, height), largest first, as ``cv2.INTER_AREA`` makes
    them from the image. A level at least ``integral_from`` times smaller in area, of an image of at
    least ``min_image`` pixels, is read off the image's integral (``area_average``), else resized.

    OpenCV's area resize at a non-integer step costs the image's pixels whatever the level's size:
    eight levels of a 640x480 frame cost eight frames. The integral costs one frame and each level
    its own pixels, with the same averages (they differ only where an average is a tie half way
    between two grey levels, by one). Under ``min_image`` there is little to gain (a 250x250 photo's
    pyramid took about 2 ms either way on one core here), and the levels are made as they always
    were, so a photo of LFW's size gets them bit for bit.

    >>> [level.shape for level in pyramid(np.zeros((100, 200, 3), np.uint8), [(120, 60), (25, 12)])]
    [(60, 120, 3), (12, 25, 3)]
    """
    height, width = image.shape[:2]
    integral: np.ndarray | None = None
    levels = []
    for w, h in sizes:
        if height * width >= max(min_image, integral_from * w * h):
            if integral is None:
                integral = integral_image(image)
            levels.append(area_average(integral, w, h))
        else:
            levels.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
    return levels


def integral_image(image: np.ndarray) -> np.ndarray:
    """``cv2.integral`` of an (H, W, C) uint8 image: (H + 1, W + 1, C) sums, int32 where they fit
    (frames up to 4K), else float64."""
    height, width = image.shape[:2]
    sums = cv2.integral(image, sdepth=cv2.CV_32S if height * width * 255 < 2**31 else cv2.CV_64F)
    return sums.reshape(height + 1, width + 1, -1)  # one channel comes back 2-D


def area_average(integral: np.ndarray, width: int, height: int) -> np.ndarray:
    """The image behind ``integral`` area-averaged to (width, height) uint8, each output pixel the
    mean over its 1/width x 1/height share of the image, pixels cut at its edges counting by the
    part inside (``cv2.INTER_AREA``'s weights). Its sum is read at the share's four corners: each
    pixel is constant over its square, so the integral is exactly bilinear between the points
    ``cv2.integral`` gives. Costs the output's pixels, not the image's.

    >>> image = np.arange(12, dtype=np.uint8).reshape(2, 6, 1) * 10  # column means 30, 40, ..., 80
    >>> area_average(integral_image(image), 4, 1)[..., 0]  # (30 + 40 / 2) / 1.5, (40 / 2 + 50) / 1.5, ...
    array([[33, 47, 63, 77]], dtype=uint8)
    """
    rows, cols, channels = integral.shape[0] - 1, integral.shape[1] - 1, integral.shape[2]
    y, fy = _corners(rows, height)
    x, fx = _corners(cols, width)
    stride = (cols + 1) * channels
    at = y[:, None, None] * stride + x[None, :, None] * channels + np.arange(channels)  # (h+1, w+1, C)
    flat = integral.ravel()
    top, right, below, diagonal = (flat.take(at + step) for step in (0, channels, stride, stride + channels))
    fx, fy = fx[None, :, None], fy[:, None, None]
    upper = top + fx * (right - top)
    sums = upper + fy * (below + fx * (diagonal - below) - upper)
    box = sums[1:, 1:] - sums[1:, :-1] - sums[:-1, 1:] + sums[:-1, :-1]
    box *= width * height / (cols * rows)
    return np.clip(np.rint(box, out=box), 0, 255).astype(np.uint8)


def _corners(pixels: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The cell edges ``k * pixels / cells`` (k = 0..cells) as a whole pixel and the fraction past it."""
    edge = np.arange(cells + 1) * (pixels / cells)
    whole = np.minimum(edge.astype(np.int64), pixels - 1)
    return whole, edge - whole


@dataclass
class _Candidates:
    """Boxes still in the cascade, from all images at once."""

    boxes: torch.Tensor  # (M, 4) float32, image pixels
    scores: torch.Tensor  # (M,)
    image: torch.Tensor  # (M,) int64, position of the image in the batch
    reg: torch.Tensor  # (M, 4) box regression of the stage that scored them

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, index: torch.Tensor) -> _Candidates:
        return _Candidates(self.boxes[index], self.scores[index], self.image[index], self.reg[index])

    @staticmethod
    def cat(parts: list[_Candidates]) -> _Candidates:
        if not parts:
            z = torch.zeros(0)
            return _Candidates(z.reshape(0, 4), z, z.long(), z.reshape(0, 4))
        return _Candidates(
            *(torch.cat([getattr(p, f) for p in parts]) for f in ("boxes", "scores", "image", "reg"))
        )


def regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Move each edge by its regression value times the box width (x) or height (y)."""
    size = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)
    return boxes + reg * size


def square(boxes: torch.Tensor) -> torch.Tensor:
    """The square with the same centre and side = the longer side of each box."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=1)


def crop_boxes(images: list[np.ndarray], boxes: np.ndarray, image: np.ndarray, size: int) -> np.ndarray:
    """Cut each box out of its image (zeros outside the image) and resize it to size x size."""
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    corners = np.round(boxes).astype(np.int64)
    for k, ((x1, y1, x2, y2), i) in enumerate(zip(corners, image, strict=True)):
        img = images[i]
        h, w = img.shape[:2]
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
            patch = img[y1:y2, x1:x2]
        else:
            patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = img[sy1:sy2, sx1:sx2]
        shrink = patch.shape[0] > size or patch.shape[1] > size
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def to_input(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 scaled as (x - 127.5) / 128, channels_last.

    Scaled in place in the pixels' own (B, H, W, 3) order, whose (B, 3, H, W) view is channels_last
    already: one float copy, not three (a 648x1152 level took 5.5 / 2.9 ms one way, 1.5 this way).
    """
    x = torch.from_numpy(pixels).to(device).to(torch.float32, copy=True)  # never scale the caller's array
    return x.sub_(127.5).mul_(0.0078125).permute(0, 3, 1, 2)


class MTCNN(Detector):
    """MTCNN face detector; ``MTCNN(config, weights_dir)(images)`` gives one ``Faces`` per image.

    Images of the same size share one P-Net pass per pyramid scale; the R-Net and O-Net
    crops of all images run together (in chunks that bound memory).

    Example:
        >>> detector = MTCNN(DetectorConfig(min_face_size=40), mtcnn_weights_dir())  # doctest: +SKIP
        >>> [len(f) for f in detector([frame_a, frame_b])]                            # doctest: +SKIP
        [1, 2]
    """

    config: DetectorConfig
    min_window = PNET_CELL  # P-Net's window: faces smaller than this are never found
    pnet_pixels = 1 << 22  # input pixels per P-Net forward pass
    rnet_chunk = 2048  # crops per R-Net forward pass (CPU: 128)
    onet_chunk = 512  # crops per O-Net forward pass (CPU: 32)
    pnet_band: int | None = None  # P-Net output rows per forward pass (CPU: 64); None: the whole level
    pyramid_integral = 16.0  # see ``pyramid``; inf: every level resized from the image

    def __init__(self, config: DetectorConfig, weights_dir: Path) -> None:
        self.config = config
        self.device = torch.device(config.device)
        weights_dir = Path(weights_dir)
        self.pnet = load_net(PNet(), weights_dir / "pnet.pt", WEIGHTS_SHA256["pnet.pt"]).to(self.device)
        self.rnet = load_net(RNet(), weights_dir / "rnet.pt", WEIGHTS_SHA256["rnet.pt"]).to(self.device)
        self.onet = load_net(ONet(), weights_dir / "onet.pt", WEIGHTS_SHA256["onet.pt"]).to(self.device)
        # channels_last: P-Net 1.9x, R-Net 2.5x, O-Net 2.2x faster than NCHW on one CPU core here
        for net in (self.pnet, self.rnet, self.onet):
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.device.type == "cpu":  # a pass's activations then stay in the CPU's caches
            # one core here: R-Net 2048 -> 128 crops 179 -> 78 us a crop, O-Net 512 -> 32 984 -> 450 us,
            # P-Net on a 648x1152 level in 64-row bands 99 -> 80 ms (2 threads: 61 -> 49 ms)
            self.rnet_chunk, self.onet_chunk, self.pnet_band = 128, 32, 64

    def _detect(self, images: list[np.ndarray]) -> list[Faces]:
        return self._detect_at(images, [1.0] * len(images))

    @torch.inference_mode()
    def _detect_at(self, images: list[np.ndarray], scales: list[float]) -> list[Faces]:
        images = [np.ascontiguousarray(im) for im in images]
        cand = self._propose(images, [self.config.min_face_size * s for s in scales])
        if len(cand):
            cand = self._refine(images, cand)
        landmarks = torch.zeros(0, 5, 2)
        if len(cand):
            cand, landmarks = self._output(images, cand)
        result = []
        for i in range(len(images)):
            mine = torch.nonzero(cand.image == i).flatten()
            mine = mine[torch.argsort(cand.scores[mine], descending=True)]
            result.append(
                Faces(
                    boxes=cand.boxes[mine].numpy(),
                    scores=cand.scores[mine].numpy(),
                    landmarks=landmarks[mine].numpy(),
                )
            )
        return result

    def _propose(self, images: list[np.ndarray], min_faces: list[float]) -> _Candidates:
        """P-Net over every pyramid scale (from each image's smallest face in its own pixels, so a
        shrunk copy starts lower); NMS 0.5 within a scale, 0.7 across scales."""
        by_shape: dict[tuple[int, int, float], list[int]] = {}
        for i, (im, min_face) in enumerate(zip(images, min_faces, strict=True)):
            by_shape.setdefault((im.shape[0], im.shape[1], min_face), []).append(i)
        parts = []
        for (height, width, min_face), members in by_shape.items():
            scales = pyramid_scales(height, width, min_face, self.config.scale_factor)
            sizes = [(math.ceil(width * scale), math.ceil(height * scale)) for scale in scales]
            # every level of every image is kept until its pass: about 0.7 of a frame each at 1080p
            levels = {i: pyramid(images[i], sizes, self.pyramid_integral) for i in members}
            for k, (scale, size) in enumerate(zip(scales, sizes, strict=True)):
                per_pass = max(1, self.pnet_pixels // (size[0] * size[1]))
                for start in range(0, len(members), per_pass):
                    chunk = members[start : start + per_pass]
                    parts.append(self._pnet_pass(np.stack([levels[i][k] for i in chunk]), chunk, scale))
        cand = _Candidates.cat(parts)
        cand = cand.take(batched_nms(cand.boxes, cand.scores, cand.image, 0.7))
        cand.boxes = square(regress(cand.boxes, cand.reg))
        return cand

    def _pnet_pass(self, resized: np.ndarray, members: list[int], scale: float) -> _Candidates:
        prob, reg = (t.cpu() for t in self._pnet_bands(to_input(resized, self.device)))
        b, y, x = torch.nonzero(prob >= self.config.thresholds[0], as_tuple=True)
        corner = torch.stack([x, y], dim=1).float() * PNET_STRIDE
        boxes = torch.cat([corner, corner + PNET_CELL], dim=1) / scale
        cand = _Candidates(boxes, prob[b, y, x], torch.tensor(members)[b], reg[b, :, y, x])
        return cand.take(batched_nms(cand.boxes, cand.scores, b, 0.5))

    def _pnet_bands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over ``x`` in bands of ``pnet_band`` output rows, each from the input rows it sees
        (output row y sees input rows 2y to 2y + 11; a band starts on an even row, so the 2x2 pooling
        windows are the whole level's)."""
        height = x.shape[2]
        rows = (height - 1) // 2 - 4  # conv 3x3, pool 2x2 ceil, conv 3x3, conv 3x3
        band = self.pnet_band
        if band is None or rows <= 2 * band:
            out: tuple[torch.Tensor, torch.Tensor] = self.pnet(x)
            return out
        parts = []
        for top in range(0, rows, band):
            end = min(rows, top + band)
            parts.append(self.pnet(x[:, :, 2 * top : 2 * end + PNET_CELL - 2 if end < rows else height]))
        prob, reg = (torch.cat(part, dim=-2) for part in zip(*parts, strict=True))
        return prob, reg

    def _run(
        self, net: nn.Module, images: list[np.ndarray], cand: _Candidates, size: int, chunk: int
    ) -> list[torch.Tensor]:
        crops = crop_boxes(images, cand.boxes.numpy(), cand.image.numpy(), size)
        outs = [net(to_input(crops[s : s + chunk], self.device)) for s in range(0, len(crops), chunk)]
        return [torch.cat(parts).cpu() for parts in zip(*outs, strict=True)]

    def _refine(self, images: list[np.ndarray], cand: _Candidates) -> _Candidates:
        """R-Net re-scores 24x24 crops; NMS 0.7; boxes regressed and squared."""
        prob, reg = self._run(self.rnet, images, cand, 24, self.rnet_chunk)
        ok = prob >= self.config.thresholds[1]
        cand = _Candidates(cand.boxes[ok], prob[ok], cand.image[ok], reg[ok])
        cand = cand.take(batched_nms(cand.boxes, cand.scores, cand.image, 0.7))
        cand.boxes = square(regress(cand.boxes, cand.reg))
        return cand

    def _output(self, images: list[np.ndarray], cand: _Candidates) -> tuple[_Candidates, torch.Tensor]:
        """O-Net on 48x48 crops: final scores, boxes and landmarks; NMS 0.7 in 'min' mode."""
        prob, reg, points = self._run(self.onet, images, cand, 48, self.onet_chunk)
        ok = prob >= self.config.thresholds[2]
        cand = _Candidates(cand.boxes[ok], prob[ok], cand.image[ok], reg[ok])
        points = points[ok]
        origin, extent = cand.boxes[:, None, :2], (cand.boxes[:, 2:] - cand.boxes[:, :2])[:, None, :]
        landmarks = origin + torch.stack([points[:, :5], points[:, 5:]], dim=2) * extent
        cand.boxes = regress(cand.boxes, cand.reg)
        keep = batched_nms(cand.boxes, cand.scores, cand.image, 0.7, mode="min")
        return cand.take(keep), landmarks[keep]
