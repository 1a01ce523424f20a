"""The gallery in Redis (or any server speaking its protocol: Valkey, the embedded server).

Key layout, every key under ``P = <prefix>`` (``streamproc`` by default); ``{id}`` is a random
32-hex pseudonym, ``{mv}`` a model version::

    P:names                  HASH    display name -> id (names are unique)
    P:identity:{id}          HASH    name, metadata (JSON), created, updated (epoch s),
                                     rows:{mv} (stored rows per model version), crops (count)
    P:emb:{mv}:{id}          HASH    enrollment batch id -> packed rows (float32 LE or int8 codes);
                                     one field per enroll call, so a retried call is detected
    P:crops:{id}             HASH    enrollment batch id -> .npy bytes of (N, H, W, C) uint8 crops
    P:model:{mv}             HASH    dim, dtype (fixed by the first write of that model version)
    P:model:{mv}:members     SET     ids with rows under {mv} (what a replica loads)
    P:models                 SET     model versions ever written
    P:unknown:{mv}           HASH    unknown-face id (time-sortable hex) -> packed row
    P:unknown:{mv}:meta      HASH    unknown-face id -> JSON metadata (time, stream, ...)
    P:changes                STREAM  op, id, model, time; XADD MAXLEN ~ changelog_maxlen

Every change of more than one key is one MULTI/EXEC transaction guarded by WATCH (optimistic
concurrency; redis-py re-runs the function on a conflict): a client or server crash before EXEC
applies nothing, and with AOF the server replays whole transactions only. The change log carries ids,
never names or embeddings, so ``delete`` erases a person completely while logging the erasure.

Connection errors become ``GalleryUnavailable`` and go through the injected ``Retry`` policy (by
default ``gallery.retry_s`` of retries). An enrollment's batch id is a hash of the person, model
version and rows, so an enroll retried after a lost reply, or a whole command run again, is not
applied twice.

>>> store = RedisGalleryStore.from_config(GalleryConfig(url="redis://localhost:6379/0"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import redis
from redis.client import Pipeline

from streamproc import env
from streamproc.errors import GalleryError, GalleryUnavailable, InputError, UnknownIdentity
from streamproc.gallery.base import (
    ChangeEvent,
    Changes,
    GalleryStore,
    Identity,
    IdentityRows,
    Op,
    Unknowns,
)
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.embedded import connect
from streamproc.gallery.quantize import dequantize, quantize
from streamproc.retry import Retry, server_retry

T = TypeVar("T")
log = logging.getLogger(__name__)
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int8": np.dtype("i1")}


def _s(value: bytes | str | None) -> str:
    return "" if value is None else value.decode() if isinstance(value, bytes) else value


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _stream_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class RedisGalleryStore(GalleryStore):
    """The gallery in Redis; see the module docstring for the key layout.

    Example:
        >>> store = RedisGalleryStore(redis.Redis.from_url("redis://localhost:6379/0"))  # doctest: +SKIP
        >>> store.enroll("Ada", emb, "facenet-v1").embeddings                             # doctest: +SKIP
        {'facenet-v1': 3}
    """

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

    @classmethod
    def from_config(cls, config: GalleryConfig, *, retry: Retry | None = None) -> RedisGalleryStore:
        """Connect to ``config.url``, else ``STREAMPROC_REDIS_URL``, else the embedded server."""
        url = config.url or env.redis_url()
        store = cls(
            connect(url, config.embedded_dir),
            prefix=config.prefix,
            dtype=config.dtype,
            retain_crops=config.retain_crops,
            changelog_maxlen=config.changelog_maxlen,
            retry=retry or server_retry(config.retry_s),
        )
        store.config = config
        return store

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
        return int(info[b"dim"]), _DTYPES[_s(info[b"dtype"])]

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
        emb = {_s(k)[5:]: int(v) for k, v in h.items() if k.startswith(b"rows:")}
        return Identity(
            id=ident,
            name=_s(h.get(b"name")),
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
        return _s(ident)

    # --- enrollment ---------------------------------------------------------------------------------
    def _enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        model_version: str,
        crops: np.ndarray | None,
        metadata: dict[str, Any] | None,
        replace: bool,
    ) -> Identity:
        batch = _batch_id(name, model_version, embeddings, replace)
        crop_blob = None
        if crops is not None and self.config.retain_crops:
            buf = io.BytesIO()
            np.save(buf, crops, allow_pickle=False)
            crop_blob = buf.getvalue()

        def tx(pipe: Pipeline) -> Identity:
            dtype, new_model = self._checked_model(pipe, model_version, embeddings.shape[1])
            return self._write_rows(
                pipe,
                name,
                model_version,
                batch,
                self._pack(embeddings, dtype),
                len(embeddings),
                (embeddings.shape[1], dtype, new_model),
                metadata,
                replace,
                crop_blob,
            )

        return self._tx(tx, self._names(), self._model(model_version))

    def _write_rows(
        self,
        pipe: Pipeline,
        name: str,
        mv: str,
        batch: str,
        packed: bytes,
        n: int,
        model: tuple[int, np.dtype[Any], bool],
        metadata: dict[str, Any] | None,
        replace: bool,
        crop_blob: bytes | None,
        before_exec: Callable[[Pipeline], None] | None = None,
    ) -> Identity:
        """Watch phase done by the caller for names and model; queues the whole enrollment."""
        now = time.time()
        found = pipe.hget(self._names(), name)
        ident = _s(found) if found is not None else uuid.uuid4().hex
        h: dict[Any, Any] = {}
        if found is not None:
            pipe.watch(self._ident(ident))
            h = pipe.hgetall(self._ident(ident))
            if pipe.hexists(self._emb(mv, ident), batch) and not (
                replace and pipe.hlen(self._emb(mv, ident)) > 1
            ):
                return self._identity(ident, h)  # an earlier attempt, or an earlier run, got through
        rows = (0 if replace else int(h.get(f"rows:{mv}".encode(), 0))) + n
        fields: dict[str, Any] = {"name": name, "updated": repr(now), f"rows:{mv}": rows}
        if found is None:
            fields |= {"created": repr(now), "metadata": "{}", "crops": 0}
        if metadata is not None:
            fields["metadata"] = json.dumps(metadata)
        pipe.multi()
        if model[2]:
            pipe.hset(self._model(mv), mapping={"dim": model[0], "dtype": model[1].name})
        pipe.sadd(self.key("models"), mv)
        pipe.hset(self._names(), name, ident)
        pipe.hset(self._ident(ident), mapping=cast(Any, fields))
        if replace:
            pipe.delete(self._emb(mv, ident))
        pipe.hset(self._emb(mv, ident), batch, packed)
        pipe.sadd(self._members(mv), ident)
        if crop_blob is not None:
            pipe.hset(self._crops_key(ident), batch, crop_blob)
            pipe.hincrby(self._ident(ident), "crops", n)
        if before_exec is not None:
            before_exec(pipe)
        self._log(pipe, "enroll", ident, mv, now)
        merged = {k.decode(): v for k, v in h.items()} | fields
        if crop_blob is not None:
            merged["crops"] = int(merged.get("crops", 0)) + n
        return self._identity(ident, {k.encode(): _b(v) for k, v in merged.items()})

    def _enroll_many(self, people: list[tuple[str, np.ndarray]], model_version: str) -> list[Identity]:
        names = [name for name, _ in people]
        dim = people[0][1].shape[1]
        if any(emb.shape[1] != dim for _, emb in people):
            raise InputError("enroll_many: every person's embeddings must have the same dimension")
        batch = uuid.uuid4().hex

        def tx(pipe: Pipeline) -> list[Identity | None]:
            dtype, new_model = self._checked_model(pipe, model_version, dim)
            found = pipe.hmget(self._names(), names)
            done: dict[str, Identity] = {}  # written by an earlier attempt whose reply was lost
            for name, existing in zip(names, found, strict=True):
                if existing is not None and pipe.hexists(self._emb(model_version, _s(existing)), batch):
                    done[name] = self._identity(_s(existing), pipe.hgetall(self._ident(_s(existing))))
            now = time.time()
            pipe.multi()
            if new_model:
                pipe.hset(self._model(model_version), mapping={"dim": dim, "dtype": dtype.name})
            pipe.sadd(self.key("models"), model_version)
            out: list[Identity | None] = []
            for (name, emb), existing in zip(people, found, strict=True):
                if existing is not None:  # already there: enrolled one by one below, unless done
                    out.append(done.get(name))
                    continue
                ident = uuid.uuid4().hex
                fields: dict[str, Any] = {"name": name, "created": repr(now), "updated": repr(now)}
                fields |= {"metadata": "{}", "crops": 0, f"rows:{model_version}": len(emb)}
                pipe.hset(self._names(), name, ident)
                pipe.hset(self._ident(ident), mapping=cast(Any, fields))
                pipe.hset(self._emb(model_version, ident), batch, self._pack(emb, dtype))
                pipe.sadd(self._members(model_version), ident)
                self._log(pipe, "enroll", ident, model_version, now)
                out.append(self._identity(ident, {k.encode(): _b(v) for k, v in fields.items()}))
            return out

        created = self._tx(tx, self._names(), self._model(model_version))
        return [
            made if made is not None else self._enroll(name, emb, model_version, None, None, False)
            for (name, emb), made in zip(people, created, strict=True)
        ]

    # --- erasure and reads --------------------------------------------------------------------------
    def _delete(self, name: str) -> Identity:
        erased: list[Identity] = []  # what an earlier attempt erased, if its reply was lost

        def tx(pipe: Pipeline) -> Identity:
            found = pipe.hget(self._names(), name)
            if found is None:
                if erased:
                    return erased[-1]
                raise UnknownIdentity(f"no identity named {name!r} in the gallery; nothing to delete")
            ident = _s(found)
            pipe.watch(self._ident(ident))
            identity = self._identity(ident, pipe.hgetall(self._ident(ident)))
            pipe.multi()
            pipe.hdel(self._names(), name)
            keys = [self._emb(mv, ident) for mv in identity.embeddings]
            pipe.delete(self._ident(ident), self._crops_key(ident), *keys)
            for mv in identity.embeddings:
                pipe.srem(self._members(mv), ident)
            self._log(pipe, "delete", ident, "", time.time())
            erased.append(identity)
            return identity

        return self._tx(tx, self._names())

    def _get(self, name: str) -> Identity:
        ident = self._id_of(name)
        h = self._call(lambda: self._r.hgetall(self._ident(ident)))
        if not h:
            raise UnknownIdentity(f"identity {name!r} was deleted while being read")
        return self._identity(ident, h)

    def _list(self) -> list[Identity]:
        names = self._call(lambda: self._r.hgetall(self._names()))
        ids = sorted({_s(v) for v in names.values()})

        def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for ident in ids:
                pipe.hgetall(self._ident(ident))
            return pipe.execute()

        found = [self._identity(i, h) for i, h in zip(ids, self._call(read), strict=True) if h]
        return sorted(found, key=lambda ident: ident.name)

    def _set_metadata(self, name: str, metadata: dict[str, Any]) -> Identity:
        def tx(pipe: Pipeline) -> Identity:
            found = pipe.hget(self._names(), name)
            if found is None:
                raise UnknownIdentity(f"no identity named {name!r} in the gallery")
            ident, now = _s(found), time.time()
            pipe.watch(self._ident(ident))
            h = pipe.hgetall(self._ident(ident))
            pipe.multi()
            pipe.hset(self._ident(ident), mapping={"metadata": json.dumps(metadata), "updated": repr(now)})
            self._log(pipe, "update", ident, "", now)
            h |= {b"metadata": json.dumps(metadata).encode(), b"updated": repr(now).encode()}
            return self._identity(ident, h)

        return self._tx(tx, self._names())

    def _embeddings(self, name: str, model_version: str) -> np.ndarray:
        ident = self._id_of(name)
        info = self._call(lambda: self._model_info(self._r, model_version))
        blobs = self._call(lambda: self._r.hvals(self._emb(model_version, ident)))
        if info is None or not blobs:
            raise UnknownIdentity(f"{name!r} has no embeddings for model version {model_version!r}")
        rows = self._unpack(blobs, *info)
        return dequantize(rows) if rows.dtype == np.int8 else rows.astype(np.float32)

    def _crops(self, name: str) -> list[np.ndarray]:
        ident = self._id_of(name)
        blobs = self._call(lambda: self._r.hvals(self._crops_key(ident)))
        return [np.load(io.BytesIO(cast(bytes, b)), allow_pickle=False) for b in blobs]

    def _model_versions(self) -> dict[str, int]:
        mvs = sorted(_s(m) for m in self._call(lambda: self._r.smembers(self.key("models"))))
        out = {}
        for mv in mvs:
            info = self._call(lambda mv=mv: self._model_info(self._r, mv))  # type: ignore[misc]
            if info is not None:
                out[mv] = info[0]
        return out

    # --- unknown faces ------------------------------------------------------------------------------
    def _add_unknown(self, embedding: np.ndarray, model_version: str, meta: dict[str, Any]) -> str:
        uid = _unknown_id_prefix(time.time()) + secrets.token_hex(4)
        meta = {"time": time.time(), **meta}

        def tx(pipe: Pipeline) -> str:
            dtype, new_model = self._checked_model(pipe, model_version, embedding.shape[1])
            pipe.multi()
            if new_model:
                pipe.hset(
                    self._model(model_version), mapping={"dim": embedding.shape[1], "dtype": dtype.name}
                )
            pipe.sadd(self.key("models"), model_version)
            pipe.hset(self.key("unknown", model_version), uid, self._pack(embedding, dtype))
            pipe.hset(self.key("unknown", model_version, "meta"), uid, json.dumps(meta))
            return uid

        return self._tx(tx, self._model(model_version))

    def _unknowns(self, model_version: str) -> Unknowns:
        info = self._call(lambda: self._model_info(self._r, model_version))
        blobs = self._call(lambda: self._r.hgetall(self.key("unknown", model_version)))
        metas = self._call(lambda: self._r.hgetall(self.key("unknown", model_version, "meta")))
        ids = sorted(_s(k) for k in blobs)
        if info is None or not ids:
            return Unknowns(
                ids=[], embeddings=np.zeros((0, 0 if info is None else info[0]), np.float32), meta=[]
            )
        rows = self._unpack([blobs[cast(Any, i.encode())] for i in ids], *info)
        emb = dequantize(rows) if rows.dtype == np.int8 else rows.astype(np.float32)
        meta = [json.loads(metas.get(i.encode(), b"{}")) for i in ids]
        return Unknowns(ids=ids, embeddings=emb, meta=meta)

    def _delete_unknowns(self, model_version: str, ids: list[str]) -> int:
        if not ids:
            return 0

        def run() -> int:
            pipe = self._r.pipeline(transaction=True)
            pipe.hdel(self.key("unknown", model_version), *ids)
            pipe.hdel(self.key("unknown", model_version, "meta"), *ids)
            return int(pipe.execute()[0])

        return self._call(run)

    def _forget_unknowns(self, before: float) -> int:
        cutoff = _unknown_id_prefix(before)  # ids start with their time: older ones sort before it

        def run() -> int:
            gone = 0
            for mv in sorted(_s(m) for m in self._r.smembers(self.key("models"))):
                key = self.key("unknown", mv)
                old = [uid for uid in map(_s, self._r.hkeys(key)) if uid < cutoff]
                for start in range(0, len(old), 1000):
                    pipe = self._r.pipeline(transaction=True)
                    pipe.hdel(key, *old[start : start + 1000])
                    pipe.hdel(self.key("unknown", mv, "meta"), *old[start : start + 1000])
                    gone += int(pipe.execute()[0])
            return gone

        return self._call(run)

    def _promote(
        self, ids: list[str], name: str, model_version: str, metadata: dict[str, Any] | None
    ) -> Identity:
        batch = uuid.uuid4().hex
        unknown_key = self.key("unknown", model_version)

        def tx(pipe: Pipeline) -> Identity:
            info = self._model_info(pipe, model_version)
            blobs = pipe.hmget(unknown_key, ids)
            missing = [i for i, b in zip(ids, blobs, strict=True) if b is None]
            if info is None or missing:
                raise GalleryError(
                    f"unknown faces {missing or ids} of model version {model_version!r} no longer exist "
                    "(promoted or deleted meanwhile); cluster again"
                )

            def drop_unknowns(p: Pipeline) -> None:
                p.hdel(unknown_key, *ids)
                p.hdel(self.key("unknown", model_version, "meta"), *ids)

            packed = b"".join(cast(list[bytes], blobs))
            return self._write_rows(
                pipe, name, model_version, batch, packed, len(ids), (info[0], info[1], False),
                metadata, False, None, drop_unknowns,
            )  # fmt: skip

        return self._tx(tx, self._names(), self._model(model_version), unknown_key)

    # --- replicas -----------------------------------------------------------------------------------
    def _rows_of(self, ids: list[str], mv: str, info: tuple[int, np.dtype[Any]]) -> list[IdentityRows]:
        def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for ident in ids:
                pipe.hget(self._ident(ident), "name")
                pipe.hvals(self._emb(mv, ident))
            return pipe.execute()

        replies = self._call(read)
        out = []
        for i, ident in enumerate(ids):
            name, blobs = replies[2 * i], replies[2 * i + 1]
            if name is not None and blobs:
                out.append(IdentityRows(ident, _s(name), self._unpack(blobs, *info)))
        return out

    def _snapshot(self, model_version: str, batch_size: int) -> Iterator[list[IdentityRows]]:
        info = self._call(lambda: self._model_info(self._r, model_version))
        if info is None:
            return
        cursor: int = 0
        while True:
            cursor, members = self._call(
                lambda c=cursor: self._r.sscan(self._members(model_version), c, count=batch_size)  # type: ignore[misc]
            )
            if members:
                yield self._rows_of([_s(m) for m in members], model_version, info)
            if cursor == 0:
                return

    def _fetch(self, identity_ids: list[str], model_version: str) -> dict[str, IdentityRows]:
        info = self._call(lambda: self._model_info(self._r, model_version))
        if info is None or not identity_ids:
            return {}
        return {r.identity_id: r for r in self._rows_of(identity_ids, model_version, info)}

    def _changes_since(self, cursor: str, count: int, block_ms: int | None) -> Changes:
        key = self._changes()
        if block_ms:
            self._call(lambda: self._r.xread({key: cursor}, count=1, block=block_ms))

        def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=True)
            pipe.xrange(key, min=f"({cursor}", max="+", count=count)
            pipe.xinfo_stream(key)
            return pipe.execute(raise_on_error=False)

        entries, info = self._call(read)
        if isinstance(entries, Exception):
            raise GalleryError(f"cannot read the change log {key}: {entries}")
        events = [self._event(_s(sid), fields) for sid, fields in entries]
        return Changes(events, events[-1].stream_id if events else cursor, self._gap(cursor, info))

    @staticmethod
    def _gap(cursor: str, info: Any) -> bool:
        """Whether entries after ``cursor`` are gone. Trimming removes the oldest entries, so while the
        cursor's own entry is still in the log nothing after it is missing; once it was trimmed, the
        replica lagged by about ``changelog_maxlen`` entries and reloads (possibly once too often)."""
        if isinstance(info, Exception):  # no stream: nothing logged yet, or the log was wiped
            return cursor != "0-0"
        at = _stream_key(cursor)
        deleted = info.get("max-deleted-entry-id")  # XDEL (Redis >= 7); trimming does not set it
        if deleted is not None and at < _stream_key(_s(deleted)):
            return True
        first = info.get("first-entry")
        if first is None:  # the stream exists but is empty: everything was removed
            return at < _stream_key(_s(info.get("last-generated-id", b"0-0")))
        if at >= _stream_key(_s(first[0])):
            return False
        if cursor == "0-0" and info.get("entries-added") is not None:  # Redis >= 7: exact
            return int(info["entries-added"]) > int(info["length"])
        return True

    @staticmethod
    def _event(stream_id: str, fields: dict[bytes, bytes]) -> ChangeEvent:
        return ChangeEvent(
            stream_id=stream_id,
            op=cast(Op, _s(fields.get(b"op"))),
            identity_id=_s(fields.get(b"id")),
            model_version=_s(fields.get(b"model")),
            time=float(fields.get(b"time", 0.0)),
        )

    def _head(self) -> str:
        def read() -> str:
            try:
                return _s(self._r.xinfo_stream(self._changes())["last-generated-id"])
            except redis.ResponseError:  # no stream yet
                return "0-0"

        return self._call(read)

    # --- maintenance --------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Consistency problems of the stored gallery (empty = consistent): a torn write shows here."""
        problems: list[str] = []
        names = {_s(k): _s(v) for k, v in self._call(lambda: self._r.hgetall(self._names())).items()}
        versions = self._model_versions()
        for name, ident in names.items():
            h = self._call(lambda ident=ident: self._r.hgetall(self._ident(ident)))  # type: ignore[misc]
            if _s(h.get(b"name")) != name:
                problems.append(f"{name!r}: identity hash {ident} missing or names another person")
                continue
            for mv, n in self._identity(ident, h).embeddings.items():
                blobs = self._call(lambda mv=mv, ident=ident: self._r.hvals(self._emb(mv, ident)))  # type: ignore[misc]
                info = self._call(lambda mv=mv: self._model_info(self._r, mv))  # type: ignore[misc]
                stored = 0 if info is None else len(self._unpack(blobs, *info))
                member = self._call(lambda mv=mv, ident=ident: self._r.sismember(self._members(mv), ident))  # type: ignore[misc]
                if stored != n or not member:
                    problems.append(
                        f"{name!r} {mv}: {stored} rows stored, {n} recorded, member={bool(member)}"
                    )
        known = set(names.values())
        for mv in versions:
            members = {_s(m) for m in self._call(lambda mv=mv: self._r.smembers(self._members(mv)))}  # type: ignore[misc]
            problems += [f"{mv}: member {m} has no identity" for m in sorted(members - known)]
        for raw in self._call(lambda: list(self._r.scan_iter(match=self.key("*"), count=1000))):
            parts = _s(raw).split(":")
            owner = (
                parts[-1] if parts[1] in ("emb", "crops") else parts[2] if parts[1] == "identity" else None
            )
            if owner is not None and owner not in known:
                problems.append(f"orphan key {_s(raw)}")
        return problems


def _batch_id(name: str, model_version: str, embeddings: np.ndarray, replace: bool) -> str:
    """The same rows enrolled for the same person get the same id: a retry after a lost reply, or a
    command run again after it failed part-way, stores them once."""
    digest = hashlib.sha256(f"{name}\0{model_version}\0{replace}\0".encode())
    digest.update(np.ascontiguousarray(embeddings, np.float32).tobytes())
    return digest.hexdigest()[:32]


def _unknown_id_prefix(when: float) -> str:
    """An unknown face's id starts with its time in microseconds (14 hex digits): ids sort by time."""
    return f"{int(when * 1e6):014x}"
