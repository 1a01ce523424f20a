"""Rolling model upgrades: ``promote`` a new model version, re-embed the gallery, switch, roll back.

``promote(store, "v2")``:

1. checks that v2 probes may be matched against the gallery in service (a calibrated harmonic
   pair, ``streamproc.models.compat``): otherwise it refuses, and nothing changes;
2. writes the ``Serving`` record (``streamproc.runtime.control``): running pipelines start v2
   embedding actors, shift new work to them and drain the v1 ones; v2 probes are matched against
   the v1 gallery through the pair threshold;
3. re-embeds every identity's retained enrollment crops with v2 into the gallery's v2 namespace
   (MTCNN finds the landmarks again inside each crop, for models that warp by them), in batches
   across identities; a re-run after a crash skips identities whose v2 rows match their crops;
4. when every identity has v2 rows, writes ``gallery = v2``: the pipelines switch index between two
   batches. Identities without retained crops keep the gallery on v1 (listed in the result).

``promote(store, rollback=True)`` writes back the previous model and gallery; the v1 rows were never
touched, so nothing needs re-embedding.

Example:
    >>> result = promote(store, "v2")  # doctest: +SKIP
    >>> result.serving.gallery, result.missing  # doctest: +SKIP
    ('v2', [])
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from streamproc.config import DetectorConfig
from streamproc.detect import Detector, build_detector
from streamproc.errors import ConfigError, IncompatibleModels, UnknownIdentity
from streamproc.gallery.redis_store import RedisGalleryStore
from streamproc.models import compat, registry
from streamproc.models.embedder import Embedder
from streamproc.runtime.control import ModelControl, Serving
from streamproc.types import Crops

log = logging.getLogger(__name__)


@dataclass
class ReembedReport:
    reembedded: int = 0  # identities given rows of the new version now
    resumed: int = 0  # identities that already had them (an interrupted run got this far)
    missing: list[str] = field(default_factory=list)  # identities without retained crops


@dataclass
class PromoteResult:
    serving: Serving
    reembedded: int = 0  # identities given rows of the new version
    missing: list[str] = field(default_factory=list)  # identities without retained crops
    resumed: int = 0  # identities re-embedded by an earlier, interrupted promote


def serving_now(control: ModelControl, default_model: str) -> Serving:
    """The record in Redis, or what a pipeline configured with ``default_model`` serves."""
    current = control.get()
    if current is not None:
        return current
    version = registry.peek_card(default_model).version
    return Serving(default_model, version, gallery=version)


def _landmarks(crops: np.ndarray, detector: Detector) -> Crops:
    """``crops`` with the landmarks ``detector`` finds inside each (NaN where it finds no face)."""
    from streamproc.align import pick_face

    points = np.full((len(crops), 5, 2), np.nan, np.float32)
    for i, faces in enumerate(detector(list(crops))):
        row = pick_face(faces, crops[i].shape, "center")
        if row is not None:
            points[i] = np.asarray(faces.landmarks)[row]  # detected in the crop: crop coordinates
    return Crops(np.ascontiguousarray(crops), points)


def _done(store: RedisGalleryStore, name: str, version: str, faces: int) -> bool:
    """True when ``name`` already has one ``version`` row per retained crop (an earlier, interrupted
    re-embedding got this far: each identity's rows are replaced in one transaction)."""
    try:
        return len(store.embeddings(name, version)) == faces
    except UnknownIdentity:
        return False


def reembed(
    store: RedisGalleryStore,
    model: str,
    progress: bool = True,
    on_identity: Callable[[str], None] | None = None,
    batch_faces: int = 256,
) -> ReembedReport:
    """Embed every identity's retained crops with ``model`` into its version's namespace (replacing).

    Resumable: identities whose rows of that version already match their crops are skipped. Crops
    are embedded in batches of about ``batch_faces`` faces across identities, with a progress bar.
    """
    embedder = Embedder.from_model(*registry.load(model))
    detector = (
        build_detector(DetectorConfig(kind="mtcnn")) if embedder.card.alignment == "similarity" else None
    )
    report = ReembedReport()
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        crops = np.concatenate([c for _, c in pending])
        adapted = Crops(crops) if detector is None else _landmarks(crops, detector)
        rows, start = embedder(adapted), 0
        for person, part in pending:
            store.enroll(person, rows[start : start + len(part)], embedder.version, replace=True)
            start += len(part)
            report.reembedded += 1
            if on_identity is not None:
                on_identity(person)
        pending.clear()

    people = store.list_identities()
    bar = tqdm(people, desc=f"re-embedding with {embedder.version}", file=sys.stderr, disable=not progress)
    for person in bar:
        parts = store.crops(person.name)
        if not parts:
            report.missing.append(person.name)
            continue
        crops = np.concatenate(parts)
        if _done(store, person.name, embedder.version, len(crops)):
            report.resumed += 1
            continue
        pending.append((person.name, crops))
        if sum(len(c) for _, c in pending) >= batch_faces:
            flush()
    flush()
    return report


def promote(
    store: RedisGalleryStore,
    target: str | None = None,
    *,
    default_model: str = registry.DEFAULT_MODEL,
    rollback: bool = False,
    reembed_gallery: bool = True,
    progress: bool = True,
) -> PromoteResult:
    """Move the pipelines to ``target`` (a name or version), or back with ``rollback`` (module docstring)."""
    control = ModelControl(store)
    current = serving_now(control, default_model)
    if rollback:
        if not current.previous_model:
            raise ConfigError("nothing to roll back: no model was promoted on this gallery")
        version = registry.peek_card(current.previous_model).version
        back = Serving(
            current.previous_model,
            version,
            current.previous_gallery or version,
            current.model,
            current.gallery,
        )
        return PromoteResult(control.set(back))
    if target is None:
        raise ConfigError("promote: name the model (or version) to promote, or pass --rollback")
    name = registry.name_for(target)
    card = registry.peek_card(name)
    old = registry.peek_card(current.model)
    if card.embedding_dim != old.embedding_dim:
        raise IncompatibleModels(
            f"{card.key} makes {card.embedding_dim}-D embeddings, the model in service {old.key} "
            f"{old.embedding_dim}-D: a rolling upgrade needs a compatible (harmonic) model"
        )
    threshold = compat.threshold(card.version, current.gallery)  # raises for an incompatible pair
    log.info(
        "promoting %s: %s probes vs the %s gallery at threshold %.3f",
        card.key,
        card.version,
        current.gallery,
        threshold,
    )
    serving = control.set(Serving(name, card.version, current.gallery, current.model, current.gallery))
    result = PromoteResult(serving)
    if not reembed_gallery:
        return result
    report = reembed(store, name, progress)
    result.reembedded, result.missing, result.resumed = report.reembedded, report.missing, report.resumed
    if result.missing:
        log.warning(
            "%d identities have no retained crops (%s...): the gallery stays on %s, matched through the "
            "harmonic pair",
            len(result.missing),
            ", ".join(result.missing[:3]),
            current.gallery,
        )
        return result
    result.serving = control.set(Serving(name, card.version, card.version, current.model, current.gallery))
    return result
