"""A photo far larger than any detector needs: the face is found on a shrunk copy and cut from the
original, so it gets the same embedding as at its usual size.

An LFW photo (250x250) is enlarged 24x to 6000x6000; ``FacePipeline.detect`` shrinks it to
``DETECT_MAX_SIDE`` for the detector and maps the boxes and landmarks back.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.config import load_config
from streamproc.faces import DETECT_MAX_SIDE, FacePipeline, read_image

pytestmark = pytest.mark.integration
FACTOR = 24


def test_a_face_in_a_6000px_photo_embeds_as_at_250px(
    lfw_dir: Path, mtcnn_weights_dir: Path, facenet_keras_h5: Path
) -> None:
    small = read_image(next((lfw_dir / "lfw-deepfunneled" / "Aaron_Peirsol").glob("*.jpg")))
    huge = cv2.resize(small, None, fx=FACTOR, fy=FACTOR, interpolation=cv2.INTER_LINEAR)
    assert max(huge.shape[:2]) > DETECT_MAX_SIDE
    pipe = FacePipeline(load_config(None))
    found_small, found_huge = pipe.detect([small, huge])
    assert len(found_small) and len(found_huge)
    box_small, box_huge = found_small.boxes[0], found_huge.boxes[0]
    # the box is in the 6000px photo's pixels, where the face is (not where the shrunk copy had it)
    assert np.allclose(box_huge / FACTOR, box_small, atol=4.0), (box_small, box_huge / FACTOR)
    result = pipe.embed_subjects([small, huge])
    assert not result.failed.any()
    distance = float(np.sum((result.embeddings[0] - result.embeddings[1]) ** 2))
    print(f"\nsquared distance between the 250px and the 6000px photo's embeddings: {distance:.4f}")
    assert distance < 0.2  # the same person's threshold is 1.172
