"""MTCNN with the real weights on real LFW faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamproc.config import DetectorConfig
from streamproc.detect import build_detector
from streamproc.detect.mtcnn import (
    MTCNN,
    PNet,
    area_average,
    integral_image,
    load_net,
    pyramid,
    pyramid_scales,
    to_input,
)
from streamproc.errors import ConversionError, InputError, ModelError
from streamproc.types import Faces

LFW_CENTRE = 125.0  # LFW images are 250x250 with the subject's face in the middle


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detector(mtcnn_weights_dir: Path) -> MTCNN:
    torch.set_num_threads(1)
    return MTCNN(DetectorConfig(), mtcnn_weights_dir)


@pytest.fixture(scope="module")
def lfw_images(lfw_dir: Path) -> list[np.ndarray]:
    """First image of 20 people spread over the alphabet."""
    people = sorted((lfw_dir / "lfw-deepfunneled").iterdir())
    step = max(1, len(people) // 20)
    return [read_rgb(sorted(person.glob("*.jpg"))[0]) for person in people[::step][:20]]


def centre_face(faces: Faces) -> int | None:
    inside = [
        i
        for i, (x1, y1, x2, y2) in enumerate(faces.boxes)
        if x1 <= LFW_CENTRE <= x2 and y1 <= LFW_CENTRE <= y2
    ]
    return inside[0] if inside else None


def test_finds_the_lfw_subject_with_sane_landmarks(detector, lfw_images):
    found = detector(lfw_images)
    assert len(found) == len(lfw_images)
    for k, faces in enumerate(found):
        i = centre_face(faces)
        assert i is not None, f"image {k}: no box contains the centre, got {faces.boxes}"
        (x1, y1, x2, y2), points = faces.boxes[i], faces.landmarks[i]
        assert faces.scores[i] > 0.9
        assert 40 < x2 - x1 < 200 and 40 < y2 - y1 < 220
        assert np.all(
            (points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2)
        )
        left_eye, right_eye, nose, left_mouth, right_mouth = points
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert np.all(faces.frame_index == k)


def assert_same_faces(a: Faces, b: Faces) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose(np.asarray(a.landmarks), np.asarray(b.landmarks), atol=0.05)


def test_batch_equals_one_by_one(detector, lfw_images):
    images = lfw_images[:4]
    batched = detector(images)
    for image, faces in zip(images, batched, strict=True):
        assert_same_faces(faces, detector([image])[0])


def test_mixed_sizes_in_one_batch(detector, lfw_images):
    images = [lfw_images[0], np.ascontiguousarray(lfw_images[1][20:230, 10:240]), lfw_images[2]]
    batched = detector(images)
    assert [int(f.frame_index.max()) for f in batched] == [0, 1, 2]
    for image, faces in zip(images, batched, strict=True):
        assert_same_faces(faces, detector([image])[0])


@pytest.mark.parametrize(
    "image",
    [
        np.full((240, 320, 3), 128, np.uint8),
        np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8),
    ],
    ids=["flat-grey", "noise"],
)
def test_no_face(detector, image):
    assert len(detector([image])[0]) == 0


def test_tiny_image_and_empty_list(detector):
    assert detector([]) == []
    assert len(detector([np.zeros((8, 8, 3), np.uint8)])[0]) == 0  # smaller than one P-Net window


def test_boxes_are_clipped_to_the_image(detector, lfw_images):
    cut = np.ascontiguousarray(lfw_images[0][:150, :150])  # chin runs off the bottom edge
    faces = detector([cut])[0]
    assert len(faces) >= 1
    assert np.all(faces.boxes >= 0) and np.all(faces.boxes <= 150)
    assert faces.boxes[:, 3].max() == 150  # the raw O-Net box reaches past the edge


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        ([np.zeros((10, 10), np.uint8)], InputError, r"expected \(H, W, 3\) uint8 RGB"),
        ([np.zeros((10, 10, 4), np.uint8)], InputError, r"expected \(H, W, 3\) uint8 RGB"),
        ([np.zeros((10, 10, 3), np.float32)], InputError, "float32"),
        ([np.zeros((0, 10, 3), np.uint8)], InputError, "uint8 RGB"),
        ([None], InputError, "NoneType"),
        (np.zeros((10, 10, 3), np.uint8), InputError, "wrap a single image in a list"),
    ],
)
def test_bad_inputs(detector, images, error, match):
    with pytest.raises(error, match=match):
        detector(images)


def test_weights_must_fit(tmp_path, mtcnn_weights_dir):
    state = torch.load(mtcnn_weights_dir / "pnet.pt", weights_only=True)
    state["conv1.weight"] = state["conv1.weight"][:5]
    torch.save(state, tmp_path / "pnet.pt")
    with pytest.raises(ConversionError, match=r"pnet\.pt"):
        load_net(PNet(), tmp_path / "pnet.pt")
    with pytest.raises(ModelError, match="not found"):
        MTCNN(DetectorConfig(), tmp_path / "missing")


@pytest.mark.parametrize(
    ("shape", "min_face", "factor", "expected"),
    [
        ((40, 40), 20, 0.5, [0.6, 0.3]),
        ((250, 250), 20, 0.709, [0.6 * 0.709**k for k in range(8)]),
        ((10, 500), 20, 0.709, []),  # shorter side under 20 px: no scale fits a face
    ],
)
def test_pyramid_scales(shape, min_face, factor, expected):
    np.testing.assert_allclose(np.array(pyramid_scales(shape[0], shape[1], min_face, factor)), expected)


def street_frame(shared_data: Path) -> np.ndarray:
    import av

    with av.open(str(shared_data / "video" / "street-multiface-1080p.mp4")) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def default_sizes(height: int, width: int, min_face: float) -> list[tuple[int, int]]:
    scales = pyramid_scales(height, width, min_face, 0.709)
    return [(int(np.ceil(width * s)), int(np.ceil(height * s))) for s in scales]


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((479, 641), (192, 144)),  # odd sides: no cell edge but the first falls on a pixel edge
        ((479, 641), (13, 12)),  # cells of 49 x 40 pixels
        ((480, 640), (160, 120)),  # a whole step (4x4 pixels a cell): every edge on a pixel edge
        ((1080, 1920), (27, 15)),  # the default's smallest level of a 1080p frame
        ((360, 640), (500, 300)),  # under 2x: cells of 1.28 x 1.2 pixels
    ],
)
def test_area_average_is_opencvs_area_resize_rounded(shape, size):
    """Against OpenCV's area resize of the same noise in float32 (no rounding): every pixel is that
    mean rounded, so it is off by at most half a grey level (and float error)."""
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), np.uint8)
    exact = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    level = area_average(integral_image(image), *size)
    assert level.shape == exact.shape and level.dtype == np.uint8
    assert np.abs(level - exact).max() <= 0.5 + 1e-3


def test_area_average_of_a_frame_whose_sums_overflow_int32():
    """A white frame over 4K (3000x3000 = 9M pixels): its integral's last sums pass 2**31 and must
    not wrap around."""
    image = np.full((3000, 3000, 3), 255, np.uint8)
    assert np.all(area_average(integral_image(image), 40, 40) == 255)


def test_pyramid_from_the_integral_matches_opencv_from_the_frame(shared_data):
    """A real 1080p street frame and a 640x480 copy, with the default pyramid (faces from 20 px) and
    the real-time profile's (40 px): each level within one grey level of OpenCV's area resize of the
    frame, and off by one only at ties (measured on this frame: at most 0.05% of a level's pixels; on
    a synthetic 640x480 frame with flat areas, up to 3%); with ``integral_from`` infinite, OpenCV's
    exactly."""
    frame = street_frame(shared_data)
    for image in (frame, cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)):
        for min_face in (20, 40):
            sizes = default_sizes(*image.shape[:2], min_face)
            direct = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for size in sizes]
            for level, d in zip(pyramid(image, sizes), direct, strict=True):
                diff = np.abs(level.astype(int) - d.astype(int))
                assert diff.max() <= 1 and diff.mean() <= 0.005, d.shape
            never = pyramid(image, sizes, integral_from=float("inf"))
            assert all(np.array_equal(a, b) for a, b in zip(never, direct, strict=True))


def test_a_photo_of_lfw_size_gets_the_levels_made_from_it():
    """A 250x250 photo (LFW's size) keeps the pyramid it always had, bit for bit: a first version
    that also made its small levels from levels moved LFW 10-fold accuracy from 0.9940 to 0.9935."""
    photo = np.random.default_rng(0).integers(0, 256, (250, 250, 3), np.uint8)
    sizes = default_sizes(250, 250, 20)
    for level, size in zip(pyramid(photo, sizes), sizes, strict=True):
        assert np.array_equal(level, cv2.resize(photo, size, interpolation=cv2.INTER_AREA)), size


def test_pyramid_of_one_pixel_stripes_stays_grey():
    """The case a cheaper average could get wrong: 1-px black/white stripes (a fence, a striped
    shirt) must come out as the same flat grey at every level, never as stripes."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, ::2] = 255
    sizes = default_sizes(1080, 1920, 20)
    for reused, size in zip(pyramid(frame, sizes), sizes, strict=True):
        direct = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        assert reused.std() <= direct.std() + 2.0, size
        assert abs(float(reused.mean()) - float(direct.mean())) <= 1.0, size


def test_pnet_in_bands_sees_what_the_whole_level_sees(detector, shared_data):
    """On CPU P-Net runs a large level in bands of 64 output rows. Against one pass over the level,
    every cell's score and box offsets must match: at each default level of a real 1080p frame and at
    odd heights, where the last band is short and the level's edge cuts a pooling window (394 rows:
    192 output rows, three whole bands)."""
    frame = street_frame(shared_data)
    sizes = [*default_sizes(*frame.shape[:2], 20), (259, 301), (640, 333), (500, 394)]
    banded = 0
    with torch.inference_mode():
        for width, height in sizes:
            level = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            x = to_input(level[None], torch.device("cpu"))
            whole = detector.pnet(x)
            for got, want in zip(detector._pnet_bands(x), whole, strict=True):
                assert got.shape == want.shape, (width, height)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            banded += whole[0].shape[1] > 2 * detector.pnet_band
    assert detector.pnet_band == 64 and banded >= 4


def test_cache_sized_passes_find_the_faces_of_whole_passes(detector, shared_data):
    """The street frame's faces with CPU pass sizes (P-Net bands, 128 R-Net and 32 O-Net crops a
    pass) and with one pass per level and 2048 / 512 crops, as on a GPU."""
    frame = street_frame(shared_data)
    small = detector([frame])[0]
    shipped = detector.rnet_chunk, detector.onet_chunk, detector.pnet_band
    assert shipped == (128, 32, 64)
    detector.rnet_chunk, detector.onet_chunk, detector.pnet_band = MTCNN.rnet_chunk, MTCNN.onet_chunk, None
    try:
        whole = detector([frame])[0]
    finally:
        detector.rnet_chunk, detector.onet_chunk, detector.pnet_band = shipped
    assert len(small) >= 3
    assert_same_faces(small, whole)


def test_levels_from_the_integral_find_the_faces_of_levels_resized_from_the_frame(detector, shared_data):
    """The street frame shrunk to 640x480 (as the real-time profile's frames) and whole: the faces
    found with the small levels read off the integral image against every level resized from the
    frame (the levels differ by one grey level at ties; the faces did not move)."""
    frame = street_frame(shared_data)
    for image in (cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA), frame):
        assert detector.pyramid_integral == 16.0
        found = detector([image])[0]
        detector.pyramid_integral = float("inf")
        try:
            resized = detector([image])[0]
        finally:
            detector.pyramid_integral = MTCNN.pyramid_integral
        assert len(found) >= 3
        assert_same_faces(found, resized)  # measured: the same boxes and scores, bit for bit


def test_build_detector(mtcnn_weights_dir):
    assert isinstance(build_detector(DetectorConfig(kind="mtcnn"), mtcnn_weights_dir), MTCNN)


def damaged_copy(weights: Path, tmp_path: Path, file: str, damage: str) -> Path:
    folder = tmp_path / "mtcnn"
    shutil.copytree(weights, folder)
    data = bytearray((folder / file).read_bytes())
    if damage == "flip":  # 2 KB flipped in the middle
        start = len(data) // 2
        data[start : start + 2048] = bytes(b ^ 0xFF for b in data[start : start + 2048])
    else:  # cut in half
        del data[len(data) // 2 :]
    (folder / file).write_bytes(bytes(data))
    return folder


@pytest.mark.parametrize(
    ("file", "damage"), [("onet.pt", "flip"), ("pnet.pt", "truncate"), ("rnet.pt", "flip")]
)
def test_damaged_weights_are_a_one_line_error(tmp_path, mtcnn_weights_dir, file, damage):
    folder = damaged_copy(mtcnn_weights_dir, tmp_path, file, damage)
    with pytest.raises(ModelError, match=rf"{file} is corrupt .*streamproc models fetch") as info:
        MTCNN(DetectorConfig(), folder)
    assert "\n" not in str(info.value)


def test_to_input_scales_a_copy_into_channels_last():
    """The nets' input: (x - 127.5) / 128 per pixel, (B, 3, H, W) in channels_last memory, computed
    in place on a copy: the caller's pixels (a frame's pyramid level) stay as they were."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    before = pixels.copy()
    x = to_input(pixels, torch.device("cpu"))
    want = (pixels.astype(np.float64) - 127.5) / 128.0
    assert x.shape == (2, 3, 37, 53) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), want.astype(np.float32))
    np.testing.assert_array_equal(pixels, before)
    floats = pixels.astype(np.float32)
    to_input(floats, torch.device("cpu"))
    np.testing.assert_array_equal(floats, before.astype(np.float32))
