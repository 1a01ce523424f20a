"""``streamproc run`` stops cleanly on SIGTERM (how Kubernetes ends a pod): summary printed, exit 0."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamproc.sources.synth import write_pattern_video

pytestmark = pytest.mark.integration
STARTED = "Ctrl-C or SIGTERM stops"


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """Lines of the process's output up to the one containing ``marker`` (bounded in time)."""
    assert proc.stdout is not None
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:  # the process ended early
                break
            seen.append(line)
            if marker in line:
                return "".join(seen)
    raise AssertionError(f"{marker!r} not seen within {timeout_s}s:\n{''.join(seen)}")


def test_sigterm_ends_the_run_like_ctrl_c(
    tmp_path: Path, mtcnn_weights_dir: Path, facenet_keras_h5: Path
) -> None:
    video = write_pattern_video(tmp_path / "loop.mp4", width=320, height=240, n_frames=50, fps=25)
    source = json.dumps([{"uri": str(video), "live": True}])  # a live file loops: the run never ends alone
    env = {**os.environ, "STREAMPROC_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamproc.cli", "run", "--runner", "local"]
    cmd += ["--set", f"sources={source}", "--set", "embedder.threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        read_until(proc, STARTED, timeout_s=180)
        time.sleep(3)  # frames flow
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    summary = next(line for line in out.splitlines() if line.startswith("local runner:"))
    assert int(summary.split(" from ")[1].split()[0]) > 0, summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("how", ["duration", "SIGTERM", "SIGINT"])
def test_the_local_runner_stops_while_it_retries_a_refused_camera(
    tmp_path: Path, mtcnn_weights_dir: Path, facenet_keras_h5: Path, how: str
) -> None:
    """A camera that refuses every connection is retried forever, but ``--duration``, SIGTERM and
    Ctrl-C still end the run at once: the wait between reconnects is interruptible."""
    env = {**os.environ, "STREAMPROC_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamproc.cli", "run", "--runner", "local", "--set", "embedder.threads=1"]
    cmd += ["--source", f"rtsp://127.0.0.1:{free_port()}/x"]
    if how == "duration":
        cmd += ["--duration", "5"]
    # Started the way a script's `cmd &` starts a job: SIGINT ignored, which Python keeps
    ignore_int = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if how == "SIGINT" else None
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=ignore_int
    )
    try:
        read_until(proc, STARTED, timeout_s=180)
        if how != "duration":
            time.sleep(3)  # a few refused connects and backoff waits
            proc.send_signal(getattr(signal, how))
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"still running 30 s after {how}:\n{out[-2000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:]
    assert "local runner: 0 decisions from 0 frames" in out and "Connection refused" in out, out[-2000:]
