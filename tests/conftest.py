"""Fixtures shared by the whole suite: real data and real weights, or a skip that says why."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # Train V1 hangs on 2 CPUs

from streamproc import env
from streamproc.errors import FetchError
from streamproc.models import fetch


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's own ``STREAMPROC_CACHE_DIR``, set before any Ray cluster starts (its actors see it).

    Fetched weights, downloads, bench caches and converted built-in checkpoints are the user cache's
    (linked, so a fetch lands there once); the model registry and the pair table are the session's
    own. A model trained on this machine never reaches a test, and a model a test registers stays
    in the session, as on a fresh clone.
    """
    user = env.cache_dir()
    cache = tmp_path_factory.mktemp("streamproc-cache")
    for name in ("weights", "downloads", "bench"):
        (user / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to(user / name)
    (cache / "models").mkdir()
    for item in (user / "models").glob("*.pt"):
        (cache / "models" / item.name).symlink_to(item)
    previous = os.environ.get("STREAMPROC_CACHE_DIR")
    os.environ["STREAMPROC_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("STREAMPROC_CACHE_DIR", None)
    else:
        os.environ["STREAMPROC_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = env.shared_data()
    if not root.is_dir():
        pytest.skip(f"shared test data not found at {root} (set STREAMPROC_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def lfw_dir(shared_data: Path) -> Path:
    root = shared_data / "lfw"
    if not (root / "lfw-deepfunneled").is_dir():
        pytest.skip(f"LFW not found under {root}")
    return root


def _fetched(name: str) -> Path:
    try:
        return fetch.fetch(name)
    except FetchError as exc:
        pytest.skip(f"weights {name!r} unavailable: {exc}")


@pytest.fixture(scope="session")
def mtcnn_weights_dir() -> Path:
    """Real MTCNN weights (pnet.pt, rnet.pt, onet.pt), fetched once into the user cache."""
    return _fetched("mtcnn")


@pytest.fixture(scope="session")
def facenet_keras_h5() -> Path:
    """The real pretrained FaceNet Keras HDF5 file, fetched once into the user cache."""
    return _fetched("facenet-keras") / "facenet_keras.h5"


@pytest.fixture(scope="session")
def tflite_path() -> Path:
    """The real MobileFaceNet.tflite, fetched once into the user cache (network on first use)."""
    try:
        return fetch.mobilefacenet_tflite()
    except FetchError as exc:
        pytest.skip(f"weights 'mobilefacenet' unavailable: {exc}")


@pytest.fixture(scope="session")
def celebrity_dir() -> Path:
    return _fetched("celebrity-5")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One small local Ray cluster for the whole session (pipeline and training tests share it)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        # address="local": a new cluster even when another one runs on this machine (a training job)
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20)
    yield
    if started:
        ray.shutdown()
