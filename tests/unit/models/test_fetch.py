"""Fetching: checksums are enforced, the cache is all-or-nothing, offline errors say what to do."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from streamproc.errors import FetchError, ModelError
from streamproc.models import fetch


def make_artifact(tmp_path: Path, member_sha: str | None = None) -> fetch.Artifact:
    archive = tmp_path / "cache" / "downloads" / "demo-1.0-py3-none-any.whl"
    archive.parent.mkdir(parents=True)
    payload = b"weights"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("demo/data/w.pt", payload)
    return fetch.Artifact(
        name="demo",
        package="demo==1.0",
        archive=archive.name,
        archive_sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        members={"demo/data/w.pt": member_sha or hashlib.sha256(payload).hexdigest()},
        licence="test",
        strip="demo/data/",
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMPROC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STREAMPROC_OFFLINE", "1")  # these tests never touch the network
    return tmp_path / "cache"


def test_fetch_extracts_verifies_and_caches(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fetch.ARTIFACTS, "demo", make_artifact(tmp_path))
    folder = fetch.fetch("demo")
    assert (folder / "w.pt").read_bytes() == b"weights"
    assert fetch.is_cached("demo") and fetch.verify("demo") == []
    (folder / "w.pt").write_bytes(b"tampered")
    assert fetch.verify("demo") == [f"{folder / 'w.pt'} does not match its sha256"]


def test_member_checksum_mismatch_caches_nothing(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fetch.ARTIFACTS, "demo", make_artifact(tmp_path, member_sha="0" * 64))
    with pytest.raises(FetchError, match="expected 0000"):
        fetch.fetch("demo")
    assert not fetch.is_cached("demo")
    assert not fetch.artifact_dir("demo").exists()


def test_archive_checksum_mismatch_is_refused_offline(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = make_artifact(tmp_path)
    monkeypatch.setitem(
        fetch.ARTIFACTS, "demo", fetch.Artifact(**{**art.__dict__, "archive_sha256": "f" * 64})
    )
    with pytest.raises(FetchError, match="STREAMPROC_OFFLINE"):
        fetch.fetch("demo")


def test_offline_with_nothing_cached_says_what_to_do(cache: Path) -> None:
    with pytest.raises(FetchError, match="not cached and STREAMPROC_OFFLINE is set"):
        fetch.fetch("mtcnn")


def test_unknown_artifact() -> None:
    with pytest.raises(ModelError, match="known: "):
        fetch.fetch("nope")
