"""LocalRunner, StreamChain and Pump with stand-in models: scheduling, failures, stop, summaries.

A "detector" that finds the white square of ``moving_pattern`` videos and an "embedder" that maps
every crop to one fixed unit vector keep these tests fast and exact; the real models run in
``tests/integration/pipeline``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from streamproc.config import Config, load_config
from streamproc.detect.base import Detector
from streamproc.errors import ConfigError
from streamproc.gallery.index import GalleryIndex
from streamproc.models.checkpoint import ModelCard
from streamproc.models.embedder import Embedder
from streamproc.runtime.chain import Back, Front, StreamChain
from streamproc.runtime.local import LocalRunner
from streamproc.runtime.pump import LocalPool, Pump
from streamproc.sources.synth import write_pattern_video
from streamproc.types import Crops, Faces

DIM = 4
ADA = np.eye(DIM, dtype=np.float32)[0]


class SquareDetector(Detector):
    """The bounding box of the bright square, if any."""

    def _detect(self, images: list[np.ndarray]) -> list[Faces]:
        out = []
        for image in images:
            ys, xs = np.nonzero(image.min(axis=2) > 230)
            if len(xs) < 20:
                out.append(Faces.empty())
                continue
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            out.append(Faces(boxes=np.array(box, np.float32), scores=np.array([0.99], np.float32)))
        return out


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(ADA).expand(len(x), DIM).clone()


def constant_embedder() -> Embedder:
    card = ModelCard(name="const", version="t1", arch="const", embedding_dim=DIM, input_size=32)
    return Embedder.from_model(Constant(), card)


def ada_index(version: str = "t1") -> GalleryIndex:
    return GalleryIndex.from_arrays(["id-ada"], ["Ada"], ADA[None, :], model_version=version)


def config_for(sources: list[dict[str, Any]], *extra: str) -> Config:
    return load_config(
        None,
        [
            "sources=" + json.dumps(sources),
            "detect.every_k_frames=2",
            "aggregate.min_frames=2",
            "aggregate.n_frames=4",
            "align.image_size=32",
            "gallery.threshold=1.0",  # the constant test model has no calibrated threshold
            "align.mode=crop",  # the square detector finds no landmarks
            *extra,
        ],
    )


def runner(config: Config, **kwargs: Any) -> LocalRunner:
    kwargs.setdefault("index", ada_index())
    return LocalRunner(config, detector=SquareDetector(), embedder=constant_embedder(), **kwargs)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "a": write_pattern_video(root / "a.mp4", n_frames=20),
        "b": write_pattern_video(root / "b.mp4", n_frames=12),
    }


def test_two_files_interleaved_each_decided(videos: dict[str, Path]) -> None:
    summary = runner(config_for([{"uri": str(videos["a"])}, {"uri": str(videos["b"])}])).run()
    assert summary.ok and summary.runner == "local"
    assert {sid: s.frames for sid, s in summary.streams.items()} == {"a": 20, "b": 12}
    assert summary.frames == 32
    for sid in ("a", "b"):
        mine = [d for d in summary.decisions if d.stream_id == sid]
        assert [(d.track_id, d.revision, d.identity) for d in mine] == [(0, 0, "Ada")]  # revision 1 agreed
        assert mine[0].gallery_version == "t1" and mine[0].distance == pytest.approx(0.0, abs=1e-6)
        assert summary.streams[sid].tracks == 1 and summary.streams[sid].decisions == 1


def test_a_failing_source_is_closed_alone(videos: dict[str, Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x13garbage" * 500)
    sources = [{"uri": str(videos["a"])}, {"uri": str(garbage)}, {"uri": str(tmp_path / "missing.mp4")}]
    summary = runner(config_for(sources)).run()
    assert sorted(summary.failed) == ["garbage", "missing"]
    assert "DecodeError" in str(summary.streams["garbage"].error)
    assert "does not exist" in str(summary.streams["missing"].error)
    assert summary.streams["a"].error is None and summary.streams["a"].decisions == 1


def test_stop_before_the_end_still_decides_open_tracks(videos: dict[str, Path]) -> None:
    summary = runner(config_for([{"uri": str(videos["a"]), "batch_frames": 4}])).run(duration_s=0)
    assert summary.ok
    assert summary.streams["a"].frames == 0 and summary.decisions == []
    r = runner(config_for([{"uri": str(videos["a"]), "batch_frames": 4}]))
    r.stop()
    assert r.run().frames == 0


def test_other_model_version_gallery_is_refused(videos: dict[str, Path]) -> None:
    from streamproc.errors import IncompatibleModels

    with pytest.raises(IncompatibleModels):
        runner(config_for([{"uri": str(videos["a"])}]), index=ada_index("t2")).run()


@pytest.mark.parametrize(
    ("sources", "message"),
    [([], "no sources"), ([{"uri": "x/a.mp4"}, {"uri": "y/a.mp4"}], "stream id 'a'")],
)
def test_sources_are_checked_before_anything_starts(sources: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LocalRunner(config_for(sources))  # no model is built: the check comes first


def front(chain: StreamChain, detector: Detector) -> tuple[Front, Crops]:
    """The next batch read, detected and tracked."""
    seq, images = chain.read()
    return chain.track(seq, detector(list(images)) if len(images) else [])


def test_chain_read_after_the_last_batch_reports_nothing(videos: dict[str, Path]) -> None:
    config = config_for([{"uri": str(videos["b"]), "batch_frames": 8}])
    chain = StreamChain(config.sources[0], config, "t1", DIM)
    fronts = []
    while not chain.finished:
        f, crops = front(chain, SquareDetector())
        assert len(crops) == f.crops
        fronts.append(f)
    extra, images = chain.read()
    assert [f.frames for f in fronts] == [8, 4]
    assert extra == -1 and len(images) == 0
    with pytest.raises(RuntimeError, match="out of order"):
        chain.back(1, np.zeros((fronts[1].crops, DIM), np.float32))
    backs = [chain.back(f.seq, np.tile(ADA, (f.crops, 1))) for f in fronts]
    assert backs[-1].end_of_stream and backs[-1].closed_tracks == [0]
    assert [(d.revision, d.n_frames) for b in backs for d in b.decisions] == [(0, 4)]  # full at once


def test_chain_read_ahead_of_tracking_decides_as_one_batch_at_a_time(videos: dict[str, Path]) -> None:
    config = config_for([{"uri": str(videos["a"]), "batch_frames": 6}])
    detector = SquareDetector()

    def decided(chain: StreamChain, fronts: list[Front]) -> list[tuple[int, int, int]]:
        backs = [chain.back(f.seq, np.tile(ADA, (f.crops, 1))) for f in fronts]
        return [(d.track_id, d.revision, d.n_frames) for b in backs for d in b.decisions]

    ahead = StreamChain(config.sources[0], config, "t1", DIM)
    reads = []
    while not ahead.reading_done:  # read everything before tracking, as a deep pump may
        reads.append(ahead.read())
    assert [(seq, len(images)) for seq, images in reads] == [(0, 3), (1, 3), (2, 3), (3, 1)]
    ahead_fronts = [ahead.track(seq, detector(list(images)))[0] for seq, images in reads]

    one = StreamChain(config.sources[0], config, "t1", DIM)
    one_fronts = []
    while not one.finished:
        one_fronts.append(front(one, detector)[0])

    assert decided(ahead, ahead_fronts) == decided(one, one_fronts) == [(0, 0, 3), (0, 1, 4)]


class FlakyDetections:
    """A detector pool whose ``fail_at``-th call fails, as a GPU out of memory would."""

    version = ""

    def __init__(self, fail_at: int):
        self.fail_at, self.calls = fail_at, 0

    def submit(self, images: np.ndarray) -> tuple[int, np.ndarray]:
        self.calls += 1
        return self.calls, images

    def ready(self, handle: Any) -> bool:
        return False  # as a remote pool's answer: not there before it is asked for

    def result(self, handle: tuple[int, np.ndarray]) -> list[Faces]:
        if handle[0] == self.fail_at:
            raise RuntimeError("CUDA out of memory")
        return SquareDetector()(list(handle[1]))


def test_a_failing_detector_call_ends_its_stream_with_the_open_track_decided(videos: dict[str, Path]) -> None:
    config = config_for([{"uri": str(videos["a"]), "batch_frames": 4}])
    chain = StreamChain(config.sources[0], config, "t1", DIM)
    pump = Pump(chain, LocalPool(constant_embedder(), "t1"), FlakyDetections(fail_at=2), depth=3)
    records = []
    while not pump.done:
        records += pump.step()
    fronts = [r for r in records if isinstance(r, Front)]
    backs = [r for r in records if isinstance(r, Back)]
    assert [f.error for f in fronts if f.error] == ["RuntimeError: CUDA out of memory"]
    assert fronts[-1].seq == -1, "the batch read after the failed one was dropped"
    assert sum(f.frames for f in fronts) == 4 and backs[-1].end_of_stream
    assert [(d.track_id, d.n_frames) for b in backs for d in b.decisions] == [(0, 2)], "decided at close"
    chain.close()


def test_metrics_are_recorded(videos: dict[str, Path]) -> None:
    from streamproc.metrics import PrometheusRecorder

    recorder = PrometheusRecorder()
    summary = runner(config_for([{"uri": str(videos["a"])}]), recorder=recorder).run()
    assert recorder.value("frames_decoded_total", stream="a") == summary.streams["a"].frames == 20
    assert recorder.value("faces_detected_total", stream="a") == summary.streams["a"].faces == 10
    assert recorder.value("tracks_closed_total", stream="a") == 1
    assert (
        recorder.value("decisions_total", stream="a", known="true", kind="decision", model_version="t1") == 1
    )
    # the first n_frames=4 faces, then every one of the 6 after them for the appearance check
    assert recorder.value("faces_embedded_total", stream="a", model_version="t1") == 10
    assert recorder.value("stage_seconds", stage="detect", stream="a") == 3  # one observation per batch
    assert recorder.value("match_distance") == 1  # the first batch filled the window: one decision


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "no sources"),
        (["run", "--source", "a.mp4", "--set", "runtime.embedders=0"], "runtime.embedders"),
        (["run", "--source", "x/a.mp4", "--source", "y/a.mp4"], "stream id 'a'"),
    ],
)
def test_cli_run_refuses_a_bad_config_before_starting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamproc.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("live", "restarted_id"), [(False, 0), (True, 1)])
def test_a_restarted_chain_numbers_live_tracks_on(
    videos: dict[str, Path], live: bool, restarted_id: int
) -> None:
    """After a stream actor's restart the driver passes the next unused track id: a file starts over
    with the same ids (its repeats keep their event ids), a live source's new faces get new ones."""
    config = config_for([{"uri": str(videos["b"]), "batch_frames": 6, "live": live, "max_reconnects": 0}])
    ids = []
    for resume_at in (0, 1):
        chain = StreamChain(config.sources[0], config, "t1", DIM)
        chain.resume(resume_at)
        decided: list[int] = []
        while not decided and not chain.finished:  # a live source hands out what has arrived
            f, _ = front(chain, SquareDetector())
            back = chain.back(f.seq, np.tile(ADA, (f.crops, 1)))
            decided = [d.track_id for d in back.decisions]
        chain.close()
        ids.append(decided)
    assert ids == [[0], [restarted_id]]


def test_a_bug_in_a_stage_ends_the_run_with_its_own_exception(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamproc.stages.track import TrackStage

    def divide(self: TrackStage, batch: Any) -> Any:
        return 1 / 0

    monkeypatch.setattr(TrackStage, "process", divide)
    with pytest.raises(ZeroDivisionError) as info:  # not a stream closed with a one-line warning
        runner(config_for([{"uri": str(videos["a"])}])).run()
    assert "stage=track stream=a" in info.value.__notes__[0]
