"""Identification on realistic video: our pipeline against the naive per-frame loop, from real LFW faces.

Videos are composed with ``streamproc.scenes`` from LFW deep-funneled photos: hard cuts where the next
person appears exactly where the previous one was, 2-4 people per shot (enrolled people and strangers
mixed), two people crossing, appearances from 0.5 s to several seconds, slow camera zoom/pan, JPEG and
H.264 compression noise.

* Gallery: the first photo of each LFW person with >= 2 photos (1,680 people; ``--quick``: a few
  hundred), in an in-memory ``GalleryIndex``. Probes placed in the videos are their *other* photos.
* Strangers in the videos are people with a single photo; the open-set threshold is calibrated at
  ``--fpir`` on *other* single-photo people (``streamproc.gallery.calibrate``). Both methods name by the product's rule
  (``streamproc.gallery.base.named``): the nearest person when within the threshold and
  ``gallery.margin`` closer than the next one; the threshold is calibrated for that margin.
* Ours: ``LocalRunner`` with the default config and that threshold. The faces reaching the aggregate
  stage are recorded with their track ids (see ``recording_aggregates``). Naive: detect every frame,
  embed every face, identify every face on its own.

A detected face belongs to the ground-truth appearance whose box (at least half visible) it overlaps
with IoU >= 0.5. A track's decisions apply to every appearance whose faces it holds. Figures:
identity switches (tracks holding faces of more than one person), appearance recall (enrolled
appearances named correctly at least once), wrong names (decisions naming someone not in the track;
naive: faces named as someone else), strangers named (stranger appearances given any name) and the
rate expected over the ~1,500 calibration strangers (each still score shifted by what each method
gained on the video strangers, see ``expected_strangers_named``: the few strangers in the videos
are too few to tell 1% from 3%), decisions per appearance, frames/s; and the stills
detect-and-identify rate at the same threshold (``bench/lfw_identification.py``'s measure) over the
probe photos.

Embeddings of the photos are cached under ``~/.cache/streamproc/bench`` (keyed by model, alignment,
``embedder.flip`` and the photo list): the first run embeds ~3,700 photos (5-15 minutes on a shared 2-core CPU).
The naive loop's faces (nearest person, distance, next person's distance) are cached there per video file and model, so a
rerun with other ``--set`` values only runs ours.

    python bench/video_identification.py [--quick] [--json] [--fpir 0.01] [--set track.max_missed=3]
        [--base embedder.flip=false] [--config configs/realtime.yaml]

``--config`` measures a profile instead of the default config: its detector and model make the
gallery, the naive loop and ours, and ours runs it whole (``configs/realtime.yaml`` with its own
MobileFaceNet gallery and threshold).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/pipeline_throughput.py

import numpy as np
from lfw_identification import embed_all

import streamproc.runtime.chain as chain_module
from streamproc import env, scenes
from streamproc.align import align_faces, crop_landmarks, pick_face
from streamproc.config import load_config
from streamproc.errors import ConfigError
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.base import named
from streamproc.gallery.calibrate import calibrate, impostor_scores, nearest_two
from streamproc.gallery.index import GalleryIndex
from streamproc.runtime.local import LocalRunner
from streamproc.scenes import GroundTruth, Photo, Shot
from streamproc.sources import SourceConfig, VideoSource
from streamproc.stages.aggregate import AggregateStage
from streamproc.stages.track import iou_matrix
from streamproc.types import Crops, Decision, FrameBatch

ENROLLED_SHARE = 0.6  # of the people placed in videos; the rest are strangers
MIN_VISIBLE, MIN_IOU = 0.5, 0.5
STRANGERS_SHOWN = 160  # single-photo people kept for the videos (about 10 a video); the rest calibrate


@dataclasses.dataclass(frozen=True)
class Size:
    videos: int
    seconds: float  # per video, at least
    gallery: int  # enrolled people (0: all)
    calibration: int  # stranger photos for the threshold
    stills: int  # extra probe photos for the stills figure


FULL, QUICK = Size(4, 24.0, 0, 1500, 500), Size(1, 0.0, 200, 300, 0)


# --- cast and photos --------------------------------------------------------------------------------
@dataclasses.dataclass
class Cast:
    gallery: dict[str, Path]  # enrolled person -> gallery photo
    probes: dict[str, list[Path]]  # enrolled person -> other photos
    strangers: list[Path]  # single-photo people, shuffled; the videos take from the front
    calibration: list[Path]  # single-photo people never shown, for the threshold


def make_cast(root: Path, size: Size, rng: np.random.Generator) -> Cast:
    people = {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}
    enrolled = [n for n, photos in people.items() if len(photos) >= 2]
    if size.gallery:
        enrolled = sorted(rng.choice(enrolled, size.gallery, replace=False).tolist())
    singles = [photos[0] for photos in people.values() if len(photos) == 1]
    singles = [singles[i] for i in rng.permutation(len(singles))]
    shown = STRANGERS_SHOWN
    return Cast(
        gallery={n: people[n][0] for n in enrolled},
        probes={n: people[n][1:] for n in enrolled},
        strangers=singles[:shown],
        calibration=singles[shown : shown + size.calibration],
    )


class Casting:
    """Hands out people for the videos, each at most once: enrolled ones (a probe photo) or strangers."""

    def __init__(self, cast: Cast, pipeline: FacePipeline, rng: np.random.Generator):
        self.pipeline, self.rng = pipeline, rng
        self.enrolled = [cast.probes[n] for n in rng.permutation(sorted(cast.probes)).tolist()]
        self.strangers = list(cast.strangers)
        self.used: list[tuple[Photo, Path, bool]] = []  # photo, file, enrolled

    def next(self) -> Photo:
        while True:
            enrolled = self.rng.random() < ENROLLED_SHARE or not self.strangers  # long runs use them all up
            pool = self.enrolled if enrolled else self.strangers
            item = pool.pop()
            path = item[int(self.rng.integers(len(item)))] if isinstance(item, list) else item
            image = read_image(path)
            faces = self.pipeline.detector([image])[0]
            row = pick_face(faces, image.shape, "center")
            if row is None:  # the detector misses this photo: it cannot show in a video either
                continue
            photo = Photo(path.parent.name, image, tuple(faces.boxes[row].tolist()))
            self.used.append((photo, path, enrolled))
            return photo


# --- videos -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Video:
    path: Path
    truth: GroundTruth
    kinds: list[str]  # the kind of segment of each shot


def segment(kind: str, who: Casting, rng: np.random.Generator, seed: int) -> list[Shot]:
    """A few seconds of one hard case."""
    if kind == "cut":
        box = scenes.box_at(rng.uniform(150, 490), rng.uniform(130, 230), rng.uniform(70, 120))
        lengths = (float(rng.uniform(1.5, 3)), float(rng.uniform(1.5, 3)))
        same = bool(rng.random() < 0.3)
        return scenes.same_place_cut(
            who.next(), who.next(), box=box, seconds=lengths, seed=seed, same_background=same
        )
    if kind == "crossing":
        seconds, width = float(rng.uniform(2.5, 3.5)), float(rng.uniform(70, 110))
        return scenes.crossing(who.next(), who.next(), seconds=seconds, width=width, seed=seed)
    if kind == "short":
        shown_s, width = float(rng.choice([0.5, 0.5, 1.0])), float(rng.uniform(70, 120))
        return scenes.short_appearance(who.next(), shown_s, width=width, seed=seed)
    people = [who.next() for _ in range(int(rng.integers(2, 5)))]
    zoom, pan = float(rng.uniform(1.0, 1.15)), (float(rng.uniform(-30, 30)), float(rng.uniform(-10, 10)))
    shot = scenes.crowd(
        people, seconds=float(rng.uniform(2.5, 4.5)), seed=seed, widths=(60, 130), zoom=zoom, pan=pan
    )
    appearances = []
    for a in shot.appearances:  # some come late or leave early: appearances from 0.5 s up
        start, end = (
            sorted(rng.uniform(0, shot.duration_s, 2).tolist())
            if rng.random() < 0.3
            else (0, shot.duration_s)
        )
        start = min(start, shot.duration_s - 0.5)
        appearances.append(dataclasses.replace(a, start_s=start, end_s=max(start + 0.5, end)))
    return [dataclasses.replace(shot, appearances=appearances)]


def make_videos(who: Casting, size: Size, folder: Path, rng: np.random.Generator) -> list[Video]:
    """``size.videos`` videos of at least ``size.seconds`` each, every kind of segment in each."""
    order = ["cut", "crowd", "crossing", "short", "crowd", "cut", "short"]
    videos = []
    for v in range(size.videos):
        shots: list[Shot] = []
        kinds: list[str] = []
        k = 0
        while k < 4 or sum(s.duration_s for s in shots) < size.seconds:
            kind = order[k % len(order)]
            part = segment(kind, who, rng, seed=1000 * v + 10 * k)  # a cut's second shot takes seed + 1
            shots, kinds, k = shots + part, kinds + [kind] * len(part), k + 1
        path = folder / f"video{v}.mp4"
        quality = int(rng.integers(35, 75))
        truth = scenes.render(shots, path, fps=25, crf=26, noise=2.5, jpeg_quality=quality, seed=v)
        videos.append(Video(path, truth, kinds))
    return videos


# --- gallery and threshold ----------------------------------------------------------------------------
def model_key(pipeline: FacePipeline) -> str:
    """What cached embeddings depend on: model, alignment, detector, mirrored averaging (that part is
    empty without it, so older caches stay valid)."""
    cfg = pipeline.config
    flip = "|flip" if cfg.embedder.flip else ""
    return f"{pipeline.model_version}|{cfg.align.model_dump_json()}|{cfg.detector.model_dump_json()}{flip}"


def cached_embeddings(pipeline: FacePipeline, paths: list[Path], tag: str) -> np.ndarray:
    # the photo list is in the name too: --quick (CI) and full runs must not overwrite each other's cache
    key = "\n".join([model_key(pipeline), *map(str, paths)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return embed_all(pipeline, paths, env.cache_dir() / "bench" / f"video-ident-{tag}-{digest}.npz")


def open_set_threshold(
    version: str, gallery: np.ndarray, names: list[str], strangers: np.ndarray, fpir: float, margin: float
) -> tuple[float, str]:
    """The threshold naming ``fpir`` of the strangers by the rule with ``margin``, and what computed it."""
    found = calibrate(version, gallery, np.array(names), fpir=fpir, strangers=strangers, margin=margin)
    return float(
        found.threshold
    ), f"streamproc.gallery.calibrate ({found.method}, {found.impostors} impostors)"


# --- the two methods ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Seen:
    """A face a method reported: where, and the group its answer covers (ours: its track; naive: itself)."""

    video: int
    frame: int
    box: np.ndarray
    group: int
    name: str | None = None  # naive: its nearest person
    distance: float = float("inf")  # naive: how far
    second: float = float("inf")  # naive: how far the next person is


@contextlib.contextmanager
def recording_aggregates(seen: list[FrameBatch]) -> Iterator[None]:
    """While open, stream chains build aggregate stages that keep every batch they get (faces with
    their final track ids). A hook of the runner would be cleaner; this keeps the bench off the library."""

    class Recording(AggregateStage):
        def process(self, batch: FrameBatch) -> FrameBatch:
            seen.append(batch)  # its frames are 1x1 placeholders by now
            return super().process(batch)

    original = chain_module.AggregateStage
    chain_module.AggregateStage = Recording  # type: ignore[misc]
    try:
        yield
    finally:
        chain_module.AggregateStage = original  # type: ignore[misc]


def run_ours(
    videos: list[Video],
    pipeline: FacePipeline,
    index: GalleryIndex,
    threshold: float,
    extra: list[str],
    profile: Path | None = None,
) -> tuple[list[Seen], list[Decision], float]:
    sources = [{"uri": str(video.path), "stream_id": str(v)} for v, video in enumerate(videos)]
    config = load_config(
        profile, ["sources=" + json.dumps(sources), f"gallery.threshold={threshold}", *extra]
    )
    batches: list[FrameBatch] = []
    with recording_aggregates(batches):
        runner = LocalRunner(config, index=index, detector=pipeline.detector, embedder=pipeline.embedder)
        summary = runner.run()
    seen = []
    for batch in batches:
        v = int(batch.stream_id)
        tracks, frame = np.asarray(batch.faces.track_id), np.asarray(batch.faces.frame_index)
        for row in np.flatnonzero(tracks >= 0).tolist():
            at = videos[v].truth.frame_at(float(batch.pts[frame[row]]))
            seen.append(Seen(v, at, batch.faces.boxes[row], group=int(tracks[row])))
    return seen, list(summary.decisions), summary.fps


def run_naive(videos: list[Video], pipeline: FacePipeline, index: GalleryIndex) -> tuple[list[Seen], float]:
    """Every frame: detect, embed every face, find every face's nearest person on its own (no tracking).
    Each video's faces are cached by the video's bytes and the model (the loop is the slow half of the
    bench), with the frames and seconds the loop took when it ran."""
    seen: list[Seen] = []
    frames, spent = 0, 0.0
    for v, video in enumerate(videos):
        path = naive_cache(pipeline, video.path)
        if not path.exists():
            started = time.perf_counter()
            computed, n = naive_video(video, pipeline, index)
            seconds = time.perf_counter() - started
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays: dict[str, Any] = {**computed, "frames": n, "seconds": seconds}
            np.savez(path, **arrays)
        with np.load(path) as rows:
            frames, spent = frames + int(rows["frames"]), spent + float(rows["seconds"])
            for frame, box, name, distance, second in zip(
                rows["frame"], rows["box"], rows["name"], rows["distance"], rows["second"], strict=True
            ):
                seen.append(Seen(v, int(frame), box, len(seen), str(name), float(distance), float(second)))
    return seen, frames / spent


def naive_cache(pipeline: FacePipeline, video: Path) -> Path:
    key = hashlib.sha256(video.read_bytes())
    key.update(model_key(pipeline).encode())
    key.update(b"|two nearest")  # older caches kept only the nearest person
    return env.cache_dir() / "bench" / f"video-ident-naive-{key.hexdigest()[:16]}.npz"


def naive_video(
    video: Video, pipeline: FacePipeline, index: GalleryIndex
) -> tuple[dict[str, np.ndarray], int]:
    """Per face of every frame: frame, box, nearest person, distance and the next person's distance;
    and the frames decoded."""
    align = pipeline.config.align
    rows: dict[str, list[Any]] = {"frame": [], "box": [], "name": [], "distance": [], "second": []}
    frames = 0
    with VideoSource(SourceConfig(uri=str(video.path), batch_frames=1)) as source:
        for batch in source:
            image, at = batch.frames[0], video.truth.frame_at(float(batch.pts[0]))
            faces = pipeline.detector([image])[0]
            frames += 1
            if not len(faces):
                continue
            crops = Crops(align_faces(image, faces, align), crop_landmarks(faces, align))
            for box, found in zip(faces.boxes, index.search(pipeline.embedder(crops), k=2), strict=True):
                rows["frame"].append(at)
                rows["box"].append(box)
                rows["name"].append(found[0].name if found else "")
                rows["distance"].append(found[0].distance if found else np.inf)
                rows["second"].append(found[1].distance if len(found) > 1 else np.inf)
    arrays = {k: np.array(v) for k, v in rows.items()}
    arrays["box"] = arrays["box"].reshape(-1, 4)
    return arrays, frames


# --- scoring --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shown:
    """One ground-truth appearance."""

    person: str
    kind: str
    enrolled: bool


def appearances(videos: list[Video], enrolled: set[str]) -> dict[tuple[int, int], Shown]:
    return {
        (v, i): Shown(a.person, video.kinds[a.shot], a.person in enrolled)
        for v, video in enumerate(videos)
        for i, a in enumerate(video.truth.appearances)
        if a.first_frame >= 0
    }


def held_by_group(seen: list[Seen], videos: list[Video]) -> dict[tuple[int, int], Counter[tuple[int, int]]]:
    """(video, group) -> the appearances of its faces: a face is the half-visible truth box it overlaps
    most, with IoU >= 0.5 (or nothing)."""
    held: dict[tuple[int, int], Counter[tuple[int, int]]] = {}
    for s in seen:
        truth = [f for f in videos[s.video].truth.faces[s.frame] if f.visible >= MIN_VISIBLE]
        counter = held.setdefault((s.video, s.group), Counter())
        if truth:
            iou = iou_matrix(s.box[None], np.array([f.box for f in truth]))[0]
            if iou.max() >= MIN_IOU:
                counter[(s.video, truth[int(iou.argmax())].appearance)] += 1
    return held


def score(
    held: dict[tuple[int, int], Counter[tuple[int, int]]],
    answers: list[tuple[tuple[int, int], str | None]],
    shown: dict[tuple[int, int], Shown],
) -> dict[str, Any]:
    """The figures from each group's appearances and the answers (group, name or None) given about it."""
    named_right: set[tuple[int, int]] = set()
    named_any: set[tuple[int, int]] = set()
    wrong = 0
    for group, name in answers:
        inside = held.get(group, Counter())
        if name is not None:
            wrong += name not in {shown[a].person for a in inside}
            named_any.update(inside)
            named_right.update(a for a in inside if shown[a].person == name)
    known = {a for a, s in shown.items() if s.enrolled}
    strangers = set(shown) - known
    recall_by_kind = {
        kind: round(len(named_right & of_kind) / len(of_kind), 4)
        for kind in sorted({s.kind for s in shown.values()})
        if (of_kind := {a for a in known if shown[a].kind == kind})
    }
    return {
        "appearance_recall": len(named_right & known) / max(1, len(known)),
        "recall_by_kind": recall_by_kind,
        "stranger_named_rate": len(named_any & strangers) / max(1, len(strangers)),
        "wrong_name_rate": wrong / max(1, len(answers)),
        "decisions_per_appearance": len(answers) / max(1, len(shown)),
        "decisions": len(answers),
    }


def score_ours(
    seen: list[Seen], decisions: list[Decision], videos: list[Video], shown: dict
) -> dict[str, Any]:
    held = held_by_group(seen, videos)
    switched = [
        f"video {v} track {t}: "
        + ", ".join(f"{shown[a].person} ({shown[a].kind}, {n} faces)" for a, n in sorted(c.items()))
        for (v, t), c in sorted(held.items())
        if len({shown[a].person for a in c}) > 1
    ]
    answers = [((int(d.stream_id), d.track_id), d.identity) for d in decisions]
    wrong = []
    for d in decisions:
        inside = {shown[a].person: shown[a].enrolled for a in held.get((int(d.stream_id), d.track_id), {})}
        if d.identity is not None and d.identity not in inside:
            holds = ", ".join(f"{p} ({'enrolled' if e else 'stranger'})" for p, e in sorted(inside.items()))
            holds = holds or "no shown face"
            wrong.append(
                f"video {d.stream_id} track {d.track_id}: named {d.identity} at {d.distance:.3f}, holds {holds}"
            )
    return {
        **score(held, answers, shown),
        "id_switches": len(switched),
        "switched_tracks": switched,
        "wrong_names": wrong,
        "tracks": len(held),
    }


def naive_name(s: Seen, threshold: float, margin: float) -> str | None:
    """The name the naive loop gives one face: the product's rule on its two nearest people."""
    return s.name if s.distance <= threshold and s.second - s.distance >= margin else None


def score_naive(
    seen: list[Seen], videos: list[Video], shown: dict, threshold: float, margin: float
) -> dict[str, Any]:
    answers = [((s.video, s.group), naive_name(s, threshold, margin)) for s in seen]
    return score(held_by_group(seen, videos), answers, shown)


def recall_differences(
    ours: tuple[dict[tuple[int, int], Counter[tuple[int, int]]], list[Decision]],
    naive: tuple[dict[tuple[int, int], Counter[tuple[int, int]]], list[Seen]],
    shown: dict,
    threshold: float,
    margin: float,
) -> list[str]:
    """The enrolled appearances that one method names right and the other does not, each with what
    the naive loop saw (of its faces on the appearance: how many were named right, its closest
    distance to the right person) and what ours decided (each decision on a track holding it:
    the name or unknown, the track's aggregate distance, the faces aggregated). Each method comes
    as its ``held_by_group`` and its decisions (ours) or faces (naive)."""
    (ours_held, decisions), (naive_held, naive_seen) = ours, naive
    said: dict[tuple[int, int], list[Decision]] = {}
    for d in decisions:
        for a in ours_held.get((int(d.stream_id), d.track_id), {}):
            said.setdefault(a, []).append(d)
    faces: dict[tuple[int, int], list[Seen]] = {}
    for s in naive_seen:
        for a in naive_held.get((s.video, s.group), {}):
            faces.setdefault(a, []).append(s)
    lines = []
    for a, who in sorted(shown.items()):
        if not who.enrolled:
            continue
        right = [s for s in faces.get(a, []) if naive_name(s, threshold, margin) == who.person]
        ours_right = any(d.identity == who.person for d in said.get(a, []))
        if bool(right) == ours_right:
            continue
        nearest = [s.distance for s in faces.get(a, []) if s.name == who.person]
        decided = "; ".join(
            f"track {d.track_id}: {d.identity or 'unknown'} at {d.distance:.3f} ({d.n_frames} faces)"
            for d in said.get(a, [])
        )
        lines.append(
            f"video {a[0]} appearance {a[1]} ({who.person}, {who.kind}): "
            f"{'naive' if right else 'ours'} only; naive named {len(right)} of its {len(faces.get(a, []))} "
            f"faces right (closest {min(nearest, default=np.inf):.3f}); ours {decided or 'no decision'}"
        )
    return lines


def stranger_gains(
    shown: dict, held: dict, best: dict[tuple[int, int], float], still: dict[str, float]
) -> np.ndarray:
    """A method's **gain** on each stranger appearance: how much closer to the gallery it got than the
    stranger's still photo (its nearest distance in video: the best of its decisions, or of its faces
    for the naive loop, which tries every frame); -inf where it held none of the stranger's faces."""
    gains = []
    for a, s in shown.items():
        if not s.enrolled:
            near = [d for g, inside in held.items() if a in inside and np.isfinite(d := best.get(g, np.inf))]
            gains.append(still[s.person] - min(near) if near else -np.inf)
    return np.array(gains)


def expected_strangers_named(gains: np.ndarray, impostors: np.ndarray, threshold: float) -> float:
    """Strangers named as expected over many strangers, not just the few in the videos: each
    calibration stranger's still distance (``impostors``: inf where the margin keeps it unnamed, see
    ``calibrate.impostor_scores``) shifted by each observed gain, the fraction at most ``threshold``.
    Ours should sit near the target FPIR, a per-frame loop above it."""
    return float(np.mean((impostors[:, None] - gains[None, :]) <= threshold))


def best_distances(answers: list[tuple[tuple[int, int], float]]) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = {}
    for group, distance in answers:
        out[group] = min(out.get(group, np.inf), distance)
    return out


def stills_rate(
    pipeline: FacePipeline, index: GalleryIndex, parts: dict[str, list[Path]], threshold: float, margin: float
) -> float:
    """``lfw_identification``'s detect-and-identify rate of still probe photos at ``threshold``; the
    photos come in parts, each cached on its own (``tag -> paths``)."""
    paths = [p for part in parts.values() for p in part]
    emb = np.concatenate([cached_embeddings(pipeline, part, tag) for tag, part in parts.items() if part])
    chosen = [named(r, threshold, margin) for r in index.search(emb, k=2)]
    return float(
        np.mean([m is not None and m.name == p.parent.name for m, p in zip(chosen, paths, strict=True)])
    )


# --- report ---------------------------------------------------------------------------------------------
ROWS = [
    ("identity switches (tracks with 2+ people)", "id_switches", None),
    ("appearance recall (enrolled named right)", "appearance_recall", "naive_appearance_recall"),
    ("wrong names (of decisions)", "wrong_name_rate", "naive_wrong_name_rate"),
    ("strangers named (of stranger appearances)", "stranger_named_rate", "naive_stranger_named_rate"),
    (
        "  expected over the calibration strangers",
        "expected_stranger_named_rate",
        "naive_expected_stranger_named_rate",
    ),
    ("decisions per appearance", "decisions_per_appearance", "naive_decisions_per_appearance"),
    ("frames/s", "fps_ours", "fps_naive"),
]


def print_report(r: dict[str, Any], out: Any) -> None:
    print(
        f"{r['videos']} videos, {r['video_seconds']:.0f} s, {r['appearances']} appearances "
        f"({r['enrolled_appearances']} enrolled, {r['stranger_appearances']} strangers); gallery "
        f"{r['gallery_size']} people; threshold {r['threshold']:.4f} at FPIR {r['fpir']:g} ({r['threshold_source']}); "
        f"config {r['config']}, model {r['model']}",
        file=out,
    )
    print(f"{'':<44}{'ours':>10}{'naive':>10}", file=out)
    for label, ours, naive in ROWS:
        cells = [f"{r[ours]:.4g}", f"{r[naive]:.4g}" if naive else "-"]
        print(f"{label:<44}{cells[0]:>10}{cells[1]:>10}", file=out)
    for kind, recall in r["recall_by_kind"].items():
        print(f"{'  recall, ' + kind:<44}{recall:>10.4g}{r['naive_recall_by_kind'][kind]:>10.4g}", file=out)
    print(
        f"naive loop at threshold {r['naive_matched_threshold']:.4f}, where its expected strangers named "
        f"match ours: appearance recall {r['naive_matched_appearance_recall']:.4g}",
        file=out,
    )
    print(
        f"stills detect-and-identify rate at the same threshold: {r['stills_detect_identify_rate']:.4f} "
        f"({r['stills_probes']} probe photos, bench/lfw_identification.py's measure)",
        file=out,
    )
    for line in r["recall_differences"]:
        print(f"  named by one method: {line}", file=out)
    for line in r["switched_tracks"]:
        print(f"  identity switch: {line}", file=out)
    for line in r["wrong_names"]:
        print(f"  wrong name: {line}", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=env.shared_data() / "lfw", help="LFW folder")
    parser.add_argument("--quick", action="store_true", help="one short video and a small gallery (CI)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (the table on stderr)")
    parser.add_argument("--fpir", type=float, default=0.01, help="target fraction of strangers named")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=0, help="how many videos (default: 4; --quick: 1)")
    parser.add_argument("--keep", type=Path, help="write the videos here and keep them")
    parser.add_argument(
        "--config", type=Path, help="a profile to measure instead of the default (e.g. configs/realtime.yaml)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, ours"
    )
    parser.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for everything: gallery, naive loop and ours (e.g. embedder.flip=false)",
    )
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, root: Path, folder: Path) -> dict[str, Any]:
    size = QUICK if args.quick else FULL
    size = dataclasses.replace(size, videos=args.videos or size.videos)
    rng = np.random.default_rng(args.seed)
    pipeline = FacePipeline(load_config(args.config, args.base))
    cast = make_cast(root, size, rng)
    names = sorted(cast.gallery)
    gallery = cached_embeddings(pipeline, [cast.gallery[n] for n in names], "gallery")
    index = GalleryIndex.from_arrays(names, names, gallery, model_version=pipeline.model_version)
    strangers = cached_embeddings(pipeline, cast.calibration, "calibration")
    margin = pipeline.config.gallery.margin
    threshold, source = open_set_threshold(
        pipeline.model_version, gallery, names, strangers, args.fpir, margin
    )
    who = Casting(cast, pipeline, rng)
    videos = make_videos(who, size, folder, rng)
    in_videos = [path for _, path, enrolled in who.used if enrolled]
    every = sorted(p for ps in cast.probes.values() for p in ps)
    sample = [every[i] for i in np.random.default_rng(args.seed).permutation(len(every))[: size.stills]]
    probes = {"stills": sample, "shown": sorted(set(in_videos) - set(sample))}
    ours_seen, decisions, fps_ours = run_ours(
        videos, pipeline, index, threshold, [*args.base, *args.set], args.config
    )
    naive_seen, fps_naive = run_naive(videos, pipeline, index)
    shown = appearances(videos, set(names))
    naive = score_naive(naive_seen, videos, shown, threshold, margin)
    stranger_photos = {photo.person: path for photo, path, enrolled in who.used if not enrolled}
    still_rows = cached_embeddings(pipeline, list(stranger_photos.values()), "strangers-shown")
    still = dict(
        zip(stranger_photos, (2.0 - 2.0 * (still_rows @ gallery.T).max(axis=1)).tolist(), strict=True)
    )
    impostors = impostor_scores(*nearest_two(gallery, np.array(names), strangers), margin)
    ours_best = best_distances([((int(d.stream_id), d.track_id), d.distance) for d in decisions])
    naive_best = best_distances([((s.video, s.group), s.distance) for s in naive_seen])
    ours_held, naive_held = held_by_group(ours_seen, videos), held_by_group(naive_seen, videos)
    ours_gains = stranger_gains(shown, ours_held, ours_best, still)
    naive_gains = stranger_gains(shown, naive_held, naive_best, still)
    expected = {
        "expected_stranger_named_rate": round(expected_strangers_named(ours_gains, impostors, threshold), 5),
        "naive_expected_stranger_named_rate": round(
            expected_strangers_named(naive_gains, impostors, threshold), 5
        ),
    }
    lower = threshold - np.arange(0.0, 0.4, 0.001)  # the naive loop's threshold for ours' strangers rate
    ours_rate = expected["expected_stranger_named_rate"]
    matched = next(
        (t for t in lower if expected_strangers_named(naive_gains, impostors, t) <= ours_rate), lower[-1]
    )
    at_matched = score_naive(naive_seen, videos, shown, float(matched), margin)["appearance_recall"]
    differences = recall_differences(
        (ours_held, decisions), (naive_held, naive_seen), shown, threshold, margin
    )
    return {
        **score_ours(ours_seen, decisions, videos, shown),
        **{f"naive_{k}": v for k, v in naive.items()},
        **expected,
        "naive_matched_threshold": round(float(matched), 4),
        "naive_matched_appearance_recall": at_matched,
        "recall_differences": differences,
        "fps_ours": round(fps_ours, 2),
        "fps_naive": round(fps_naive, 2),
        "stills_detect_identify_rate": round(stills_rate(pipeline, index, probes, threshold, margin), 4),
        "stills_probes": sum(map(len, probes.values())),
        "threshold": threshold,
        "margin": margin,
        "threshold_source": source,
        "fpir": args.fpir,
        "gallery_size": len(names),
        "videos": len(videos),
        "video_seconds": round(sum(v.truth.n_frames / v.truth.fps for v in videos), 2),
        "appearances": len(shown),
        "enrolled_appearances": sum(s.enrolled for s in shown.values()),
        "stranger_appearances": sum(not s.enrolled for s in shown.values()),
        "model": pipeline.embedder.card.key,
        "config": str(args.config) if args.config else "default",
        "alignment": pipeline.config.align.mode,
        "quick": args.quick,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.fpir < 1:  # before the data: a bad argument is said wherever the bench runs
        print(f"--fpir: expected a fraction between 0 and 1, got {args.fpir}", file=sys.stderr)
        return 2
    try:
        load_config(args.config, [*args.base, *args.set])
    except ConfigError as exc:
        print(f"--config/--base/--set: {exc}", file=sys.stderr)
        return 2
    root = args.data / "lfw-deepfunneled"
    if not root.is_dir():
        print(f"LFW not found at {root}; pass --data or set STREAMPROC_SHARED_DATA", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-video-ident-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report = measure(args, root, folder)
    report["bench_seconds"] = round(time.perf_counter() - started, 1)
    print_report(report, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
