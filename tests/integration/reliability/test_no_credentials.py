"""No password reaches a log line, an error, an event or the Redis event stream.

``streamproc -v run`` (debug logging: the resolved config is logged too) runs in a subprocess, so
everything the process writes is seen: the demo video beside an RTSP camera URL with a password on
a closed port (its error must name the camera without it), against the session gallery, whose
embedded server has a random password in its URL, writing events to a JSON-lines file and to a
Redis stream. Then ``gallery list`` with a wrong password, and a Redis URL of the wrong scheme: both
must fail with a message that does not repeat the password.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = pytest.mark.integration
STREAMPROC = str(Path(sys.executable).with_name("streamproc"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def streamproc(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STREAMPROC, *argv], capture_output=True, text=True, timeout=timeout)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f":{password}@{host}"))


def test_no_password_in_logs_errors_or_events(gallery: Any, demo_video: Path, tmp_path: Path) -> None:
    redis_password = urlsplit(gallery.url).password
    assert redis_password, "the embedded server is expected to have a password"
    camera_password = f"cam-{uuid.uuid4().hex}"
    camera = f"rtsp://admin:{camera_password}@127.0.0.1:{free_port()}/main"
    events, stream_key = tmp_path / "events.jsonl", f"creds-{uuid.uuid4().hex[:8]}"
    sources = [
        {"uri": str(demo_video), "stream_id": "good"},
        {"uri": camera, "max_reconnects": 0, "open_timeout_s": 2.0},
    ]
    sets = [*gallery.overrides(), "sources=" + json.dumps(sources), f"emit.redis_stream={stream_key}"]
    sets += ["embedder.threads=1", "detect.every_k_frames=2", "aggregate.min_frames=3"]
    argv = ["-v", "run", "--runner", "local", "--events", str(events)]
    for item in sets:
        argv += ["--set", item]
    run = streamproc(*argv)

    output = run.stdout + run.stderr
    assert "resolved config" in output, run.stderr[-3000:]  # the debug dump was logged
    assert "rtsp://admin:***@127.0.0.1" in output and "FAILED" in run.stdout, run.stdout[-3000:]
    assert json.loads(events.read_text().splitlines()[0])["stream_id"] == "good"
    store = gallery.store()
    entries = store.client.xrange(stream_key)
    store.close()
    assert entries, "no event reached the Redis stream"
    written = events.read_text() + repr(entries)
    for secret in (redis_password, camera_password):
        assert secret not in output, f"a password is in the output: {output[-3000:]}"
        assert secret not in written, "a password is in the events"


def test_refused_credentials_and_bad_urls_are_reported_without_the_password(gallery: Any) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    refused = streamproc("gallery", "list", "--set", f"gallery.url={with_password(gallery.url, wrong)}")
    assert refused.returncode != 0
    assert "refused the credentials" in refused.stderr, refused.stderr[-2000:]
    bad_scheme = streamproc("gallery", "list", "--set", f"gallery.url=http://:{wrong}@127.0.0.1:1/0")
    assert bad_scheme.returncode == 2 and "expected a URL starting with" in bad_scheme.stderr
    for run in (refused, bad_scheme):
        assert wrong not in run.stdout + run.stderr, run.stderr[-2000:]
