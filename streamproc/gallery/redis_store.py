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
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from redis.client import Pipeline

from streamproc import env
from streamproc.errors import GalleryError, InputError, UnknownIdentity
from streamproc.gallery.base import Identity, Unknowns
from streamproc.gallery.config import GalleryConfig
from streamproc.gallery.embedded import connect
from streamproc.gallery.quantize import dequantize
from streamproc.gallery.redis_base import as_bytes, as_str
from streamproc.gallery.redis_replica import RedisReplicaReads
from streamproc.retry import Retry, server_retry


class RedisGalleryStore(RedisReplicaReads):
    """The gallery in Redis; see the module docstring for the key layout.

    Example:
        >>> store = RedisGalleryStore(redis.Redis.from_url("redis://localhost:6379/0"))  # doctest: +SKIP
        >>> store.enroll("Ada", emb, "facenet-v1").embeddings                             # doctest: +SKIP
        {'facenet-v1': 3}
    """

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
        ident = as_str(found) if found is not None else uuid.uuid4().hex
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
        return self._identity(ident, {k.encode(): as_bytes(v) for k, v in merged.items()})

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
                if existing is not None and pipe.hexists(self._emb(model_version, as_str(existing)), batch):
                    done[name] = self._identity(as_str(existing), pipe.hgetall(self._ident(as_str(existing))))
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
                out.append(self._identity(ident, {k.encode(): as_bytes(v) for k, v in fields.items()}))
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
            ident = as_str(found)
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
        ids = sorted({as_str(v) for v in names.values()})

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
            ident, now = as_str(found), time.time()
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
        mvs = sorted(as_str(m) for m in self._call(lambda: self._r.smembers(self.key("models"))))
        out = {}
        for mv in mvs:
            info = self._call(lambda mv=mv: self._model_info(self._r, mv))  # type: ignore[misc]
            if info is not None:
                out[mv] = info[0]
        return out

    # --- open-set calibration ------------------------------------------------------------------------
    def calibration(self, model_version: str) -> dict[str, Any] | None:
        raw = self._call(lambda: self._r.get(self.key("calibration", model_version)))
        return None if raw is None else cast(dict[str, Any], json.loads(as_str(raw)))

    def set_calibration(self, model_version: str, calibration: dict[str, Any]) -> None:
        value = json.dumps(calibration, sort_keys=True)
        self._call(lambda: self._r.set(self.key("calibration", model_version), value))

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
        ids = sorted(as_str(k) for k in blobs)
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
            for mv in sorted(as_str(m) for m in self._r.smembers(self.key("models"))):
                key = self.key("unknown", mv)
                old = [uid for uid in map(as_str, self._r.hkeys(key)) if uid < cutoff]
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


def _batch_id(name: str, model_version: str, embeddings: np.ndarray, replace: bool) -> str:
    """The same rows enrolled for the same person get the same id: a retry after a lost reply, or a
    command run again after it failed part-way, stores them once."""
    digest = hashlib.sha256(f"{name}\0{model_version}\0{replace}\0".encode())
    digest.update(np.ascontiguousarray(embeddings, np.float32).tobytes())
    return digest.hexdigest()[:32]


def _unknown_id_prefix(when: float) -> str:
    """An unknown face's id starts with its time in microseconds (14 hex digits): ids sort by time."""
    return f"{int(when * 1e6):014x}"
