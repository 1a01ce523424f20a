"""Erasing from disk as well: a Redis server with AOF persistence keeps every command it was sent,
so the embeddings and the name of an erased person stay in the append-only file until it is
rewritten. ``rewrite_aof`` asks the server for a rewrite (BGREWRITEAOF) and waits until the new
file is in place and, when the server's folder is on this machine, until the old files are gone.

A server without AOF is left alone (its RDB snapshots, replicas and backups are the operator's:
see deploy/README.md, "Erasure").

>>> rewrite_aof(connect(url))  # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from streamproc.errors import GalleryError
from streamproc.retry import poll

REWRITE_TIMEOUT_S = 120.0
POLL_S = 0.02


def rewrite_aof(client: redis.Redis, timeout_s: float = REWRITE_TIMEOUT_S) -> bool:
    """Rewrite the server's AOF and wait for it; False when the server keeps no AOF."""
    if not int(client.info("persistence").get("aof_enabled", 0)):
        return False
    deadline = time.monotonic() + timeout_s
    while True:  # a rewrite begun before the erasure may still hold the erased data: ours starts after it
        _wait_idle(client, deadline)
        try:
            client.bgrewriteaof()
            break
        except redis.ResponseError as exc:
            if "in progress" not in str(exc):
                raise
    _wait_idle(client, deadline)
    status = client.info("persistence").get("aof_last_bgrewrite_status")
    if status != "ok":
        raise GalleryError(f"the AOF rewrite after an erasure failed ({status}): see the server's log")
    _wait_old_files_gone(client, deadline)
    return True


def _idle(client: redis.Redis) -> bool | None:
    info = client.info("persistence")
    busy = int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))
    return None if busy else True


def _wait_idle(client: redis.Redis, deadline: float) -> None:
    _check(poll(lambda: _idle(client), deadline - time.monotonic(), POLL_S))


def _wait_old_files_gone(client: redis.Redis, deadline: float) -> None:
    """The server deletes the replaced AOF files in a background thread: wait for them (local only)."""
    folder = Path(str(client.config_get("dir")["dir"])) / str(
        client.config_get("appenddirname")["appenddirname"]
    )
    manifest = folder / (str(client.config_get("appendfilename")["appendfilename"]) + ".manifest")

    def gone() -> bool | None:
        if not manifest.is_file():
            return True
        lines = [line.split() for line in manifest.read_text().splitlines()]
        live = {row[1] for row in lines if len(row) >= 6 and row[5] in ("b", "i")}
        return True if {p.name for p in folder.iterdir()} <= live | {manifest.name} else None

    _check(poll(gone, deadline - time.monotonic(), POLL_S))


def _check(done: bool | None) -> None:
    if done is None:
        raise GalleryError(
            "the AOF rewrite after an erasure did not finish in time: the erased data stays on disk "
            "until it does (see the server's log)"
        )
