"""Match stage: hand-placed unit vectors against a GalleryIndex built from arrays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from streamproc.errors import ConfigError, GalleryUnavailable, IncompatibleModels
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.memory import MemoryGalleryStore
from streamproc.stages.match import MatchStage
from streamproc.types import Decision, FrameBatch

DIM = 4
THRESHOLD = 1.0
ADA, BOB = np.eye(DIM, dtype=np.float32)[0], np.eye(DIM, dtype=np.float32)[1]


def toward(base: np.ndarray, other: np.ndarray, squared_distance: float) -> np.ndarray:
    """A unit vector at exactly ``squared_distance`` (squared L2) from unit vector ``base``."""
    cos = 1.0 - squared_distance / 2.0
    ortho = other - base * float(base @ other)
    ortho /= np.linalg.norm(ortho)
    return (cos * base + math.sqrt(max(0.0, 1 - cos**2)) * ortho).astype(np.float32)


def make_index(model_version: str = "v1") -> GalleryIndex:
    return GalleryIndex.from_arrays(
        ["id-ada", "id-bob"], ["Ada", "Bob"], np.stack([ADA, BOB]), model_version=model_version
    )


def make_decision(
    embedding: np.ndarray,
    *,
    track: int = 0,
    revision: int = 0,
    model_version: str = "v1",
    stream: str = "cam",
) -> Decision:
    return Decision(
        stream_id=stream,
        track_id=track,
        first_pts=0.0,
        last_pts=1.0,
        identity=None,
        distance=float("nan"),
        n_frames=5,
        model_version=model_version,
        gallery_version="",
        revision=revision,
        embedding=np.asarray(embedding, np.float32),
    )


def make_batch(
    decisions: Sequence[Decision], *, closed: Sequence[int] = (), eos: bool = False, stream: str = "cam"
) -> FrameBatch:
    return FrameBatch(
        stream,
        np.zeros((0, 1, 1, 3), np.uint8),
        np.zeros(0),
        decisions=list(decisions),
        closed_tracks=list(closed),
        end_of_stream=eos,
    )


class DownStore(MemoryGalleryStore):
    """A store whose server is unreachable when an unknown face is stored."""

    def _add_unknown(self, embedding: np.ndarray, model_version: str, meta: dict[str, Any]) -> str:
        raise GalleryUnavailable("store down")


@pytest.mark.parametrize(
    ("squared_distance", "expected"),
    [
        (0.0, "Ada"),
        (0.5, "Ada"),
        (THRESHOLD - 1e-3, "Ada"),
        (THRESHOLD + 1e-3, None),
        (1.9, None),
    ],
)
def test_known_within_threshold_unknown_beyond(squared_distance: float, expected: str | None) -> None:
    probe = toward(ADA, np.eye(DIM, dtype=np.float32)[2], squared_distance)
    out = MatchStage(THRESHOLD, make_index())(make_batch([make_decision(probe)]))
    (d,) = out.decisions
    assert d.identity == expected
    assert d.distance == pytest.approx(squared_distance, abs=1e-4)
    assert d.gallery_version == "v1"


def test_nearest_person_wins() -> None:
    probe = toward(BOB, ADA, 0.3)  # 0.3 from Bob, farther from Ada
    (d,) = MatchStage(THRESHOLD, make_index())(make_batch([make_decision(probe)])).decisions
    assert (d.identity, round(d.distance, 4)) == ("Bob", 0.3)


def test_unknown_revision0_is_stored_for_clustering() -> None:
    store = MemoryGalleryStore()
    far = np.eye(DIM, dtype=np.float32)[3]  # squared distance 2 from everyone
    stage = MatchStage(THRESHOLD, make_index(), store=store)
    out = stage(make_batch([make_decision(far, track=7), make_decision(ADA, track=8)]))
    assert [d.identity for d in out.decisions] == [None, "Ada"]
    stored = store.unknowns("v1")
    assert len(stored.ids) == 1 and np.allclose(stored.embeddings[0], far)
    meta = stored.meta[0]
    assert meta["stream_id"] == "cam" and meta["track_id"] == 7
    assert meta["event_id"] == out.decisions[0].event_id


def test_store_failure_does_not_lose_the_decision() -> None:
    far = np.eye(DIM, dtype=np.float32)[3]
    stage = MatchStage(THRESHOLD, make_index(), store=DownStore())
    (d,) = stage(make_batch([make_decision(far)])).decisions
    assert d.identity is None


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        (ADA, ADA, False),  # same identity: nothing new
        (ADA, BOB, True),  # changed mind: an update event
        (np.eye(DIM, dtype=np.float32)[3], ADA, True),  # unknown -> known
        (ADA, np.eye(DIM, dtype=np.float32)[3], True),  # known -> unknown
        (np.eye(DIM, dtype=np.float32)[3], np.eye(DIM, dtype=np.float32)[2], False),  # unknown twice
    ],
)
def test_revision1_kept_only_when_identity_changes(first: np.ndarray, second: np.ndarray, kept: bool) -> None:
    stage = MatchStage(THRESHOLD, make_index())
    out0 = stage(make_batch([make_decision(first, revision=0)]))
    out1 = stage(make_batch([make_decision(second, revision=1)]))
    assert len(out0.decisions) == 1
    assert len(out1.decisions) == int(kept)
    if kept:
        assert out1.decisions[0].kind == "update"
        assert out1.decisions[0].event_id != out0.decisions[0].event_id


def test_revisions_in_one_batch_and_per_track_state() -> None:
    stage = MatchStage(THRESHOLD, make_index())
    batch = make_batch(
        [
            make_decision(ADA, track=1, revision=0),
            make_decision(BOB, track=2, revision=0),
            make_decision(ADA, track=1, revision=1),  # same as before: dropped
            make_decision(ADA, track=2, revision=1),  # Bob -> Ada: kept
        ]
    )
    out = stage(batch)
    assert [(d.track_id, d.revision, d.identity) for d in out.decisions] == [
        (1, 0, "Ada"),
        (2, 0, "Bob"),
        (2, 1, "Ada"),
    ]


def test_closed_tracks_are_forgotten() -> None:
    stage = MatchStage(THRESHOLD, make_index())
    stage(make_batch([make_decision(ADA, track=1)], closed=[1]))
    # the same track id again (a new stream session): its revision 1 has no history, so it is kept
    out = stage(make_batch([make_decision(ADA, track=1, revision=1)]))
    assert len(out.decisions) == 1


def test_already_matched_decisions_pass_through() -> None:
    done = Decision("cam", 3, 0.0, 1.0, "Zed", 0.2, 5, "v1", "v1")
    out = MatchStage(THRESHOLD, make_index())(make_batch([done]))
    assert out.decisions == [done]


@pytest.mark.parametrize(
    ("gallery", "probe", "error"),
    [
        ("v1", "v1", None),
        ("v1", "v2", IncompatibleModels),
        ("v2", "v1", IncompatibleModels),
    ],
)
def test_incompatible_model_versions_are_refused(
    gallery: str, probe: str, error: type[Exception] | None
) -> None:
    stage = MatchStage(THRESHOLD, make_index(gallery))
    batch = make_batch([make_decision(ADA, model_version=probe)])
    if error is None:
        assert stage(batch).decisions[0].identity == "Ada"
    else:
        with pytest.raises(error, match="model version"):
            stage(batch)


def test_empty_gallery_says_unknown_with_no_distance() -> None:
    index = GalleryIndex("v1", dim=DIM)
    (d,) = MatchStage(THRESHOLD, index)(make_batch([make_decision(ADA)])).decisions
    assert d.identity is None and math.isnan(d.distance) and d.gallery_version == "v1"


@pytest.mark.parametrize(("threshold", "version"), [(0.0, "v1"), (float("inf"), "v1"), (1.0, "")])
def test_bad_construction_is_a_config_error(threshold: float, version: str) -> None:
    with pytest.raises(ConfigError):
        MatchStage(threshold, make_index(version))


class SyncCounter(GalleryIndex):
    def __init__(self) -> None:
        super().__init__("v1", dim=DIM)
        self.upsert("id-ada", "Ada", ADA[None, :])
        self.syncs = 0

    def sync(self, block_ms: int | None = None, count: int = 10_000) -> int:
        self.syncs += 1
        return 0


def test_sync_at_most_once_per_interval() -> None:
    now = [0.0]
    index = SyncCounter()
    stage = MatchStage(
        THRESHOLD,
        index,
        store=MemoryGalleryStore(),
        sync_interval_s=1.0,
        clock=lambda: now[0],
    )
    for t in (0.1, 0.5, 0.9, 1.2, 1.3, 2.5):
        now[0] = t
        stage(make_batch([make_decision(ADA, track=int(t * 10))]))
    assert index.syncs == 2  # at 1.2 and at 2.5


def test_no_store_means_no_sync() -> None:
    index = SyncCounter()
    stage = MatchStage(THRESHOLD, index, clock=lambda: 100.0)
    stage(make_batch([make_decision(ADA)]))
    assert index.syncs == 0


def between(a: np.ndarray, b: np.ndarray, lead: float) -> np.ndarray:
    """A unit vector in the plane of unit vectors ``a`` and ``b``, nearer ``a`` than ``b`` by ``lead``
    (squared L2; ``a`` and ``b`` orthogonal)."""
    # d_a = 2 - 2 cos t, d_b = 2 - 2 sin t: find t with d_b - d_a = 2 (cos t - sin t) = lead
    t = math.pi / 4 - math.asin(lead / (2 * math.sqrt(2)))
    return (math.cos(t) * a + math.sin(t) * b).astype(np.float32)


@pytest.mark.parametrize(("lead", "expected"), [(0.05, None), (0.2, "Ada")])
def test_a_face_as_near_two_people_is_given_neither_name(lead: float, expected: str | None) -> None:
    """Both people are well within the threshold: the nearest name alone would be a coin toss."""
    stage = MatchStage(1.2, make_index(), margin=0.1)
    out = stage(make_batch([make_decision(between(ADA, BOB, lead))])).decisions
    assert out[0].identity == expected
    assert out[0].distance < 1.2 and out[0].threshold == 1.2


def test_without_a_margin_the_nearest_name_is_given() -> None:
    stage = MatchStage(1.2, make_index())
    assert stage(make_batch([make_decision(between(ADA, BOB, 0.05))])).decisions[0].identity == "Ada"


def test_a_gallery_of_one_person_needs_no_margin() -> None:
    index = GalleryIndex.from_arrays(["id-ada"], ["Ada"], ADA[None], model_version="v1")
    stage = MatchStage(THRESHOLD, index, margin=0.5)
    assert stage(make_batch([make_decision(toward(ADA, BOB, 0.3))])).decisions[0].identity == "Ada"


@pytest.mark.parametrize("margin", [-0.1, float("nan"), float("inf")])
def test_margin_must_be_a_distance(margin: float) -> None:
    with pytest.raises(ConfigError, match="margin"):
        MatchStage(THRESHOLD, make_index(), margin=margin)
