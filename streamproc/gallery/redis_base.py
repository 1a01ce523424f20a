"""Plumbing shared by the parts of the Redis gallery store: keys, retries, transactions, packing.

``RedisBase`` holds the connection and the helpers every part uses; ``redis_replica.RedisReplicaReads``
adds what replicas read, and ``redis_store.RedisGalleryStore`` the writes (key layout: its module).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import redis
from redis.client import Pipeline

from streamproc.errors import GalleryError, GalleryUnavailable, InputError, UnknownIdentity
from streamproc.gallery.base import GalleryStore, Identity, Op
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.quantize import quantize
from streamproc.retry import Retry, server_retry

T = TypeVar("T")
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int8": np.dtype("i1")}


def as_str(value: bytes | str | None) -> str:
    """A reply field as text (None: empty)."""
    return "" if value is None else value.decode() if isinstance(value, bytes) else value


def as_bytes(value: object) -> bytes:
    """A value as the bytes Redis would return for it."""
    return value if isinstance(value, bytes) else str(value).encode()


def stream_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream entry id (``"ms-seq"``) as a pair that compares in stream order."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class RedisBase(GalleryStore):
    """The connection, key names and call plumbing of ``RedisGalleryStore`` (not used alone)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "streamproc",
        dtype: str = "float32",
        retain_crops: bool = False,
        changelog_maxlen: int = 100_000,
        retry: Retry | None = None,
    ):
        self.config = GalleryConfig(
            prefix=prefix,
            dtype=cast(Any, dtype),
            retain_crops=retain_crops,
            changelog_maxlen=changelog_maxlen,
        )
        self._r = client
        self._p = prefix
        self._retry = retry or server_retry()
        kw = client.connection_pool.connection_kwargs
        self._where = str(kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}")

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (health checks, tests); writes belong to the store's methods."""
        return self._r

    def close(self) -> None:
        self._r.close()

    # --- keys ----------------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    def _names(self) -> str:
        return self.key("names")

    def _ident(self, ident: str) -> str:
        return self.key("identity", ident)

    def _emb(self, mv: str, ident: str) -> str:
        return self.key("emb", mv, ident)

    def _crops_key(self, ident: str) -> str:
        return self.key("crops", ident)

    def _model(self, mv: str) -> str:
        return self.key("model", mv)

    def _members(self, mv: str) -> str:
        return self.key("model", mv, "members")

    def _changes(self) -> str:
        return self.key("changes")

    # --- plumbing ------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        def attempt() -> T:
            try:
                return fn()
            except redis.AuthenticationError as exc:
                raise GalleryError(f"gallery Redis at {self._where} refused the credentials: {exc}") from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise GalleryUnavailable(f"gallery Redis at {self._where} is unreachable: {exc}") from exc
            except redis.ResponseError as exc:
                raise GalleryError(f"gallery Redis at {self._where} refused a command: {exc}") from exc

        return self._retry.call(attempt)

    def _tx(self, fn: Callable[[Pipeline], T], *watch: str) -> T:
        return self._call(
            lambda: cast(T, self._r.transaction(cast(Any, fn), *watch, value_from_callable=True))
        )

    def _log(self, pipe: Pipeline, op: Op, ident: str, mv: str, now: float) -> None:
        fields = {"op": op, "id": ident, "model": mv, "time": repr(now)}
        pipe.xadd(self._changes(), fields, maxlen=self.config.changelog_maxlen, approximate=True)  # type: ignore[arg-type]

    def _model_info(self, pipe: Pipeline | redis.Redis, mv: str) -> tuple[int, np.dtype[Any]] | None:
        info = pipe.hgetall(self._model(mv))
        if not info:
            return None
        return int(info[b"dim"]), _DTYPES[as_str(info[b"dtype"])]

    def _checked_model(self, pipe: Pipeline, mv: str, dim: int) -> tuple[np.dtype[Any], bool]:
        """The storage dtype of ``mv`` and whether the model key must be created; checks ``dim``."""
        info = self._model_info(pipe, mv)
        if info is None:
            return _DTYPES[self.config.dtype], True
        if info[0] != dim:
            raise InputError(
                f"embeddings have dimension {dim}, but model version {mv!r} stores {info[0]}: "
                "embed with that model, or enrol under a new model version"
            )
        return info[1], False

    @staticmethod
    def _pack(emb: np.ndarray, dtype: np.dtype[Any]) -> bytes:
        rows = quantize(emb) if dtype == np.int8 else emb.astype("<f4")
        return rows.tobytes()

    @staticmethod
    def _unpack(blobs: Sequence[Any], dim: int, dtype: np.dtype[Any]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, dim), dtype)
        return np.frombuffer(b"".join(blobs), dtype).reshape(-1, dim)

    def _identity(self, ident: str, h: Mapping[Any, Any]) -> Identity:
        emb = {as_str(k)[5:]: int(v) for k, v in h.items() if k.startswith(b"rows:")}
        return Identity(
            id=ident,
            name=as_str(h.get(b"name")),
            metadata=json.loads(h.get(b"metadata", b"{}")),
            created=float(h.get(b"created", 0.0)),
            updated=float(h.get(b"updated", 0.0)),
            embeddings=dict(sorted(emb.items())),
            crops=int(h.get(b"crops", 0)),
        )

    def _id_of(self, name: str) -> str:
        ident = self._call(lambda: self._r.hget(self._names(), name))
        if ident is None:
            raise UnknownIdentity(f"no identity named {name!r} in the gallery; list them with `gallery list`")
        return as_str(ident)
