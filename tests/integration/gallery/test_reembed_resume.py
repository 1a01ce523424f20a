"""``promote``'s re-embedding resumes after a crash: identities already done are not embedded again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamproc.config import load_config
from streamproc.eval.compat import crop_images
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.models import registry
from streamproc.models.promote import reembed

pytestmark = pytest.mark.integration

PEOPLE = ("Abdullah_Gul", "Adrien_Brody", "Al_Gore")  # two LFW images each


class Crash(Exception):
    pass


def test_reembed_resumes_after_a_crash_and_reports_identities_without_crops(
    make_store: Callable[..., RedisGalleryStore], lfw_dir: Path, mtcnn_weights_dir: Path
) -> None:
    root = lfw_dir / "lfw-deepfunneled"
    images = [f"{p}/{p}_000{i}.jpg" for p in PEOPLE for i in (1, 2)]
    crops, failed = crop_images(root, images, load_config(None, []), None, progress=False)
    assert not failed.any()
    store = make_store(retain_crops=True)
    rng = np.random.default_rng(0)
    old = rng.normal(size=(len(images) + 1, 128)).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    for k, person in enumerate(PEOPLE):
        store.enroll(person, old[2 * k : 2 * k + 2], "v1", crops=crops.images[2 * k : 2 * k + 2])
    store.enroll("No_Crops", old[-1:], "v1", crops=None)
    new_model = registry.MOBILEFACENET  # any model of another version; this one warps by landmarks
    version = registry.peek_card(new_model).version

    def crash_after_first(name: str) -> None:
        raise Crash(name)

    with pytest.raises(Crash):
        reembed(store, new_model, progress=False, on_identity=crash_after_first, batch_faces=2)
    report = reembed(store, new_model, progress=False, batch_faces=2)
    print(f"after the crash: {report}")
    assert (report.resumed, report.reembedded, report.missing) == (1, len(PEOPLE) - 1, ["No_Crops"])
    for person in PEOPLE:
        rows = store.embeddings(person, version)
        assert rows.shape == (2, 192) and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-4)
    again = reembed(store, new_model, progress=False)
    assert (again.resumed, again.reembedded) == (len(PEOPLE), 0)
