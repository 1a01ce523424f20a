"""Scenes: the ground truth says where each face was pasted, cuts fall where asked, files decode."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from streamproc import scenes
from streamproc.config import load_config
from streamproc.detect import build_detector
from streamproc.faces import read_image
from streamproc.scenes import Appearance, GroundTruth, Photo, Shot
from streamproc.stages.track import iou_matrix

MAGENTA = (255, 0, 255)


CYAN = (0, 255, 255)


def marked_photo(person: str = "m", colour: tuple[int, int, int] = MAGENTA) -> Photo:
    """A grey 250x250 photo whose face box is one pure colour: the pasted box is easy to find."""
    image = np.full((250, 250, 3), 90, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in scenes.LFW_FACE_BOX)
    image[y1:y2, x1:x2] = colour
    return Photo(person, image)


def magenta(frame: np.ndarray, colour: tuple[int, int, int] = MAGENTA) -> np.ndarray:
    """Where ``frame`` shows ``colour`` (magenta by default)."""
    return np.all(np.abs(frame.astype(int) - colour) < 60, axis=-1)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def rendered(shots: list[Shot], fps: float = 10.0, **kw: object) -> tuple[list[np.ndarray], GroundTruth]:
    truth = GroundTruth(fps, (640, 360))
    images = list(scenes.frames(shots, fps=fps, noise=0.0, truth=truth, **kw))  # type: ignore[arg-type]
    return images, truth


@pytest.mark.parametrize(
    ("zoom", "pan"), [(1.0, (0.0, 0.0)), (1.2, (30.0, -10.0))], ids=["still", "zoom+pan"]
)
def test_truth_box_is_where_the_face_box_was_pasted(zoom: float, pan: tuple[float, float]) -> None:
    photo = marked_photo()
    shot = Shot(
        1.0,
        [Appearance(photo, 0.0, 1.0, scenes.box_at(200, 180, 80), scenes.box_at(420, 160, 120))],
        zoom=zoom,
        pan=pan,
    )
    images, truth = rendered([shot])
    assert len(images) == truth.n_frames == 10
    for image, faces in zip(images, truth.faces, strict=True):
        (face,) = faces
        found = box_of(magenta(image))
        assert np.allclose(found, face.box, atol=2.5), (found, face.box)
        assert face.visible == pytest.approx(1.0)


def test_same_place_cut_puts_the_next_person_on_the_same_box_at_the_cut() -> None:
    a, b = marked_photo("a"), marked_photo("b")
    images, truth = rendered(scenes.same_place_cut(a, b, seconds=(1.0, 1.5)))
    assert truth.n_frames == 25
    assert truth.cuts == [10]
    assert [(x.person, x.shot, x.first_frame, x.last_frame) for x in truth.appearances] == [
        ("a", 0, 0, 9),
        ("b", 1, 10, 24),
    ]
    (before,), (after,) = truth.faces[9], truth.faces[10]
    assert (before.person, after.person) == ("a", "b")
    assert np.allclose(before.box, after.box, atol=1.0)
    change = [np.abs(images[i + 1].astype(int) - images[i]).mean() for i in range(len(images) - 1)]
    assert int(np.argmax(change)) == 9  # the backdrop changes at the cut and only there
    assert sorted(change)[-2] < change[9] / 5


def test_same_background_cut_keeps_the_backdrop() -> None:
    images, truth = rendered(
        scenes.same_place_cut(marked_photo("a"), marked_photo("b"), same_background=True)
    )
    assert truth.cuts == [20]
    outside = np.ones(images[0].shape[:2], bool)
    outside[:, 200:440] = False  # away from the face
    assert np.abs(images[20].astype(int) - images[19])[outside].mean() < 1.0


def test_crossing_faces_overlap_mid_way_and_the_one_behind_is_hidden() -> None:
    images, truth = rendered(scenes.crossing(marked_photo("a"), marked_photo("b", CYAN), seconds=2.1))
    ious = [scenes_iou(f[0].box, f[1].box) for f in truth.faces]
    assert ious[0] == 0.0 and max(ious) > 0.7  # 21 frames: frame 10 is the middle
    middle = int(np.argmax(ious))
    a, b = truth.faces[middle]
    assert (a.person, b.person) == ("a", "b")
    assert a.visible < 0.5 and b.visible == pytest.approx(1.0)
    shown_a = magenta(images[middle]).sum() / ((a.box[2] - a.box[0]) * (a.box[3] - a.box[1]))
    assert shown_a == pytest.approx(a.visible, abs=0.1)  # b is painted over a
    assert np.allclose(box_of(magenta(images[middle], CYAN)), b.box, atol=2.5)


def scenes_iou(p: scenes.Box, q: scenes.Box) -> float:
    return float(iou_matrix(np.array(p), np.array(q))[0, 0])


def test_short_appearance_shows_for_the_given_time_only() -> None:
    images, truth = rendered(scenes.short_appearance(marked_photo(), 0.5), fps=20.0)
    assert truth.n_frames == 30
    (shown,) = truth.appearances
    assert (shown.first_frame, shown.last_frame) == (10, 19)
    assert [len(f) for f in truth.faces] == [0] * 10 + [1] * 10 + [0] * 10
    assert not magenta(images[9]).any() and magenta(images[10]).any()


def test_render_writes_a_video_that_decodes_to_every_frame(tmp_path: Path) -> None:
    shots = [scenes.crowd([marked_photo("a"), marked_photo("b"), marked_photo("c")], seconds=1.2, seed=3)]
    shots += scenes.short_appearance(marked_photo("d"), 0.5)
    truth = scenes.render(shots, tmp_path / "v.mp4", fps=10, jpeg_quality=40)
    with av.open(str(tmp_path / "v.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == truth.n_frames == 12 + 15
    assert decoded[0].shape == (360, 640, 3)
    assert truth.cuts == [12]
    assert [a.person for a in truth.appearances] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("start", "end", "error"),
    [(0.0, 1.0, None), (1.0, 1.0, ValueError), (-0.1, 1.0, ValueError)],
)
def test_appearance_times_are_checked(start: float, end: float, error: type[Exception] | None) -> None:
    box = scenes.box_at(100, 100, 80)
    if error is None:
        assert Appearance(marked_photo(), start, end, box).box(1.0) == box
    else:
        with pytest.raises(error, match="start_s < end_s"):
            Appearance(marked_photo(), start, end, box)


def test_mtcnn_finds_real_lfw_faces_where_the_truth_says(lfw_dir: Path, mtcnn_weights_dir: Path) -> None:
    root = lfw_dir / "lfw-deepfunneled"
    names = ["Colin_Powell", "Serena_Williams", "Junichiro_Koizumi", "Gloria_Macapagal_Arroyo"]
    photos = [Photo(n, read_image(root / n / f"{n}_0002.jpg")) for n in names]
    shot = scenes.crowd(photos, seconds=0.3, seed=5, widths=(60, 140), zoom=1.1, pan=(15.0, 5.0))
    truth = GroundTruth(10, (640, 360))
    images = list(scenes.frames([shot], fps=10, jpeg_quality=50, truth=truth))
    detector = build_detector(load_config(None).detector, mtcnn_weights_dir)
    for image, faces in zip(images, truth.faces, strict=True):
        found = detector([image])[0].boxes
        assert len(faces) == 4
        best = iou_matrix(np.array([f.box for f in faces]), found).max(axis=1)
        assert (best >= 0.5).all(), (best, faces)
