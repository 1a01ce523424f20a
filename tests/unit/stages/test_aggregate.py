"""Per-track aggregation: mean of the first N unit embeddings, revisions, exactly once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from streamproc.stages.aggregate import AggregateStage
from streamproc.stages.config import AggregateConfig
from streamproc.stages.emit import MemorySink
from streamproc.types import Decision, Faces, FrameBatch

DIM = 8


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def normalised(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def make_faces(
    track_ids: Sequence[int],
    embeddings: np.ndarray,
    *,
    quality: Sequence[float] | None = None,
    frame_index: Sequence[int] | None = None,
) -> Faces:
    n = len(track_ids)
    return Faces(
        boxes=np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1)),
        scores=np.ones(n, np.float32),
        track_id=np.array(track_ids, np.int64),
        embedding=np.asarray(embeddings, np.float32).reshape(n, DIM),
        quality=None if quality is None else np.array(quality, np.float32),
        frame_index=np.arange(n) if frame_index is None else np.array(frame_index),
    )


def make_batch(
    faces: Faces,
    *,
    first_pts: float = 0.0,
    closed: Sequence[int] = (),
    eos: bool = False,
    model_version: str = "v1",
    stream: str = "cam",
) -> FrameBatch:
    n = max(int(faces.frame_index.max()) + 1, 1) if len(faces) else 1  # type: ignore[union-attr]
    pts = first_pts + np.arange(n) * 0.04
    frames = np.zeros((n, 4, 4, 3), np.uint8)
    return FrameBatch(
        stream,
        frames,
        pts,
        faces=faces,
        end_of_stream=eos,
        model_version=model_version,
        closed_tracks=list(closed),
    )


def feed_one_track(
    stage: AggregateStage, embeddings: np.ndarray, *, batch_size: int, close: bool, tid: int = 0
) -> list[Decision]:
    """Faces of one track, ``batch_size`` per batch (one per frame), then a batch that closes it."""
    out: list[Decision] = []
    for start in range(0, len(embeddings), batch_size):
        part = embeddings[start : start + batch_size]
        batch = make_batch(make_faces([tid] * len(part), part), first_pts=start * 0.04)
        out += stage(batch).decisions
    if close:
        out += stage(make_batch(Faces.empty(), closed=[tid], first_pts=len(embeddings) * 0.04)).decisions
    return out


def test_aggregate_is_the_renormalised_mean_of_the_first_n() -> None:
    emb = unit_rows(8)
    stage = AggregateStage(AggregateConfig(n_frames=5, min_frames=2))
    decisions = feed_one_track(stage, emb, batch_size=1, close=True)
    assert [(d.revision, d.n_frames) for d in decisions] == [(0, 2), (1, 5)]
    np.testing.assert_allclose(decisions[0].embedding, normalised(emb[:2].sum(0)), atol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(decisions[1].embedding, normalised(emb[:5].sum(0)), atol=1e-6)  # type: ignore[arg-type]
    for d in decisions:
        assert d.identity is None and np.isnan(d.distance) and d.gallery_version == ""
        assert d.model_version == "v1" and d.stream_id == "cam" and d.track_id == 0
        assert d.embedding is not None and d.embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(d.embedding)) - 1) < 1e-6
    assert decisions[1].first_pts == 0.0 and decisions[1].last_pts == pytest.approx(4 * 0.04)


@pytest.mark.parametrize(
    ("weighted", "quality", "weights"),
    [
        (False, [0.9, 0.1, 0.5], [1, 1, 1]),
        (True, [0.9, 0.1, 0.5], [0.9, 0.1, 0.5]),
        (True, [0.9, 0.0, 0.5], [0.9, 0, 0.5]),  # quality 0 is no view at all
    ],
)
def test_quality_weighting(weighted: bool, quality: list[float], weights: list[float]) -> None:
    emb = unit_rows(3, seed=1)
    stage = AggregateStage(AggregateConfig(n_frames=3, min_frames=1, quality_weighted=weighted))
    out = stage(make_batch(make_faces([0, 0, 0], emb, quality=quality), closed=[0])).decisions
    (d,) = out
    expected = normalised((np.array(weights)[:, None] * emb).sum(0))
    np.testing.assert_allclose(d.embedding, expected, atol=1e-6)  # type: ignore[arg-type]
    assert d.n_frames == sum(w > 0 for w in weights)


@pytest.mark.parametrize(
    ("n_faces", "batch_size", "close", "revisions"),
    [
        (3, 1, True, [(0, 3)]),  # too short for revision 0: decided at close with what it has
        (3, 1, False, []),  # too short and still open: nothing yet
        (5, 1, True, [(0, 5)]),  # closing adds nothing new
        (7, 1, True, [(0, 5), (1, 7)]),  # closing with more faces than revision 0 had
        (7, 1, False, [(0, 5)]),
        (12, 1, False, [(0, 5), (1, 10)]),  # n_frames reached: final without closing
        (12, 12, True, [(0, 10)]),  # one batch fills the window: revision 1 would repeat revision 0
        (12, 4, True, [(0, 8), (1, 10)]),  # revision 0 aggregates all faces of its batch
    ],
)
def test_revisions(n_faces: int, batch_size: int, close: bool, revisions: list[tuple[int, int]]) -> None:
    stage = AggregateStage(AggregateConfig(n_frames=10, min_frames=5))
    decisions = feed_one_track(stage, unit_rows(n_faces), batch_size=batch_size, close=close)
    assert [(d.revision, d.n_frames) for d in decisions] == revisions


@pytest.mark.parametrize(("decide_short", "revisions"), [(True, [(0, 1)]), (False, [])])
def test_a_one_face_appearance_is_decided_at_close_unless_turned_off(
    decide_short: bool, revisions: list[tuple[int, int]]
) -> None:
    stage = AggregateStage(AggregateConfig(n_frames=10, min_frames=5, decide_short=decide_short))
    decisions = feed_one_track(stage, unit_rows(1), batch_size=1, close=True)
    assert [(d.revision, d.n_frames) for d in decisions] == revisions
    assert [d.kind for d in decisions] == ["decision", "update"][: len(revisions)]


def test_unusable_faces_are_skipped_but_widen_the_time_span() -> None:
    emb = unit_rows(4, seed=2)
    emb[1] = np.nan  # the tracker did not ask for this one
    stage = AggregateStage(AggregateConfig(n_frames=10, min_frames=2, min_quality=0.3, decide_short=False))
    faces = make_faces([0, 0, -1, 0], emb, quality=[0.9, 0.9, 0.9, 0.2])
    decisions = stage(make_batch(faces, closed=[0])).decisions
    assert decisions == []  # one usable face only
    faces = make_faces([5, 5, 5, 5], emb, quality=[0.9, 0.9, 0.9, 0.9])
    (d,) = stage(make_batch(faces, first_pts=1.0, closed=[5])).decisions
    assert d.n_frames == 3 and d.first_pts == 1.0 and d.last_pts == pytest.approx(1.12)


def test_recheck_yields_a_revision_per_window() -> None:
    emb = unit_rows(8, seed=3)
    stage = AggregateStage(AggregateConfig(n_frames=3, min_frames=2, recheck=True))
    decisions = feed_one_track(stage, emb, batch_size=1, close=True)
    assert [(d.revision, d.n_frames) for d in decisions] == [(0, 2), (1, 3), (2, 3), (3, 2)]
    np.testing.assert_allclose(decisions[2].embedding, normalised(emb[3:6].sum(0)), atol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(decisions[3].embedding, normalised(emb[6:8].sum(0)), atol=1e-6)  # type: ignore[arg-type]


def keys(decisions: Sequence[Decision]) -> list[tuple[str, int, str, int]]:
    return [(d.stream_id, d.track_id, d.model_version, d.revision) for d in decisions]


def test_each_revision_once_at_the_sink() -> None:
    """After a rollback a track yields ``(v1, 0)`` again: the same event id, which the sink drops
    (the aggregate stage keeps no record of what went out)."""
    emb = unit_rows(36, seed=4)
    stage = AggregateStage(AggregateConfig(n_frames=4, min_frames=2))
    out: list[Decision] = []
    for i, version in enumerate(["v1"] * 6 + ["v2"] * 6 + ["v1"] * 6):  # an upgrade, then a rollback
        faces = make_faces([0, 1], emb[2 * i : 2 * i + 2], frame_index=[0, 0])
        out += stage(make_batch(faces, model_version=version, first_pts=i * 0.04)).decisions
    out += stage(make_batch(Faces.empty(), closed=[0, 1, 0])).decisions  # a repeated closure
    out += stage(make_batch(make_faces([0], emb[:1]), closed=[0])).decisions  # a closed track's late face
    out += stage(make_batch(Faces.empty(), eos=True)).decisions
    written = MemorySink().write(out)
    assert len(keys(written)) == len(set(keys(written))) < len(out)
    assert sorted(keys(written)) == [("cam", t, v, r) for t in (0, 1) for v in ("v1", "v2") for r in (0, 1)]


def test_end_of_stream_closes_tracks_and_a_replay_repeats_the_decisions() -> None:
    emb = unit_rows(6, seed=5)

    def replay(stage: AggregateStage) -> list[Decision]:
        first = stage(
            make_batch(make_faces([0, 0, 0, 1, 1, 1], emb, frame_index=[0, 1, 2, 0, 1, 2]))
        ).decisions
        return first + stage(make_batch(Faces.empty(), eos=True)).decisions

    stage = AggregateStage(AggregateConfig(n_frames=5, min_frames=3))
    once = replay(stage)
    assert [(d.track_id, d.revision, d.n_frames) for d in once] == [(0, 0, 3), (1, 0, 3)]
    assert [d.event_id for d in replay(stage)] == [d.event_id for d in once]  # sinks drop the repeats


def test_streams_do_not_mix() -> None:
    emb = unit_rows(4, seed=6)
    stage = AggregateStage(AggregateConfig(n_frames=4, min_frames=2))
    assert stage(make_batch(make_faces([0], emb[:1]), stream="a")).decisions == []
    assert stage(make_batch(make_faces([0], emb[1:2]), stream="b")).decisions == []
    out = stage(make_batch(make_faces([0], emb[2:3]), stream="a")).decisions
    assert [(x.stream_id, x.n_frames) for x in out] == [("a", 2)]
    np.testing.assert_allclose(out[0].embedding, normalised(emb[0] + emb[2]), atol=1e-6)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_frames": 5, "min_frames": 10}, r"min_frames \(10\) must not exceed n_frames \(5\)"),
        ({"n_frames": 0}, "greater than or equal to 1"),
        ({"window": 3}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AggregateConfig(**kwargs)
