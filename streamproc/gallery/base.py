"""The gallery store interface: the base class checks every input, a subclass stores it.

A store keeps identities (a unique display name, free metadata, times), their embeddings per model
version, optional aligned enrollment crops, unknown faces waiting to be clustered, and a change log
that matcher replicas follow. Embeddings handed to a store are ``(N, D)`` float rows of unit length
(within 1e-3; they are renormalised exactly before storage).

Subclasses implement the ``_``-prefixed abstract methods and may assume checked, normalised input.

>>> check_name("  Ada Lovelace ")
'Ada Lovelace'
>>> check_embeddings(np.eye(2, 4, dtype=np.float32)).shape
(2, 4)
"""

from __future__ import annotations

import abc
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streamproc.errors import GalleryError, InputError

NORM_TOLERANCE = 1e-3
MAX_NAME_CHARS = 200
_MODEL_VERSION_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,100}$")

Op = Literal["enroll", "update", "delete"]


@dataclass(frozen=True)
class Identity:
    """A person in the gallery.

    ``embeddings`` maps each model version to the number of stored rows; ``crops`` counts the retained
    aligned enrollment crops (0 unless ``retain_crops`` is on).

    Example:
        >>> Identity(id="3f2a", name="Ada", embeddings={"facenet-v1": 3}).embeddings["facenet-v1"]
        3
    """

    id: str
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    embeddings: dict[str, int] = field(default_factory=dict)
    crops: int = 0


@dataclass(frozen=True, slots=True)
class Match:
    """One gallery candidate for a probe: who, and how far (squared L2 of unit vectors, in [0, 4]).

    Example:
        >>> Match("3f2a", "Ada", 0.42).within(1.1)
        True
    """

    identity_id: str
    name: str
    distance: float

    def within(self, threshold: float) -> bool:
        return self.distance <= threshold


def named(matches: Sequence[Match], threshold: float, margin: float = 0.0) -> Match | None:
    """Who a probe is named as, from its nearest people (closest first): the nearest when it is within
    ``threshold`` and at least ``margin`` closer than the next person; else None (unknown).

    The margin keeps a face that looks about equally like two enrolled people from being given either
    name, and a stranger's nearest people are usually such a near-tie, so at the same fraction of
    strangers named the threshold can be looser (``streamproc.gallery.calibrate``).

    Example:
        >>> near = [Match("a", "Ada", 0.40), Match("b", "Bo", 0.45)]
        >>> named(near, 0.6).name, named(near, 0.6, margin=0.1)
        ('Ada', None)
    """
    if not matches or not matches[0].within(threshold):
        return None
    if len(matches) > 1 and matches[1].distance - matches[0].distance < margin:
        return None
    return matches[0]


@dataclass(frozen=True)
class ChangeEvent:
    """One entry of the change log.

    ``op`` is ``enroll`` (rows added or replaced for ``model_version``), ``update`` (name or metadata
    changed) or ``delete`` (erasure: every model version; ``model_version`` is empty). The log holds
    the identity's pseudonymous id only, never its name or embeddings, so an erasure erases.

    Example:
        >>> ChangeEvent("1-0", "delete", "3f2a", "").affects("facenet-v1")
        True
    """

    stream_id: str
    op: Op
    identity_id: str
    model_version: str
    time: float = 0.0

    def affects(self, model_version: str) -> bool:
        return self.model_version in ("", model_version)


@dataclass(frozen=True)
class Changes:
    """Change-log entries after a cursor.

    ``cursor`` is the id to pass to the next ``changes_since``. ``gap`` is True when entries after the
    given cursor were trimmed from the log (``changelog_maxlen``): the caller missed changes and must
    reload a snapshot.

    Example:
        >>> Changes(events=[], cursor="0-0").gap
        False
    """

    events: list[ChangeEvent]
    cursor: str
    gap: bool = False


@dataclass(frozen=True)
class IdentityRows:
    """The rows of one identity under one model version, in the stored dtype (float32 or int8 codes)."""

    identity_id: str
    name: str
    rows: np.ndarray


@dataclass(frozen=True)
class Unknowns:
    """Unknown faces of one model version: ids, float32 unit embeddings ``(N, D)`` and metadata."""

    ids: list[str]
    embeddings: np.ndarray
    meta: list[dict[str, Any]]


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InputError(f"identity name: expected a string, got {type(name).__name__}")
    stripped = name.strip()
    if not stripped:
        raise InputError("identity name is empty: give the person's display name, e.g. 'Ada Lovelace'")
    if len(stripped) > MAX_NAME_CHARS:
        raise InputError(f"identity name: expected at most {MAX_NAME_CHARS} characters, got {len(stripped)}")
    if any(not ch.isprintable() for ch in stripped):
        raise InputError(f"identity name {stripped!r} contains control characters")
    return stripped


def check_model_version(model_version: object) -> str:
    if not isinstance(model_version, str) or not _MODEL_VERSION_RE.match(model_version):
        raise InputError(
            f"model version: expected 1-100 letters, digits, '_', '.', '+' or '-', got {model_version!r}"
        )
    return model_version


def check_embeddings(embeddings: object, *, what: str = "embeddings") -> np.ndarray:
    """``(N, D)`` finite float rows of unit length (N >= 1) -> exactly normalised float32 copy."""
    arr = np.asarray(embeddings)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what}: expected a non-empty (N, D) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what}: expected float32 embeddings, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what}: expected finite values, got NaN or inf")
    norms = np.linalg.norm(arr.astype(np.float64), axis=1)
    worst = float(np.max(np.abs(norms - 1.0)))
    if worst > NORM_TOLERANCE:
        raise InputError(
            f"{what}: expected L2-normalised rows (norm 1 +- {NORM_TOLERANCE}), got norms in "
            f"[{norms.min():.4f}, {norms.max():.4f}]; embed with the model's normalisation on"
        )
    return (arr.astype(np.float64) / norms[:, None]).astype(np.float32)


def check_crops(crops: object, rows: int) -> np.ndarray | None:
    if crops is None:
        return None
    arr = np.asarray(crops)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise InputError(f"crops: expected (N, H, W, 3) uint8 aligned faces, got {arr.dtype} {arr.shape}")
    if arr.shape[0] != rows:
        raise InputError(f"crops: expected one crop per embedding ({rows}), got {arr.shape[0]}")
    return np.ascontiguousarray(arr)


def check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InputError(f"metadata: expected a dict with string keys, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata: expected JSON-serialisable values ({exc})") from None
    return dict(metadata)


class GalleryStore(abc.ABC):
    """Where identities live. Public methods check their input and call the abstract ``_`` methods.

    Example (with the Redis implementation):
        >>> store = RedisGalleryStore.from_config(GalleryConfig())          # doctest: +SKIP
        >>> ada = store.enroll("Ada", emb, "facenet-v1")                      # doctest: +SKIP
        >>> store.delete("Ada").id == ada.id                                  # doctest: +SKIP
        True
    """

    # --- identities -------------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        model_version: str,
        crops: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> Identity:
        """Create ``name`` if new, then add (or with ``replace`` swap in) its rows for ``model_version``.

        ``metadata`` given for an existing identity replaces its metadata. One atomic write.
        """
        emb = check_embeddings(embeddings)
        return self._enroll(
            check_name(name),
            emb,
            check_model_version(model_version),
            check_crops(crops, len(emb)),
            None if metadata is None else check_metadata(metadata),
            replace,
        )

    def enroll_many(
        self, people: Sequence[tuple[str, np.ndarray]], model_version: str, *, batch_size: int = 500
    ) -> list[Identity]:
        """Bulk ``enroll`` (imports, re-embedding for a new model version): ``(name, embeddings)`` pairs.

        Each batch of ``batch_size`` people is one atomic write; returns identities in input order.
        """
        if batch_size < 1:
            raise InputError(f"enroll_many: expected batch_size >= 1, got {batch_size}")
        checked = [
            (check_name(name), check_embeddings(emb, what=f"embeddings of {name!r}")) for name, emb in people
        ]
        if len({name for name, _ in checked}) != len(checked):
            raise InputError("enroll_many: a name appears twice; merge its embeddings into one entry")
        mv = check_model_version(model_version)
        out: list[Identity] = []
        for start in range(0, len(checked), batch_size):
            out += self._enroll_many(checked[start : start + batch_size], mv)
        return out

    def delete(self, name: str) -> Identity:
        """Erase ``name``: every embedding and crop under every model version; logs the erasure."""
        return self._delete(check_name(name))

    def get(self, name: str) -> Identity:
        return self._get(check_name(name))

    def list_identities(self) -> list[Identity]:
        return self._list()

    def set_metadata(self, name: str, metadata: dict[str, Any]) -> Identity:
        return self._set_metadata(check_name(name), check_metadata(metadata))

    def embeddings(self, name: str, model_version: str) -> np.ndarray:
        """The float32 unit rows of ``name`` for ``model_version`` (int8 storage is dequantised)."""
        return self._embeddings(check_name(name), check_model_version(model_version))

    def crops(self, name: str) -> list[np.ndarray]:
        """Retained aligned crops of ``name``, one ``(N, H, W, C)`` uint8 array per enrollment."""
        return self._crops(check_name(name))

    def model_versions(self) -> dict[str, int]:
        """Model version -> embedding dimension, for every version with stored data."""
        return self._model_versions()

    # --- unknown faces ----------------------------------------------------------------------------
    def add_unknown(
        self, embedding: np.ndarray, model_version: str, meta: dict[str, Any] | None = None
    ) -> str:
        """Store one unrecognised face (``(D,)`` or ``(1, D)``) for clustering; returns its id."""
        emb = check_embeddings(np.asarray(embedding).reshape(1, -1), what="unknown embedding")
        return self._add_unknown(emb, check_model_version(model_version), check_metadata(meta))

    def unknowns(self, model_version: str) -> Unknowns:
        return self._unknowns(check_model_version(model_version))

    def delete_unknowns(self, model_version: str, ids: Sequence[str]) -> int:
        return self._delete_unknowns(check_model_version(model_version), list(ids))

    def forget_unknowns(self, older_than_s: float) -> int:
        """Erase the unknown faces of every model version stored more than ``older_than_s`` seconds
        ago (the retention limit of ``gallery.unknown_retention_s``); returns how many."""
        if not older_than_s >= 0:
            raise InputError(f"forget_unknowns: expected older_than_s >= 0, got {older_than_s}")
        return self._forget_unknowns(time.time() - older_than_s)

    def promote_unknowns(
        self,
        ids: Sequence[str],
        name: str,
        model_version: str,
        metadata: dict[str, Any] | None = None,
    ) -> Identity:
        """Enrol the unknown faces ``ids`` as ``name`` and remove them from the unknowns, atomically."""
        if not ids:
            raise InputError("promote: expected at least one unknown face id")
        return self._promote(
            list(dict.fromkeys(ids)),
            check_name(name),
            check_model_version(model_version),
            None if metadata is None else check_metadata(metadata),
        )

    # --- replicas -----------------------------------------------------------------------------------
    def snapshot(self, model_version: str, batch_size: int = 1000) -> Iterator[list[IdentityRows]]:
        """Every identity with rows under ``model_version``, in batches (stored dtype)."""
        if batch_size < 1:
            raise InputError(f"snapshot: expected batch_size >= 1, got {batch_size}")
        return self._snapshot(check_model_version(model_version), batch_size)

    def fetch(self, identity_ids: Sequence[str], model_version: str) -> dict[str, IdentityRows]:
        """Current rows of the given identities; ids without rows (erased) are absent."""
        return self._fetch(list(identity_ids), check_model_version(model_version))

    def changes_since(self, cursor: str, count: int = 10_000, block_ms: int | None = None) -> Changes:
        """Change-log entries after ``cursor`` (``"0-0"`` = from the start); may wait ``block_ms``."""
        if count < 1:
            raise InputError(f"changes_since: expected count >= 1, got {count}")
        return self._changes_since(cursor, count, block_ms)

    def head(self) -> str:
        """Cursor of the newest change-log entry (``"0-0"`` when empty): take it before a snapshot."""
        return self._head()

    # --- open-set calibration ------------------------------------------------------------------------
    def calibration(self, model_version: str) -> dict[str, Any] | None:
        """The stored open-set calibration of ``model_version``'s gallery (``Calibration.as_dict``)."""
        return None

    def set_calibration(self, model_version: str, calibration: dict[str, Any]) -> None:
        """Store the open-set calibration of ``model_version``'s gallery."""
        raise GalleryError(f"{type(self).__name__} keeps no calibrations")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what a subclass implements -----------------------------------------------------------------
    @abc.abstractmethod
    def _enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        model_version: str,
        crops: np.ndarray | None,
        metadata: dict[str, Any] | None,
        replace: bool,
    ) -> Identity: ...

    @abc.abstractmethod
    def _enroll_many(self, people: list[tuple[str, np.ndarray]], model_version: str) -> list[Identity]: ...

    @abc.abstractmethod
    def _delete(self, name: str) -> Identity: ...

    @abc.abstractmethod
    def _get(self, name: str) -> Identity: ...

    @abc.abstractmethod
    def _list(self) -> list[Identity]: ...

    @abc.abstractmethod
    def _set_metadata(self, name: str, metadata: dict[str, Any]) -> Identity: ...

    @abc.abstractmethod
    def _embeddings(self, name: str, model_version: str) -> np.ndarray: ...

    @abc.abstractmethod
    def _crops(self, name: str) -> list[np.ndarray]: ...

    @abc.abstractmethod
    def _model_versions(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def _add_unknown(self, embedding: np.ndarray, model_version: str, meta: dict[str, Any]) -> str: ...

    @abc.abstractmethod
    def _unknowns(self, model_version: str) -> Unknowns: ...

    @abc.abstractmethod
    def _delete_unknowns(self, model_version: str, ids: list[str]) -> int: ...

    @abc.abstractmethod
    def _forget_unknowns(self, before: float) -> int: ...

    @abc.abstractmethod
    def _promote(
        self, ids: list[str], name: str, model_version: str, metadata: dict[str, Any] | None
    ) -> Identity: ...

    @abc.abstractmethod
    def _snapshot(self, model_version: str, batch_size: int) -> Iterator[list[IdentityRows]]: ...

    @abc.abstractmethod
    def _fetch(self, identity_ids: list[str], model_version: str) -> dict[str, IdentityRows]: ...

    @abc.abstractmethod
    def _changes_since(self, cursor: str, count: int, block_ms: int | None) -> Changes: ...

    @abc.abstractmethod
    def _head(self) -> str: ...
