"""A real RTSP server (GStreamer rtsp-server, run by the system python) on a free loopback port.

``rtsp_server(path=None, port=None, loop=False)`` starts one and returns an ``RtspServer`` with
``url``, ``stop()`` and ``restart()`` (same port, for reconnect tests); every server is stopped at
the end of the test. The tests skip, saying why, when the system python lacks GstRtspServer.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
START_TIMEOUT_S = 10.0


@cache
def gst_rtsp_missing() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    probe = 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer'
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} cannot run: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        return (
            f"GStreamer RTSP server not available to {SYSTEM_PYTHON} ({last}); "
            "install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad,ugly}"
        )
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RtspServer:
    """One server process; ``stop()`` ends it (SIGTERM), ``restart()`` starts it again on the same port."""

    def __init__(self, port: int, path: Path | None = None, loop: bool = False, mount: str = "/stream"):
        self.port = port
        self.mount = mount
        self.url = f"rtsp://127.0.0.1:{port}{mount}"
        self._args = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(port), "--mount", mount]
        if path is not None:
            self._args += ["--file", str(path)] + (["--loop"] if loop else [])
        self._proc: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RtspServer:
        if self.running:
            return self
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read() if self._proc.stderr else ""
                raise RuntimeError(f"RTSP server on port {self.port} exited early: {err.strip()}")
            if _accepts(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"RTSP server on port {self.port} not accepting after {START_TIMEOUT_S}s")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but no data flows, like a hung camera."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def restart(self) -> RtspServer:
        self.stop()
        return self.start()


@pytest.fixture
def rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """Factory: ``rtsp_server(path=None, port=None, loop=False)`` -> a started ``RtspServer``."""
    reason = gst_rtsp_missing()
    if reason is not None:
        pytest.skip(reason)
    started: list[RtspServer] = []

    def factory(path: Path | None = None, port: int | None = None, loop: bool = False) -> RtspServer:
        server = RtspServer(port or free_port(), path, loop)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def unused_rtsp_url() -> str:
    """An rtsp:// URL on a loopback port where nothing listens."""
    return f"rtsp://127.0.0.1:{free_port()}/stream"
