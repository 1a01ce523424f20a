"""A gallery of real LFW people calibrated to FPIR 1% names about 1% of strangers it never saw.

The 1:1 verification threshold of the model card (chosen for accuracy on LFW *pairs*) is what
identification used before: against a few hundred enrolled people it names far more strangers,
since a stranger only has to come close to one of them. ``streamproc gallery calibrate`` measures
strangers against this gallery, stores the threshold with the gallery version, and the policy
that the runs and ``gallery search`` use reads it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamproc.cli import main
from streamproc.config import load_config
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery.calibrate import Calibration, impostor_scores, nearest_two
from streamproc.gallery.embedded import EmbeddedRedis, connect
from streamproc.gallery.policy import for_gallery
from streamproc.gallery.redis_store import RedisGalleryStore

pytestmark = pytest.mark.integration
ENROLLED, CALIBRATION, FRESH = 300, 150, 150


@dataclass
class Lfw:
    people: list[str]
    enrolled: np.ndarray  # first photo of each person
    probes: np.ndarray  # second photo of each person
    calibration_dir: Path  # photos of strangers for `gallery calibrate`
    fresh: np.ndarray  # embeddings of other strangers, never used to calibrate


@pytest.fixture(scope="module")
def lfw(lfw_dir: Path, mtcnn_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Lfw:
    root = lfw_dir / "lfw-deepfunneled"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    counts = {p.name: len(list(p.glob("*.jpg"))) for p in folders}
    rng = np.random.default_rng(7)
    several = [n for n, c in counts.items() if c >= 2]
    single = [n for n, c in counts.items() if c == 1]
    people = [several[i] for i in rng.choice(len(several), ENROLLED, replace=False)]
    strangers = [single[i] for i in rng.choice(len(single), CALIBRATION + FRESH, replace=False)]
    pipeline = FacePipeline(load_config(None, ["embedder.threads=1"]))

    def embed(paths: list[Path]) -> np.ndarray:
        parts = [
            pipeline.embed_subjects([read_image(p) for p in paths[i : i + 32]]).embeddings
            for i in range(0, len(paths), 32)
        ]
        return np.concatenate(parts)

    calibration_dir = tmp_path_factory.mktemp("strangers")
    for name in strangers[:CALIBRATION]:
        (calibration_dir / f"{name}.jpg").symlink_to(root / name / f"{name}_0001.jpg")
    return Lfw(
        people,
        embed([root / n / f"{n}_0001.jpg" for n in people]),
        embed([root / n / f"{n}_0002.jpg" for n in people]),
        calibration_dir,
        embed([root / n / f"{n}_0001.jpg" for n in strangers[CALIBRATION:]]),
    )


@pytest.fixture
def store(lfw: Lfw, tmp_path: Path) -> Iterator[tuple[RedisGalleryStore, list[str]]]:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    prefix = f"cal-{uuid.uuid4().hex[:6]}"
    gallery = RedisGalleryStore(connect(url), prefix=prefix)
    gallery.enroll_many([(p, e[None, :]) for p, e in zip(lfw.people, lfw.enrolled, strict=True)], "v1")
    yield gallery, [f"gallery.url={url}", f"gallery.prefix={prefix}", "embedder.threads=1"]
    gallery.close()
    server.stop()


def named_rate(probes: np.ndarray, gallery: np.ndarray, threshold: float, margin: float) -> float:
    """The fraction of ``probes`` given any name by the product's rule (threshold and margin)."""
    scores = impostor_scores(*nearest_two(gallery, np.arange(len(gallery)), probes), margin)
    return float(np.mean(scores <= threshold))


def test_calibrated_gallery_names_about_one_percent_of_new_strangers(
    lfw: Lfw, store: tuple[RedisGalleryStore, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    gallery, sets = store
    args = ["gallery", "calibrate", "--fpir", "0.01", "--strangers", str(lfw.calibration_dir)]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    assert "threshold" in capsys.readouterr().out
    raw = gallery.calibration("v1")
    assert raw is not None
    stored = Calibration.from_dict(raw)
    assert (stored.fpir, stored.gallery_size, stored.method) == (0.01, ENROLLED, "strangers")

    config = load_config(None, sets)
    from streamproc.models import registry

    card = registry.peek_card("facenet-irv1-128")
    resolved = for_gallery(config.gallery, card, "v1", ENROLLED, gallery)
    assert resolved.value == stored.threshold and "calibrated" in resolved.source

    margin = config.gallery.margin
    assert stored.margin == margin and resolved.margin == margin
    ours = named_rate(lfw.fresh, lfw.enrolled, resolved.value, margin)
    one_to_one = named_rate(lfw.fresh, lfw.enrolled, card.threshold_for("v1"), 0.0)
    dist = np.maximum(2 - 2 * lfw.probes @ lfw.enrolled.T, 0)
    nearest = np.sort(dist, axis=1)
    named_right = (dist.argmin(axis=1) == np.arange(len(dist))) & (nearest[:, 1] - nearest[:, 0] >= margin)
    recall = float(np.mean(named_right & (nearest[:, 0] <= resolved.value)))
    print(
        f"strangers named: calibrated {ours:.3f}, 1:1 card threshold {one_to_one:.3f}; enrolled recall {recall:.3f}"
    )
    assert ours <= 0.03  # 1% targeted; 150 fresh strangers leave room for sampling error
    assert one_to_one >= 3 * max(ours, 0.01)  # what identification named before
    assert recall >= 0.5


def test_uncalibrated_gallery_uses_the_models_curve_at_its_size(
    lfw: Lfw, store: tuple[RedisGalleryStore, list[str]]
) -> None:
    gallery, sets = store
    from streamproc.models import registry

    card = registry.peek_card("facenet-irv1-128")
    resolved = for_gallery(load_config(None, sets).gallery, card, "v1", ENROLLED, gallery)
    assert "FAR curve" in resolved.source
    assert named_rate(lfw.fresh, lfw.enrolled, resolved.value, resolved.margin) <= 0.03
