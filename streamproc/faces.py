"""Still images to embeddings: detect, pick, align, embed.

Used by enrollment, evaluation and the demo. Video goes through ``streamproc.stages``.

Example:
    >>> pipe = FacePipeline(load_config(None))          # doctest: +SKIP
    >>> result = pipe.embed_subjects([read_image("face.jpg")])  # doctest: +SKIP
    >>> result.embeddings.shape                          # doctest: +SKIP
    (1, 128)
"""

from __future__ import annotations

import errno
import io
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamproc import align
from streamproc.align import PickPolicy
from streamproc.config import Config
from streamproc.detect import Detector, build_detector
from streamproc.errors import InputError
from streamproc.models.embedder import Embedder
from streamproc.subject import Subject, choose_subject
from streamproc.types import Crops, Faces

FALLBACK_CROP_FRACTION = 0.5  # centre square kept when no face is found (LFW subjects are centred)
DEFAULT_MAX_PIXELS = 100_000_000  # the default of image.max_pixels
DETECT_MAX_SIDE = 2000  # larger photos are shrunk for the detector only; crops come from the original


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; grey and RGBA images are converted.

    An image of more than ``max_pixels`` is refused from its header, before it is decoded: a 5 MB
    PNG can expand to gigabytes (a decompression bomb).
    """
    data = _read_file(Path(path))
    pixels = header_pixels(data)
    if pixels is not None and pixels > max_pixels:
        raise InputError(
            f"{path}: {pixels:,} pixels, more than the limit of {max_pixels:,} "
            "(image.max_pixels): shrink the photo or raise the limit"
        )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise InputError(f"{path}: not a readable image (JPEG, PNG, BMP, ...)")
    return np.ascontiguousarray(image[:, :, ::-1])


def _read_file(path: Path) -> np.ndarray:
    """The bytes of a regular file; a one-line ``InputError`` that says what the path is otherwise."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        what = "symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise InputError(f"{path}: {what}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: not a regular file (a device, pipe or socket)")
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    return data


def header_pixels(data: np.ndarray) -> int | None:
    """Width x height from the image header alone (nothing decoded); None when the format is unknown."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data.tobytes())) as image:
                width, height = image.size
        except Image.DecompressionBombError as exc:  # above Pillow's own limit: it names the size
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return int(found[1]) if found else None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None
    return int(width) * int(height)


@dataclass
class SubjectResult:
    """One row per input image: the chosen face, or a centre crop when none was found."""

    embeddings: np.ndarray  # (N, D) float32
    crops: np.ndarray  # (N, S, S, 3) uint8
    failed: np.ndarray  # (N,) bool: no face found, fallback crop used
    n_faces: np.ndarray  # (N,) int: faces the detector found
    points: np.ndarray | None = None  # (N, 5, 2) landmarks in the crops (NaN: unknown)


class FacePipeline:
    """Detector + aligner + embedder over still images."""

    def __init__(self, config: Config, detector: Detector | None = None, embedder: Embedder | None = None):
        self.config = config
        self.detector = detector or build_detector(config.detector)
        self.embedder = embedder or Embedder(config.embedder)

    @property
    def model_version(self) -> str:
        return self.embedder.version

    def detect(self, images: Sequence[np.ndarray]) -> list[Faces]:
        """The detector's faces in each image, in its coordinates. A side above ``DETECT_MAX_SIDE``
        is shrunk first: an 8000x8000 photo otherwise costs the detector seconds and gigabytes."""
        scales = [min(1.0, DETECT_MAX_SIDE / max(image.shape[:2])) for image in images]
        small = [
            image if s == 1.0 else cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            for image, s in zip(images, scales, strict=True)
        ]
        found = self.detector(small)
        return [f if s == 1.0 else f.scaled(1.0 / s) for f, s in zip(found, scales, strict=True)]

    def analyse(self, image: np.ndarray) -> tuple[Faces, np.ndarray]:
        """Every face in one image, with embeddings, and their aligned crops."""
        faces = self.detect([image])[0]
        crops = align.align_faces(image, faces, self.config.align)
        faces.embedding = (
            self.embedder(Crops(crops, align.crop_landmarks(faces, self.config.align)))
            if len(faces)
            else np.zeros((0, self.embedder.card.embedding_dim))
        )
        return faces, crops

    def analyse_subject(
        self, image: np.ndarray, pick: PickPolicy | None = None
    ) -> tuple[Faces, np.ndarray, Subject]:
        """``analyse`` plus the photo's subject by ``choose_subject`` (or ``pick``) and the config's ratios."""
        faces, crops = self.analyse(image)
        d = self.config.detector
        subject = choose_subject(
            faces,
            image.shape,
            pick=pick,
            area_ratio=d.subject_area_ratio,
            score_margin=d.subject_score_margin,
        )
        return faces, crops, subject

    def crop_subjects(self, images: Sequence[np.ndarray]) -> tuple[Crops, np.ndarray, np.ndarray]:
        """The face chosen by ``detector.pick`` in each image, aligned (with its landmarks in the
        crop); a centre crop without landmarks when none. Returns ``(crops, failed, n_faces)``."""
        size = self.config.align.image_size
        detections = self.detect(images)
        crops = Crops(np.zeros((len(images), size, size, 3), np.uint8))
        failed = np.zeros(len(images), bool)
        for i, (image, faces) in enumerate(zip(images, detections, strict=True)):
            index = align.pick_face(faces, image.shape, self.config.detector.pick)
            if index is None:
                failed[i] = True
                crops.images[i] = align.center_crop(image, size, FALLBACK_CROP_FRACTION)
            else:
                crops.images[i] = align.align_faces(image, faces[index], self.config.align)[0]
                crops.points[i] = align.crop_landmarks(faces[index], self.config.align)[0]
        return crops, failed, np.array([len(f) for f in detections])

    def embed_subjects(self, images: Sequence[np.ndarray]) -> SubjectResult:
        crops, failed, n_faces = self.crop_subjects(images)
        return SubjectResult(self.embedder(crops), crops.images, failed, n_faces, crops.points)
