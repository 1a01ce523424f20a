"""The tracker on hand-placed boxes: stable ids, motion, fast faces, closure, embedding budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from streamproc.stages.config import AggregateConfig, DetectStageConfig, TrackConfig
from streamproc.stages.track import TrackStage, centre_gap, iou_matrix
from streamproc.types import Faces, FrameBatch

Box = tuple[float, float, float, float]
Script = Sequence[Sequence[Box]]  # per frame, the boxes the detector found there


def square(x: float, y: float = 100.0, side: float = 80.0) -> Box:
    return (x, y, x + side, y + side)


def make_faces(script: Script, quality: Sequence[Sequence[float]] | None = None) -> Faces:
    boxes = [box for frame in script for box in frame]
    frame_index = [i for i, frame in enumerate(script) for _ in frame]
    q = None if quality is None else [v for frame in quality for v in frame]
    return Faces(
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        scores=np.ones(len(boxes), np.float32),
        frame_index=np.array(frame_index, np.int32),
        quality=None if q is None else np.array(q, np.float32),
    )


def make_batch(
    script: Script,
    *,
    first_frame: int = 0,
    fps: float = 25.0,
    stream: str = "cam",
    eos: bool = False,
    quality: Sequence[Sequence[float]] | None = None,
) -> FrameBatch:
    pts = (first_frame + np.arange(len(script))) / fps
    frames = np.zeros((len(script), 4, 4, 3), np.uint8)
    return FrameBatch(stream, frames, pts, faces=make_faces(script, quality), end_of_stream=eos)


@dataclass
class Run:
    ids: list[list[int]]  # per frame, the track id of each face (in detection order)
    needs: list[list[bool]]
    closed_at: dict[int, int]  # track id -> frame of the batch that closed it (its last frame)


def run(
    tracker: TrackStage,
    script: Script,
    *,
    batch_size: int = 1,
    fps: float = 25.0,
    stream: str = "cam",
    eos: bool = False,
    quality: Sequence[Sequence[float]] | None = None,
) -> Run:
    result = Run([], [], {})
    for start in range(0, len(script), batch_size):
        part = script[start : start + batch_size]
        q = None if quality is None else quality[start : start + batch_size]
        last = start + len(part) >= len(script)
        out = tracker(
            make_batch(part, first_frame=start, fps=fps, stream=stream, eos=eos and last, quality=q)
        )
        for i in range(len(part)):
            here = out.faces.frame_index == i
            result.ids.append(out.faces.track_id[here].tolist())
            result.needs.append(out.faces.needs_embedding[here].tolist())
        for tid in out.closed_tracks:
            assert tid not in result.closed_at, f"track {tid} closed twice"
            result.closed_at[tid] = start + len(part) - 1
    return result


def moving(n_frames: int, every_k: int, step: float, missing: Sequence[int] = ()) -> list[list[Box]]:
    """One face moving right ``step`` px a frame, detected on pass frames except the passes in ``missing``."""
    script: list[list[Box]] = []
    for f in range(n_frames):
        seen = f % every_k == 0 and f // every_k not in missing
        script.append([square(10 + step * f)] if seen else [])
    return script


def test_iou_matrix_matches_hand_computed_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0], [0, 0]])
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


@pytest.mark.parametrize(
    ("missing", "max_missed", "ids", "closed"),
    [
        ((), 2, {0}, {}),
        ((3, 4), 2, {0}, {}),  # two passes without the face: the track coasts on its velocity
        ((3, 4, 5), 2, {0, 1}, {0: 25}),  # the third miss closes it; the face comes back as a new track
        ((3,), 0, {0, 1}, {0: 15}),
    ],
)
def test_ids_survive_missed_passes(missing: tuple[int, ...], max_missed: int, ids: set, closed: dict) -> None:
    tracker = TrackStage(
        TrackConfig(max_missed=max_missed, max_gap_s=10), detect=DetectStageConfig(every_k_frames=5)
    )
    result = run(tracker, moving(40, every_k=5, step=4.0, missing=missing))
    assert {i for frame in result.ids for i in frame} == ids
    assert result.closed_at == closed
    last_pass = [frame for frame in result.ids if frame][-1]
    assert last_pass == [max(ids)]


def test_between_passes_nothing_is_matched_or_missed() -> None:
    tracker = TrackStage(TrackConfig(max_missed=0), detect=DetectStageConfig(every_k_frames=10))
    result = run(tracker, moving(31, every_k=10, step=2.0), batch_size=4)
    assert [frame for frame in result.ids if frame] == [[0], [0], [0], [0]]
    assert result.closed_at == {}
    (track,) = tracker.tracks("cam")
    assert (track.first_pts, track.last_pts, track.hits, track.missed) == (0.0, 1.2, 4, 0)


def test_centre_gap_is_in_sizes_of_the_first_box() -> None:
    a = np.array([[0, 0, 10, 10], [-5, -5, 15, 15]], float)  # same centre, twice the size
    b = np.array([[0, 0, 10, 10], [30, 40, 40, 50]], float)
    np.testing.assert_allclose(centre_gap(a, b), [[0, 5], [0, 2.5]])
    assert centre_gap(a, np.zeros((0, 4))).shape == (2, 0)


def centred(cx: float, side: float) -> Box:
    return (cx - side / 2, 100.0, cx + side / 2, 100.0 + side)


@pytest.mark.parametrize(
    ("max_face_speed", "before", "after", "ids"),
    [
        (3.0, square(10), square(90), {0}),  # 1 face size in 0.4 s: 2.5 a second, no overlap
        (None, square(10), square(90), {0, 1}),  # IoU only: a new track
        (3.0, square(10), square(120), {0, 1}),  # 1.375 face sizes in 0.4 s: 3.4 a second
        (4.0, square(10), square(120), {0}),
        (3.0, centred(100, 60), centred(100, 114), {0}),  # same place, 1.9x the size, IoU 0.28
        (3.0, centred(100, 60), centred(100, 130), {0, 1}),  # 2.2x the size: another face
        (3.0, centred(100, 130), centred(100, 60), {0, 1}),
    ],
)
def test_centre_round_pairs_what_iou_missed(
    max_face_speed: float | None, before: Box, after: Box, ids: set[int]
) -> None:
    tracker = TrackStage(
        TrackConfig(max_face_speed=max_face_speed), detect=DetectStageConfig(every_k_frames=10)
    )
    result = run(tracker, [[before], *[[]] * 9, [after]])
    assert iou_matrix(np.array([before]), np.array([after]))[0, 0] < TrackConfig().iou_threshold
    assert {i for frame in result.ids for i in frame} == ids


@pytest.mark.parametrize(("max_face_speed", "ids"), [(3.0, {0}), (None, {0, 1, 2, 3, 4, 5})])
def test_a_fast_face_keeps_its_id_across_sparse_passes(max_face_speed: float | None, ids: set[int]) -> None:
    tracker = TrackStage(
        TrackConfig(max_face_speed=max_face_speed), detect=DetectStageConfig(every_k_frames=10)
    )
    result = run(tracker, moving(60, every_k=10, step=8.0), batch_size=7)  # 80 px a pass, the face's width
    assert {i for frame in result.ids for i in frame} == ids


def test_the_speed_limit_grows_with_the_time_since_the_last_match() -> None:
    tracker = TrackStage(TrackConfig(), detect=DetectStageConfig(every_k_frames=10))
    result = run(tracker, moving(31, every_k=10, step=9.0, missing=(1, 2)))  # 3.4 face sizes in 1.2 s
    assert [frame for frame in result.ids if frame] == [[0], [0]]


def crossing(n_passes: int, every_k: int) -> list[list[Box]]:
    """A moves right, B moves left, 20 px a pass; between passes 4 and 5 they swap places."""
    script: list[list[Box]] = []
    for f in range(n_passes * every_k):
        p = f / every_k
        script.append([square(10 + 20 * p), square(190 - 20 * p)] if f % every_k == 0 else [])
    return script


def test_crossing_faces_keep_their_ids() -> None:
    tracker = TrackStage(TrackConfig(), detect=DetectStageConfig(every_k_frames=5))
    script = crossing(n_passes=9, every_k=5)
    result = run(tracker, script, batch_size=6)
    passes = [frame for frame in result.ids if frame]
    assert passes == [[0, 1]] * 9  # detection order is A, B on every pass
    # Without motion the last boxes would swap: at pass 5 A's last box equals B's new one.
    last_a, new_b = np.array([square(90)]), np.array([square(90)])
    assert iou_matrix(last_a, new_b)[0, 0] == 1.0
    a, b = sorted(tracker.tracks("cam"), key=lambda t: t.track_id)
    assert a.box[0] > b.box[0]


@pytest.mark.parametrize(
    ("max_missed", "max_gap_s", "every_k", "closed_frame"),
    [
        (2, 10.0, 1, 5),  # seen on frames 0-2; misses on 3, 4, 5: the third closes it
        (0, 10.0, 1, 3),
        (100, 0.15, 1, 4),  # pts 0.4 - 0.2 > 0.15
        (1, 10.0, 3, 9),  # passes at 0, 3 | misses at 6, 9; frames in between do not count
    ],
)
def test_closure(max_missed: int, max_gap_s: float, every_k: int, closed_frame: int) -> None:
    tracker = TrackStage(
        TrackConfig(max_missed=max_missed, max_gap_s=max_gap_s),
        detect=DetectStageConfig(every_k_frames=every_k),
    )
    seen_until = 3 if every_k == 1 else 4
    script = [[square(50)] if f < seen_until and f % every_k == 0 else [] for f in range(12)]
    result = run(tracker, script, fps=10)
    assert result.closed_at == {0: closed_frame}
    assert tracker.tracks("cam") == []


def test_end_of_stream_closes_everything_and_resets() -> None:
    tracker = TrackStage(TrackConfig(), detect=DetectStageConfig(every_k_frames=2))
    script = [[square(0), square(200)], [], [square(2), square(202), square(400)], []]
    first = run(tracker, script, batch_size=3, eos=True)
    assert first.closed_at == {0: 3, 1: 3, 2: 3}
    assert tracker.tracks("cam") == []
    again = run(tracker, script, batch_size=3, eos=True)
    assert again.ids == first.ids  # a replay gets the same ids


def test_streams_are_independent() -> None:
    tracker = TrackStage(TrackConfig(max_missed=0), detect=DetectStageConfig(every_k_frames=1))
    run(tracker, [[square(0)], [square(1)]], stream="a")
    b = run(tracker, [[square(300)], []], stream="b")
    assert b.ids == [[0], []] and b.closed_at == {0: 1}
    assert [t.track_id for t in tracker.tracks("a")] == [0]


@pytest.mark.parametrize(
    ("n_frames", "recheck", "min_quality", "quality", "needs"),
    [
        (3, False, 0.0, [1.0] * 5, [True, True, True, False, False]),
        (3, True, 0.0, [1.0] * 5, [True] * 5),
        (3, False, 0.5, [0.9, 0.2, 0.9, 0.9, 0.9], [True, False, True, True, False]),
    ],
)
def test_needs_embedding_budget(
    n_frames: int, recheck: bool, min_quality: float, quality: list[float], needs: list[bool]
) -> None:
    aggregate = AggregateConfig(n_frames=n_frames, min_frames=1, recheck=recheck, min_quality=min_quality)
    # past the budget one face in 5 is checked: none of the 2 after it here (the default checks every face)
    tracker = TrackStage(
        TrackConfig(check_every=5), detect=DetectStageConfig(every_k_frames=1), aggregate=aggregate
    )
    script = [[square(10 + f)] for f in range(5)]
    result = run(tracker, script, batch_size=2, quality=[[q] for q in quality])
    assert [frame[0] for frame in result.needs] == needs
    assert tracker.tracks("cam")[0].embedded == sum(needs)


def test_min_hits_keeps_one_off_detections_anonymous() -> None:
    tracker = TrackStage(TrackConfig(min_hits=2, max_missed=0), detect=DetectStageConfig(every_k_frames=1))
    script = [[square(0), square(300)], [square(2)], [square(4)], [], [square(600)], []]
    result = run(tracker, script)
    assert result.ids == [[-1, -1], [0], [0], [], [-1], []]
    assert result.needs[0] == [False, False] and result.needs[1] == [True]
    assert result.closed_at == {0: 3}  # the spurious ones never had an id, so are never "closed"


@pytest.mark.parametrize("batch_size", [1, 3, 8, 40])
def test_batching_does_not_change_the_result(batch_size: int) -> None:
    config = TrackConfig(max_missed=1, max_gap_s=10)
    reference = run(
        TrackStage(config, detect=DetectStageConfig(every_k_frames=4)),
        moving(40, every_k=4, step=3.0, missing=(3, 4, 5)),
    )
    tracker = TrackStage(config, detect=DetectStageConfig(every_k_frames=4))
    result = run(tracker, moving(40, every_k=4, step=3.0, missing=(3, 4, 5)), batch_size=batch_size)
    assert result.ids == reference.ids
    assert set(result.closed_at) == set(reference.closed_at) == {0}
