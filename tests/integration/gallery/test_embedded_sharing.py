"""Two processes on one embedded gallery (issue 16 #4): the server outlives every process using it,
whichever ends first and however (a normal exit or SIGKILL), and stops once the last one is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# A client process: connect, write, say "ready", wait for a line on stdin, write again, say "ok".
CLIENT = """
import sys
from streamproc.gallery.embedded import connect
client = connect(None, sys.argv[1])
client.set(sys.argv[2], "1")
print("ready", flush=True)
sys.stdin.readline()
client.set(sys.argv[2], "2")
print("ok", client.get(sys.argv[2]).decode(), flush=True)
"""


def start(folder: Path, key: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(folder), key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err[-2000:]
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("first_ends", ["exit", "SIGKILL"])
def test_the_server_outlives_the_process_that_started_it(tmp_path: Path, first_ends: str) -> None:
    folder = tmp_path / "gallery"
    first = start(folder, "first")
    server_pid = json.loads((folder / "embedded.json").read_text())["pid"]
    second = start(folder, "second")  # attaches to the server the first one started
    if first_ends == "exit":
        finish(first)
    else:
        first.kill()
        first.wait()
    time.sleep(0.5)
    assert alive(server_pid), "the server stopped while the second process still uses it"
    assert finish(second) == "ok 2\n"
    deadline = time.monotonic() + 20
    while alive(server_pid) and time.monotonic() < deadline:  # the last user gone: the server stops
        time.sleep(0.05)
    assert not alive(server_pid) or _zombie(server_pid)
    third = start(folder, "third")  # and a new one starts on the same data
    assert finish(third) == "ok 2\n"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False


def test_a_server_whose_folder_was_deleted_stops_with_its_process(tmp_path: Path) -> None:
    """A bench or script keeps the server in a temporary directory that is cleaned up before the
    interpreter exits: the server must not outlive the process that started it."""
    script = """
import shutil, sys, tempfile
from pathlib import Path
from streamproc.gallery.embedded import connect
with tempfile.TemporaryDirectory(dir=sys.argv[1]) as tmp:
    connect(None, Path(tmp)).set("k", "1")
    print(Path(tmp, "embedded.json").read_text(), flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    pid = int(json.loads(done.stdout.splitlines()[-1])["pid"])
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, 9)
        pytest.fail(f"the embedded server {pid} outlived its process and deleted folder")
    assert done.returncode == 0 and "Exception ignored" not in done.stderr, done.stderr[-2000:]
