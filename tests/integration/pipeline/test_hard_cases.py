"""The hard cases of real footage, with real LFW faces, real MTCNN and the real FaceNet model.

Each video is made by ``streamproc.scenes`` from LFW photos the gallery never saw (the gallery holds
another photo of each enrolled person, among distractors). The per-stream chain runs exactly as in
the runners (schedule, detect, track, embed, appearance guard, aggregate) and the match stage decides
at the threshold the policy resolves. Every face that reached the aggregate stage is mapped back to
the ground truth by box overlap, so a track that held two people is seen, not guessed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamproc import scenes
from streamproc.config import load_config
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.policy import resolve
from streamproc.runtime.chain import Back, StreamChain
from streamproc.runtime.pump import LocalPool, Pump
from streamproc.stages.match import MatchStage
from streamproc.stages.track import iou_matrix
from streamproc.types import Decision

pytestmark = pytest.mark.integration
FPS = 12.0
DISTRACTORS = 40  # enrolled people who never appear


@dataclass
class World:
    lfw: Path
    people: list[str]  # enrolled and shown (a second photo of each)
    strangers: list[str]  # shown, never enrolled (people with one photo)
    index: GalleryIndex
    threshold: float

    def photo(self, person: str, number: int = 2) -> scenes.Photo:
        return scenes.Photo(person, read_image(self.lfw / person / f"{person}_{number:04d}.jpg"))


@pytest.fixture(scope="module")
def world(lfw_dir: Path, face_pipeline: FacePipeline) -> World:
    root = lfw_dir / "lfw-deepfunneled"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    several = [p.name for p in folders if len(list(p.glob("*.jpg"))) >= 2]
    single = [p.name for p in folders if len(list(p.glob("*.jpg"))) == 1]
    rng = np.random.default_rng(12)
    chosen = [several[i] for i in rng.choice(len(several), 6 + DISTRACTORS, replace=False)]
    strangers = [single[i] for i in rng.choice(len(single), 4, replace=False)]
    images = [read_image(root / name / f"{name}_0001.jpg") for name in chosen]
    result = face_pipeline.embed_subjects(images)
    index = GalleryIndex.from_arrays(
        [f"id-{n}" for n in chosen], chosen, result.embeddings, model_version=face_pipeline.model_version
    )
    card = face_pipeline.embedder.card
    threshold = resolve(GalleryConfig(), card, card.version, card.version, len(index)).value
    return World(root, chosen[:6], strangers, index, threshold)


@dataclass
class Outcome:
    members: dict[int, set[str]]  # track id -> ground-truth people whose faces it held
    decisions: list[Decision]
    truth: scenes.GroundTruth

    def named(self) -> dict[int, str | None]:
        """Each track's latest identity."""
        out: dict[int, str | None] = {}
        for d in self.decisions:
            out[d.track_id] = d.identity
        return out

    def mixed(self) -> list[int]:
        return [t for t, people in self.members.items() if len(people) > 1]

    def wrong(self) -> list[Decision]:
        return [
            d for d in self.decisions if d.identity and d.identity not in self.members.get(d.track_id, set())
        ]

    def person_named(self, person: str) -> bool:
        return any(
            d.identity == person and person in self.members.get(d.track_id, ()) for d in self.decisions
        )


def run_scene(
    world: World, pipeline: FacePipeline, shots: Sequence[scenes.Shot], path: Path, *extra: str
) -> Outcome:
    truth = scenes.render(shots, path, fps=FPS)
    config = load_config(None, ["sources=" + json.dumps([{"uri": str(path)}]), *extra])  # product defaults
    chain = StreamChain(config.sources[0], config, pipeline.model_version, 128)
    detect = LocalPool(lambda images: pipeline.detector(list(images)), merge=np.concatenate)
    pump = Pump(chain, LocalPool(pipeline.embedder, pipeline.model_version), detect)
    match = MatchStage(world.threshold, world.index, sync_interval_s=None)
    members: dict[int, set[str]] = defaultdict(set)
    decisions: list[Decision] = []
    while not pump.done:
        for back in (r for r in pump.step() if isinstance(r, Back)):
            decisions += match(back.as_batch()).decisions
            for pts, tid, *box in back.tracked.tolist():
                person = _person_at(truth, pts, box)
                if person is not None:
                    members[int(tid)].add(person)
    chain.close()
    return Outcome(dict(members), decisions, truth)


def _person_at(truth: scenes.GroundTruth, pts: float, box: list[float]) -> str | None:
    faces = truth.faces[truth.frame_at(pts)]
    if not faces:
        return None
    overlap = iou_matrix(np.array([box]), np.array([f.box for f in faces]))[0]
    best = int(np.argmax(overlap))
    return faces[best].person if overlap[best] >= 0.4 else None


@pytest.mark.parametrize("same_background", [False, True], ids=["new-backdrop", "same-backdrop"])
def test_after_a_cut_the_next_person_at_the_same_place_is_named(
    world: World, face_pipeline: FacePipeline, tmp_path: Path, same_background: bool
) -> None:
    a, b = world.photo(world.people[0]), world.photo(world.people[1])
    shots = scenes.same_place_cut(a, b, seconds=(2.0, 2.0), same_background=same_background)
    out = run_scene(world, face_pipeline, shots, tmp_path / "cut.mp4")
    assert out.mixed() == [], f"tracks holding two people: {out.members}"
    assert out.person_named(a.person) and out.person_named(b.person), (out.members, out.named())
    assert out.wrong() == []


def test_two_people_crossing_keep_their_own_tracks_and_names(
    world: World, face_pipeline: FacePipeline, tmp_path: Path
) -> None:
    a, b = world.photo(world.people[2]), world.photo(world.people[3])
    out = run_scene(world, face_pipeline, scenes.crossing(a, b, seconds=3.0), tmp_path / "cross.mp4")
    assert out.mixed() == [], f"tracks holding two people: {out.members}"
    assert out.person_named(a.person) and out.person_named(b.person), (out.members, out.named())
    assert out.wrong() == []


def test_a_half_second_appearance_gets_a_decision(
    world: World, face_pipeline: FacePipeline, tmp_path: Path
) -> None:
    a = world.photo(world.people[4])
    out = run_scene(world, face_pipeline, scenes.short_appearance(a, 0.5), tmp_path / "short.mp4")
    assert out.decisions, "a half-second appearance was dropped without a decision"
    assert out.person_named(a.person), (out.members, out.named())


def test_a_crowd_names_the_enrolled_and_no_stranger(
    world: World, face_pipeline: FacePipeline, tmp_path: Path
) -> None:
    shown = [world.people[5], world.strangers[0], world.people[0], world.strangers[1]]
    shot = scenes.crowd([world.photo(p, 2 if p in world.people else 1) for p in shown], seconds=2.5, seed=3)
    out = run_scene(world, face_pipeline, [shot], tmp_path / "crowd.mp4")
    assert out.mixed() == []
    assert out.wrong() == [], f"wrong names: {[(d.track_id, d.identity, d.distance) for d in out.wrong()]}"
    assert out.person_named(world.people[5]) and out.person_named(world.people[0]), out.named()
