"""``streamproc demo``: the main job on embedded defaults, with five people's photos.

1. Still photos: every pair of validation photos is judged same/different at the model's
   calibrated threshold, and each is identified by its nearest training photo (k-NN, k=1).
2. Video: the training photos of three of the five people are enrolled into the gallery (the
   embedded Redis-compatible server unless one is configured); the other two are strangers. A
   video is synthesised with one shot per validation photo, joined by hard cuts with each face
   where the last one stood (``streamproc.demo_video``); the Ray pipeline runs on it, and every
   appearance is scored: enrolled people named right, wrong or not at all, strangers named or not.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
from pathlib import Path

import numpy as np

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.config import Config, load_config
from streamproc.demo_video import Shot
from streamproc.errors import InputError, UnknownIdentity
from streamproc.types import Decision

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
# Shots are 1.5 s at 12 fps: detect every 2nd frame and decide after 3 faces so each shot decides.
VIDEO_OVERRIDES = ["detect.every_k_frames=2", "aggregate.min_frames=3", "aggregate.n_frames=8"]
DEMO_PREFIX = "streamproc-demo"  # the demo never touches the user's own gallery keys
ENROLLED_PEOPLE = 3  # the first three people (sorted) are enrolled; the others appear as strangers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the bundled 5-person example")
    p.add_argument(
        "--data", type=Path, help="folder with train/<person>/ and val/<person>/ (default: fetched)"
    )
    p.add_argument("--skip-video", action="store_true", help="only the still-photo part")
    add_config_args(p)
    p.set_defaults(handler=_demo)


def list_people(folder: Path) -> list[tuple[str, Path]]:
    """(person, image path) for every image in a folder-per-person tree, sorted."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    items = [
        (person.name, image)
        for person in sorted(p for p in folder.iterdir() if p.is_dir())
        for image in sorted(person.iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise InputError(f"{folder}: no images in per-person sub-folders")
    return items


def by_person(items: list[tuple[str, Path]]) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for name, path in items:
        people.setdefault(name, []).append(path)
    return people


def _demo(args: argparse.Namespace) -> int:
    from streamproc.models import fetch

    config = config_from_args(args)
    root = args.data or fetch.celebrity_dataset()
    photos(config, root)
    if not args.skip_video:
        return video(config, args, root)
    return 0


def photos(config: Config, root: Path) -> None:
    from streamproc.eval.verification import squared_l2
    from streamproc.faces import FacePipeline, read_image

    pipeline = FacePipeline(config)
    threshold = pipeline.embedder.card.threshold_for(pipeline.model_version)

    def embed(split: str) -> tuple[list[str], np.ndarray, int]:
        items = list_people(root / split)
        result = pipeline.embed_subjects([read_image(p) for _, p in items])
        return [name for name, _ in items], result.embeddings, int(result.failed.sum())

    train_names, train_emb, train_failed = embed("train")
    val_names, val_emb, val_failed = embed("val")
    print(f"== still photos: model {pipeline.embedder.card.key}, threshold {threshold:.3f} (squared L2)")
    print(
        f"embedded {len(train_names)} train and {len(val_names)} val photos; no face found in "
        f"{train_failed + val_failed} (centre crop used)"
    )
    i, j = np.array(list(itertools.combinations(range(len(val_names)), 2))).T
    same = np.array(val_names)[i] == np.array(val_names)[j]
    correct = (squared_l2(val_emb[i], val_emb[j]) <= threshold) == same
    print(f"verification: {correct.mean():.4f} accuracy over {len(i)} pairs ({same.sum()} same)")
    d = ((val_emb[:, None, :] - train_emb[None, :, :]) ** 2).sum(-1)
    hits = np.array(train_names)[d.argmin(axis=1)] == np.array(val_names)
    print(f"recognition (1-NN against train): {hits.mean():.4f} accuracy over {len(val_names)} photos")


def video(config: Config, args: argparse.Namespace, root: Path) -> int:
    from streamproc import env
    from streamproc.commands.gallery import enroll_people, open_store
    from streamproc.demo_video import make_demo_video
    from streamproc.detect import build_detector
    from streamproc.faces import read_image
    from streamproc.runtime.pipeline import RayRunner

    video_path = env.data_dir() / "demo" / "demo.mp4"
    video_path.parent.mkdir(parents=True, exist_ok=True)
    val = by_person(list_people(root / "val"))
    shots = make_demo_video(build_detector(config.detector), val, video_path, read_image)
    train = by_person(list_people(root / "train"))
    enrolled = sorted(train)[:ENROLLED_PEOPLE]
    strangers = sorted(set(val) - set(enrolled))
    print(
        f"\n== video: {len(shots)} shots joined by hard cuts, each face where the last one stood, written "
        f"to {video_path}\nenrolled: {', '.join(enrolled)}; strangers (never enrolled): {', '.join(strangers)}"
    )

    extra = [*VIDEO_OVERRIDES, f"gallery.prefix={DEMO_PREFIX}", *(args.set or [])]
    extra.append("sources=" + json.dumps([{"uri": str(video_path), "stream_id": "demo"}]))
    config = load_config(args.config, extra)
    with open_store(config) as store:  # start from a clean demo gallery on every run
        for name in train:
            with contextlib.suppress(UnknownIdentity):
                store.delete(name)
    enroll_people(config, {name: train[name] for name in enrolled}, quiet=True)

    summary = RayRunner(config).run()
    print_scores(shots, summary.decisions, set(enrolled))
    print(f"{summary.frames} frames at {summary.fps:.1f} frames/s on {summary.runner}")
    return 0 if summary.ok else 1


def print_scores(shots: list[Shot], decisions: list[Decision], enrolled: set[str]) -> dict[str, int]:
    """One line per shot (an appearance) and the totals: named right, wrong or unknown."""
    from streamproc.demo_video import shot_at

    final: dict[int, Decision] = {}
    for d in decisions:  # the last decision of a track is its final word
        final[d.track_id] = d
    said: dict[int, list[Decision]] = {}
    for d in final.values():
        shot = shot_at(shots, d.first_pts, d.last_pts)
        if shot is not None:
            said.setdefault(shots.index(shot), []).append(d)
    counts = dict.fromkeys(("right", "wrong", "unknown", "stranger_unknown", "stranger_named"), 0)
    print(f"{'shot':>4} {'time (s)':>11}  {'who':<27} {'decided':<24} {'distance':>8}  verdict")
    for k, shot in enumerate(shots):
        names = [d.identity for d in said.get(k, []) if d.identity]
        if shot.person in enrolled:
            verdict = "wrong" if any(n != shot.person for n in names) else "right" if names else "unknown"
        else:
            verdict = "stranger_named" if names else "stranger_unknown"
        counts[verdict] += 1
        decided = ", ".join(d.identity or "unknown" for d in said.get(k, [])) or "(no decision)"
        dist = min((d.distance for d in said.get(k, [])), default=float("nan"))
        who = shot.person + ("" if shot.person in enrolled else " (stranger)")
        shown = verdict.replace("_", " ")
        print(
            f"{k:>4} {shot.start_s:>5.2f}-{shot.end_s:<5.2f}  {who:<27} {decided:<24} {dist:>8.3f}  {shown}"
        )
    people = counts["right"] + counts["wrong"] + counts["unknown"]
    print(
        f"appearances of enrolled people: {people}: named right {counts['right']}, wrong {counts['wrong']}, "
        f"unknown {counts['unknown']}; of strangers: {counts['stranger_unknown'] + counts['stranger_named']}: "
        f"unknown {counts['stranger_unknown']}, named {counts['stranger_named']}"
    )
    return counts
