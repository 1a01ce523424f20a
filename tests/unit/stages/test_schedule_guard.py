"""Shot cuts, the detection schedule, and the appearance guard that keeps one person per track."""

from __future__ import annotations

import numpy as np
import pytest

from streamproc.stages.config import ShotCutConfig, TrackConfig
from streamproc.stages.guard import AppearanceGuard
from streamproc.stages.schedule import Schedule
from streamproc.stages.track import TrackStage
from streamproc.types import Faces, FrameBatch


def scene(n: int, seed: int, h: int = 72, w: int = 128) -> np.ndarray:
    """``n`` frames of one textured scene, panning right by 2 px a frame (a moving camera)."""
    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 256, (h // 8, (w + 2 * n) // 8 + 1, 3), np.uint8)
    wide = np.kron(wide, np.ones((8, 8, 1), np.uint8))
    base = (wide.astype(np.int16) // 2 + rng.integers(0, 128, 3)).clip(0, 255).astype(np.uint8)
    return np.stack([base[:h, 2 * i : 2 * i + w] for i in range(n)])


def test_a_hard_cut_is_found_and_a_pan_is_not() -> None:
    frames = np.concatenate([scene(6, seed=1), scene(6, seed=2)])
    detected, cuts = Schedule(every_k=4)("cam", frames)
    assert np.flatnonzero(cuts).tolist() == [6]
    assert np.flatnonzero(detected).tolist() == [0, 4, 6, 10]  # the cut frame restarts the count


@pytest.mark.parametrize("grain", [1, 3])
def test_a_1080p_pan_over_pixel_fine_texture_is_no_cut(grain: int) -> None:
    """The thumbnail of a large frame averages a grid of its pixels, not all of them: a texture finer
    than the grid, panning by a pixel a frame, shows the grid other pixels every frame (the case
    where sampling could see change that is not there). Only the real cut is a cut."""
    rng = np.random.default_rng(grain)

    def pan(n: int) -> np.ndarray:
        noise = rng.integers(0, 256, (1080 // grain + 1, (1920 + n) // grain + 1, 3), np.uint8)
        wide = np.kron(noise, np.ones((grain, grain, 1), np.uint8))
        base = (wide.astype(np.int16) // 2 + rng.integers(0, 128, 3)).clip(0, 255).astype(np.uint8)
        return np.stack([base[:1080, i : i + 1920] for i in range(n)])

    _, cuts = Schedule(every_k=100)("cam", np.concatenate([pan(5), pan(5)]))
    assert np.flatnonzero(cuts).tolist() == [5]


@pytest.mark.parametrize(("height", "width"), [(1440, 2560), (1080, 1920), (576, 1024)])
def test_fine_stripes_moving_a_pixel_a_frame_are_no_cut(height: int, width: int) -> None:
    """Red and blue stripes one pixel wide (a striped shirt, a fence, interlacing) moving a pixel a
    frame: a grid that takes single pixels at an even step sees all red, then all blue."""

    def stripes(shift: int) -> np.ndarray:
        frame = np.empty((height, width, 3), np.uint8)
        red = (np.arange(width) + shift) % 2 == 0
        frame[:, red], frame[:, ~red] = (200, 30, 30), (30, 30, 200)
        return frame

    _, cuts = Schedule(every_k=100)("cam", np.stack([stripes(i) for i in range(4)]))
    assert not cuts.any()


def test_schedule_counts_across_batches_and_streams() -> None:
    schedule = Schedule(every_k=3, cuts=ShotCutConfig(enabled=False))
    frames = scene(7, seed=3)
    parts = [schedule("a", frames[:2])[0], schedule("b", frames[:1])[0], schedule("a", frames[2:])[0]]
    assert np.concatenate([parts[0], parts[2]]).tolist() == [True, False, False, True, False, False, True]
    assert parts[1].tolist() == [True]


def unit(*values: float) -> list[float]:
    v = np.array(values, np.float64)
    return (v / np.linalg.norm(v)).tolist()


def faces_of(track: list[int], emb: list[list[float] | None]) -> Faces:
    n = len(track)
    embedding = np.array([e if e is not None else [np.nan] * 3 for e in emb], np.float32)
    return Faces(
        boxes=np.tile([0, 0, 9, 9], (n, 1)),
        scores=np.ones(n),
        frame_index=np.arange(n),
        track_id=track,
        embedding=embedding,
    )


def batch(faces: Faces, closed: list[int] | None = None) -> FrameBatch:
    n = len(faces)
    return FrameBatch(
        "cam", np.zeros((n, 9, 9, 3), np.uint8), np.arange(n) / 25, faces=faces, closed_tracks=closed or []
    )


A, A2, B = unit(1, 0.1, 0), unit(1, 0, 0.1), unit(0, 1, 0)


@pytest.mark.parametrize(
    ("embeddings", "labels", "closed"),
    [
        ([A, A2, A, A2], [3, 3, 3, 3], []),  # one person: nothing happens
        ([A, A2, B, B], [3, 3, 7, 7], [3]),  # the person changed: new id from the third face on
        ([A, None, B, None], [3, 3, 7, 7], [3]),  # faces without embeddings follow their track
        ([A, B, A, B], [3, 7, 8, 9], [3, 7, 8]),  # every change is a new track
    ],
)
def test_guard_splits_a_track_when_the_person_changes(
    embeddings: list[list[float] | None], labels: list[int], closed: list[int]
) -> None:
    guard = AppearanceGuard(1.0, first_new_id=7)
    out = guard(batch(faces_of([3, 3, 3, 3], embeddings)))
    assert out.faces.track_id.tolist() == labels
    assert out.closed_tracks == closed


def test_guard_gives_the_trackers_later_closure_to_the_new_id() -> None:
    guard = AppearanceGuard(1.0, first_new_id=7)
    out = guard(batch(faces_of([3, 3], [A, B]), closed=[3]))
    assert out.closed_tracks == [3, 7]  # the old person's segment, then the tracker's loss of the new one


def test_guard_off_changes_nothing() -> None:
    out = AppearanceGuard(None)(batch(faces_of([3, 3], [A, B])))
    assert out.faces.track_id.tolist() == [3, 3] and out.closed_tracks == []


def test_guard_asks_the_tracker_for_the_new_id_and_the_live_track_takes_it() -> None:
    tracker = TrackStage(TrackConfig())
    first = tracker(
        FrameBatch(
            "cam", np.zeros((1, 9, 9, 3), np.uint8), [0.0], faces=Faces(boxes=[[0, 0, 9, 9]], scores=[1])
        )
    )
    assert first.faces.track_id.tolist() == [0]
    guard = AppearanceGuard(1.0, on_split=tracker.split)
    out = guard(batch(faces_of([0, 0], [A, B])))
    assert out.faces.track_id.tolist() == [0, 1]
    assert [t.track_id for t in tracker.tracks("cam")] == [1]  # the live track goes on as 1
    assert tracker.next_id("cam") == 2


def test_a_split_after_the_tracker_reached_the_end_never_reuses_an_id() -> None:
    """Files run ahead: the tracker may have seen the end of the stream (and reset it) before the
    guard, batches behind, splits a track. The new id must still be one no track of the stream had."""
    tracker = TrackStage(TrackConfig(min_hits=1))
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    two = Faces(boxes=[[0, 0, 20, 20], [40, 40, 60, 60]], scores=[1, 1], frame_index=[0, 0])
    tracker(FrameBatch("cam", frames, [0.0, 0.04], faces=two))
    tracker(FrameBatch("cam", frames[:0], np.zeros(0), end_of_stream=True))
    first, _ = tracker.split("cam", 1)
    second, _ = tracker.split("cam", first)
    assert first not in (0, 1) and second not in (0, 1, first)
    replay = tracker(FrameBatch("cam", frames, [0.0, 0.04], faces=two))  # a replay numbers from 0 again
    assert replay.faces.track_id.tolist() == [0, 1]


def test_tracker_closes_every_track_at_a_cut_even_where_boxes_overlap() -> None:
    tracker = TrackStage(TrackConfig())
    box = Faces(boxes=[[10, 10, 50, 50]], scores=[1])
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    before = tracker(FrameBatch("cam", frames, [0.0], faces=box, detected=[True], cuts=[False]))
    after = tracker(FrameBatch("cam", frames, [0.04], faces=box, detected=[True], cuts=[True]))
    assert before.faces.track_id.tolist() == [0]
    assert after.closed_tracks == [0] and after.faces.track_id.tolist() == [1]


def test_after_the_budget_one_face_in_check_every_is_embedded() -> None:
    from streamproc.stages.config import AggregateConfig

    tracker = TrackStage(TrackConfig(check_every=3), aggregate=AggregateConfig(n_frames=2, min_frames=1))
    needs = []
    for i in range(10):
        out = tracker(
            FrameBatch(
                "cam",
                np.zeros((1, 9, 9, 3), np.uint8),
                [i / 25],
                faces=Faces(boxes=[[0, 0, 9, 9]], scores=[1]),
            )
        )
        needs.append(bool(out.faces.needs_embedding[0]))
    assert needs == [True, True, False, False, True, False, False, True, False, False]
