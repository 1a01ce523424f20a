"""Annotated videos: each stream drawn again with its face boxes, track ids and decisions, so that a
person can check the pipeline's decisions by eye (``streamproc run --annotate DIR``).

While a run goes, ``Annotator.add`` keeps what the outlet hands it: the tracked faces of every batch
(``Back.tracked``: pts, track id and box, 48 bytes per face; no frames) and the decisions after
matching. After the run, ``write`` decodes each source again through the same ``VideoSource`` (same
sampling, resizing and times, so the boxes land where the detector saw the faces) and writes
``DIR/<stream_id>.mp4`` (H.264): every tracked face boxed and labelled ``track 3: ada d=0.412``
(its decision: name and squared-L2 distance), ``track 4: unknown d=1.420``, or ``track 5`` when the
track was never decided; one colour per identity, red for unknown, grey for undecided. A track's
latest decision labels all its frames, the ones before the decision too. The detector runs on every
``detect.every_k_frames``-th frame only; a box stays on screen until the next pass that found faces,
for ``hold_frames`` frames at most.

A live source (rtsp://, or ``live: true``) cannot be decoded a second time: it is refused with a
``ConfigError`` when the annotator is made, before the run starts.

Example:
    >>> annotator = Annotator("annotated", config.sources, hold_frames=2)  # doctest: +SKIP
    >>> summary = LocalRunner(config, annotator=annotator).run()  # doctest: +SKIP
    >>> annotator.write({sid: s.frames for sid, s in summary.streams.items()})["lobby"].path  # doctest: +SKIP
    PosixPath('annotated/lobby.mp4')
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamproc.errors import ConfigError, DecodeError, StreamprocError
from streamproc.sources.config import SourceConfig
from streamproc.sources.source import VideoSource
from streamproc.sources.synth import write_video
from streamproc.types import Decision, FrameBatch

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
RGB = tuple[int, int, int]
UNKNOWN_RGB: RGB = (230, 40, 40)
UNDECIDED_RGB: RGB = (190, 190, 190)
PALETTE: tuple[RGB, ...] = (  # known identities; neither red nor grey
    (40, 200, 70),
    (50, 130, 255),
    (250, 200, 30),
    (200, 80, 230),
    (30, 210, 210),
    (255, 140, 30),
    (150, 230, 60),
    (240, 110, 180),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
DEFAULT_FPS = 25.0  # a one-frame video has no frame period of its own
PTS_TOLERANCE = 1e-6  # seconds; the times of a second decode are the same numbers


@dataclass(frozen=True)
class Label:
    """One face to draw: its box, its text and its colour (RGB)."""

    box: Box
    text: str
    colour: RGB


@dataclass
class Annotated:
    """One written video: its path, its frames, and on how many frames each label was drawn."""

    stream_id: str
    path: Path
    frames: int = 0
    labels: Counter[str] = field(default_factory=Counter)


def label_text(track_id: int, decision: Decision | None) -> str:
    """The text over a face of track ``track_id``, decided as ``decision`` (None: never decided).

    >>> label_text(3, None)
    'track 3'
    """
    if decision is None:
        return f"track {track_id}"
    who = decision.identity if decision.identity is not None else "unknown"
    dist = f"d={decision.distance:.3f}" if math.isfinite(decision.distance) else "d=n/a"
    return f"track {track_id}: {who} {dist}"


def colour_for(decision: Decision | None) -> RGB:
    """One colour per identity (the same in every run), red for unknown, grey for undecided."""
    if decision is None:
        return UNDECIDED_RGB
    if decision.identity is None:
        return UNKNOWN_RGB
    return PALETTE[zlib.crc32(decision.identity.encode()) % len(PALETTE)]


def draw(image: np.ndarray, labels: Iterable[Label]) -> np.ndarray:
    """A copy of the RGB ``image`` with each label's box, and its text on a filled strip above the
    box (below it when the box touches the top edge), texts over boxes."""
    out = np.ascontiguousarray(image).copy()
    scale = max(0.4, out.shape[0] / 900)
    thickness, stroke = max(2, round(out.shape[0] / 360)), max(1, round(out.shape[0] / 540))
    labels = list(labels)
    for label in labels:
        x1, y1, x2, y2 = (int(v) for v in label.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), label.colour, thickness)
    for label in labels:  # the texts over every box
        x1, y1, x2, y2 = (int(v) for v in label.box)
        (width, height), base = cv2.getTextSize(label.text, FONT, scale, stroke)
        x = max(0, min(x1, out.shape[1] - width - 2))  # inside the frame at its right edge
        y = y1 - base - 2 if y1 - height - base - 4 >= 0 else y2 + height + 4
        cv2.rectangle(out, (x, y - height - 2), (x + width + 2, y + base), label.colour, cv2.FILLED)
        cv2.putText(out, label.text, (x + 1, y), FONT, scale, (0, 0, 0), stroke, cv2.LINE_AA)
    return out


def _file_name(stream_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stream_id).strip(".-") or "stream"


def _fps(pts: np.ndarray) -> float:
    steps = np.diff(pts)
    return float(1.0 / np.median(steps)) if len(steps) else DEFAULT_FPS


class Annotator:
    """Collects a run's tracked faces and decisions, then writes ``DIR/<stream_id>.mp4`` per stream.

    Example:
        >>> annotator = Annotator("out", [SourceConfig(uri="lobby.mp4")])  # doctest: +SKIP
        >>> annotator.add("lobby", back.tracked, decisions)  # doctest: +SKIP
        >>> annotator.write()["lobby"].labels  # doctest: +SKIP
        Counter({'track 0: ada d=0.412': 31, 'track 1': 4})
    """

    def __init__(self, directory: str | Path, sources: Sequence[SourceConfig], hold_frames: int = 1):
        live = [s.display_uri for s in sources if s.is_live]
        if live:
            raise ConfigError(
                f"--annotate draws on video files only: {live[0]} is a live source, "
                "whose frames cannot be read a second time"
            )
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"--annotate {self.directory}: exists and is not a directory")
        if hold_frames < 1:
            raise ValueError(f"hold_frames: expected >= 1, got {hold_frames}")
        self.sources = {s.stream_id: s for s in sources}
        self.hold_frames = hold_frames
        self._rows: dict[str, list[np.ndarray]] = {sid: [] for sid in self.sources}
        self._decided: dict[str, dict[int, Decision]] = {sid: {} for sid in self.sources}

    def add(self, stream_id: str, tracked: np.ndarray, decisions: Iterable[Decision] = ()) -> None:
        """Rows ``pts, track_id, x1, y1, x2, y2`` of tracked faces, and decisions out of matching."""
        if len(tracked):
            self._rows[stream_id].append(np.asarray(tracked, np.float64).reshape(-1, 6))
        for d in decisions:
            self._decided[d.stream_id][d.track_id] = d  # a later revision replaces the decision

    def tracked(self, stream_id: str) -> np.ndarray:
        """Every row added for the stream, in pts order."""
        rows = self._rows[stream_id]
        if not rows:
            return np.zeros((0, 6))
        merged = np.concatenate(rows)
        return merged[np.argsort(merged[:, 0], kind="stable")]

    def write(self, frames: Mapping[str, int] | None = None) -> dict[str, Annotated]:
        """Write every stream's video; ``frames`` caps each stream at the frames the run processed
        (a stopped run). A stream whose file cannot be read again is logged and left out."""
        self.directory.mkdir(parents=True, exist_ok=True)
        written = {}
        for sid, source in self.sources.items():
            limit = None if frames is None else frames.get(sid)
            if limit == 0:
                log.warning("stream %s: no frame processed, no annotated video", sid)
                continue
            try:
                written[sid] = self._write_stream(source, limit)
            except StreamprocError as exc:
                log.warning("stream %s: annotated video not written: %s", sid, exc)
        return written

    def _write_stream(self, source: SourceConfig, limit: int | None) -> Annotated:
        result = Annotated(source.stream_id, self.directory / f"{_file_name(source.stream_id)}.mp4")
        with VideoSource(source) as video:
            batches = iter(video)
            first = next(batches, None)
            if first is None or not len(first):
                raise DecodeError(f"{source.display_uri}: no frames on a second reading")
            images = self._drawn(source.stream_id, itertools.chain([first], batches), limit, result)
            write_video(result.path, images, _fps(first.pts))
        return result

    def _drawn(
        self, stream_id: str, batches: Iterable[FrameBatch], limit: int | None, result: Annotated
    ) -> Iterator[np.ndarray]:
        """The stream's frames with their labels drawn, counted into ``result``."""
        rows, next_row = self.tracked(stream_id), 0
        shown: dict[int, tuple[int, np.ndarray]] = {}  # track id -> (frame of its last box, box)
        frames = (frame for batch in batches for frame in zip(batch.frames, batch.pts, strict=True))
        for number, (image, pts) in enumerate(itertools.islice(frames, limit)):
            passed: dict[int, tuple[int, np.ndarray]] = {}  # boxes of a detection pass on this frame
            while next_row < len(rows) and rows[next_row, 0] <= pts + PTS_TOLERANCE:
                if rows[next_row, 0] >= pts - PTS_TOLERANCE:  # rows of no frame (a replay) are skipped
                    passed[int(rows[next_row, 1])] = (number, rows[next_row, 2:])
                next_row += 1
            if passed:  # a new pass takes down the boxes held from the last one
                shown = passed
            shown = {t: seen for t, seen in shown.items() if number - seen[0] < self.hold_frames}
            labels = [self._label(stream_id, track, box) for track, (_, box) in shown.items()]
            result.labels.update(label.text for label in labels)
            result.frames += 1
            yield draw(image, labels)

    def _label(self, stream_id: str, track_id: int, box: np.ndarray) -> Label:
        decision = self._decided[stream_id].get(track_id)
        x1, y1, x2, y2 = (float(v) for v in box)
        return Label((x1, y1, x2, y2), label_text(track_id, decision), colour_for(decision))
