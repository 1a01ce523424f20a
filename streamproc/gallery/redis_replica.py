"""What replicas read from the Redis gallery: snapshots, rows by id, the change log; and ``verify``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import redis

from streamproc.errors import GalleryError
from streamproc.gallery.base import ChangeEvent, Changes, IdentityRows, Op
from streamproc.gallery.redis_base import RedisBase, as_str, stream_key

# KEYS: identity hash, embeddings hash, ... per id -> name (nil when erased), the packed rows joined
_ROWS_LUA = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('HGET', KEYS[i], 'name')
  out[#out + 1] = table.concat(redis.call('HVALS', KEYS[i + 1]))
end
return out
"""

# KEYS: the members set; ARGV: SSCAN cursor, count, identity key prefix, embeddings key prefix.
# Keys read per member are derived from the member ids (a standalone server; not for Redis Cluster).
_SCAN_LUA = """
local scan = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local ids, names, sizes, blobs = {}, {}, {}, {}
for i, id in ipairs(scan[2]) do
  local blob = table.concat(redis.call('HVALS', ARGV[4] .. id))
  ids[i] = id
  names[i] = redis.call('HGET', ARGV[3] .. id, 'name') or ''
  sizes[i] = #blob
  blobs[i] = blob
end
return {scan[1], table.concat(ids, '\\n'), table.concat(names, '\\n'), table.concat(sizes, ','), table.concat(blobs)}
"""


class RedisReplicaReads(RedisBase):
    """Replica-side reads of ``RedisGalleryStore`` (not used alone)."""

    _rows_script: Any = None  # the registered scripts, made on first use
    _scan_script: Any = None

    # --- replicas -----------------------------------------------------------------------------------
    def _rows_of(self, ids: list[str], mv: str, info: tuple[int, np.dtype[Any]]) -> list[IdentityRows]:
        """Name and rows of each id, read by one server-side script (one round trip, one reply element
        per field instead of one per enrollment batch: a 1M snapshot is ~500 calls)."""
        if self._rows_script is None:
            self._rows_script = self._r.register_script(_ROWS_LUA)
        keys = [key for ident in ids for key in (self._ident(ident), self._emb(mv, ident))]
        script = self._rows_script
        replies = self._call(lambda: script(keys=keys)) if keys else []
        dim, dtype = info
        out = []
        for i, ident in enumerate(ids):
            name, blob = replies[2 * i], replies[2 * i + 1]
            if name is not None and blob:
                out.append(IdentityRows(ident, as_str(name), np.frombuffer(blob, dtype).reshape(-1, dim)))
        return out

    def _snapshot(self, model_version: str, batch_size: int) -> Iterator[list[IdentityRows]]:
        """SSCAN batches, each read by one script call that returns five strings (cursor, ids, names,
        byte sizes, rows joined): a 1M snapshot is ~500 calls, parsed without a reply element per id."""
        info = self._call(lambda: self._model_info(self._r, model_version))
        if info is None:
            return
        if self._scan_script is None:
            self._scan_script = self._r.register_script(_SCAN_LUA)
        script, members = self._scan_script, self._members(model_version)
        args = [batch_size, self.key("identity", ""), self.key("emb", model_version, "")]

        def read(cursor: bytes) -> list[bytes]:
            return self._call(lambda: script(keys=[members], args=[cursor, *args]))

        with ThreadPoolExecutor(1, thread_name_prefix="gallery-snapshot") as reader:
            pending = reader.submit(read, b"0")
            while True:  # the server reads the next batch while this thread unpacks the current one
                cursor, ids, names, sizes, blob = pending.result()
                if cursor != b"0":
                    pending = reader.submit(read, cursor)
                if ids:
                    yield self._split_rows(ids, names, sizes, blob, *info)
                if cursor == b"0":
                    return

    @staticmethod
    def _split_rows(
        ids: bytes, names: bytes, sizes: bytes, blob: bytes, dim: int, dtype: np.dtype[Any]
    ) -> list[IdentityRows]:
        rows = np.frombuffer(blob, dtype).reshape(-1, dim)
        counts = np.array(sizes.split(b","), "S").astype(np.int64) // (dim * dtype.itemsize)
        ends = np.cumsum(counts).tolist()
        return [
            IdentityRows(ident, name, rows[end - c : end])
            for ident, name, c, end in zip(
                ids.decode().split("\n"), names.decode().split("\n"), counts.tolist(), ends, strict=True
            )
            if c and name  # erased between the scan and the read
        ]

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
        events = [self._event(as_str(sid), fields) for sid, fields in entries]
        return Changes(events, events[-1].stream_id if events else cursor, self._gap(cursor, info))

    @staticmethod
    def _gap(cursor: str, info: Any) -> bool:
        """Whether entries after ``cursor`` are gone. Trimming removes the oldest entries, so while the
        cursor's own entry is still in the log nothing after it is missing; once it was trimmed, the
        replica lagged by about ``changelog_maxlen`` entries and reloads (possibly once too often)."""
        if isinstance(info, Exception):  # no stream: nothing logged yet, or the log was wiped
            return cursor != "0-0"
        at = stream_key(cursor)
        deleted = info.get("max-deleted-entry-id")  # XDEL (Redis >= 7); trimming does not set it
        if deleted is not None and at < stream_key(as_str(deleted)):
            return True
        first = info.get("first-entry")
        if first is None:  # the stream exists but is empty: everything was removed
            return at < stream_key(as_str(info.get("last-generated-id", b"0-0")))
        if at >= stream_key(as_str(first[0])):
            return False
        if cursor == "0-0" and info.get("entries-added") is not None:  # Redis >= 7: exact
            return int(info["entries-added"]) > int(info["length"])
        return True

    @staticmethod
    def _event(stream_id: str, fields: dict[bytes, bytes]) -> ChangeEvent:
        return ChangeEvent(
            stream_id=stream_id,
            op=cast(Op, as_str(fields.get(b"op"))),
            identity_id=as_str(fields.get(b"id")),
            model_version=as_str(fields.get(b"model")),
            time=float(fields.get(b"time", 0.0)),
        )

    def _head(self) -> str:
        def read() -> str:
            try:
                return as_str(self._r.xinfo_stream(self._changes())["last-generated-id"])
            except redis.ResponseError:  # no stream yet
                return "0-0"

        return self._call(read)

    # --- maintenance --------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Consistency problems of the stored gallery (empty = consistent): a torn write shows here."""
        problems: list[str] = []
        names = {as_str(k): as_str(v) for k, v in self._call(lambda: self._r.hgetall(self._names())).items()}
        versions = self._model_versions()
        for name, ident in names.items():
            h = self._call(lambda ident=ident: self._r.hgetall(self._ident(ident)))  # type: ignore[misc]
            if as_str(h.get(b"name")) != name:
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
            members = {as_str(m) for m in self._call(lambda mv=mv: self._r.smembers(self._members(mv)))}  # type: ignore[misc]
            problems += [f"{mv}: member {m} has no identity" for m in sorted(members - known)]
        for raw in self._call(lambda: list(self._r.scan_iter(match=self.key("*"), count=1000))):
            parts = as_str(raw).split(":")
            owner = (
                parts[-1] if parts[1] in ("emb", "crops") else parts[2] if parts[1] == "identity" else None
            )
            if owner is not None and owner not in known:
                problems.append(f"orphan key {as_str(raw)}")
        return problems
