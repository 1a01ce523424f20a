"""Which model versions may be compared with which, and at what threshold.

Embeddings of two models live in different spaces unless one was trained to be compatible with
the other (harmonic embeddings, FaceNet section 7). The rules, for a probe embedded by model
version ``p`` and a gallery enrolled with version ``g``:

* ``p == g``: always comparable, at the threshold on ``p``'s card;
* otherwise comparable only when the pair was calibrated: a row in ``<cache>/models/compat.json``
  (written by ``streamproc eval compat --write``), or ``g`` in ``p``'s card ``compatible_with``
  with a threshold in its ``thresholds``, or ``p`` in ``g``'s ``compatible_with`` with a
  ``thresholds["as-gallery:<p>"]`` entry;
* anything else raises ``IncompatibleModels``: two spaces are never compared blindly.

A calibration in ``compat.json`` wins over a card's, so an operator can recalibrate at another
target FAR without rewriting checkpoints.

Example:
    >>> threshold("v1", "v1")  # doctest: +SKIP
    1.172
    >>> threshold("v2", "v1")  # doctest: +SKIP
    1.02
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamproc.errors import IncompatibleModels, ModelError
from streamproc.models import registry
from streamproc.models.checkpoint import ModelCard

AS_GALLERY = "as-gallery:"  # card.thresholds key prefix: this model's gallery, the named probe


@dataclass(frozen=True)
class PairCalibration:
    """One (probe version, gallery version) pair's threshold and how it was measured."""

    probe: str
    gallery: str
    threshold: float  # squared L2
    target_far: float | None = None  # the FAR the threshold was chosen for (None: best accuracy)
    accuracy: float | None = None
    val: float | None = None  # verification rate at target_far
    far: float | None = None  # measured FAR at the threshold
    source: str = ""  # e.g. "LFW View 2, 10 folds"

    @property
    def key(self) -> str:
        return f"{self.probe}>{self.gallery}"


def path() -> Path:
    return registry.models_dir() / "compat.json"


def table() -> dict[tuple[str, str], PairCalibration]:
    """Every calibration recorded in ``compat.json``."""
    file = path()
    if not file.is_file():
        return {}
    try:
        rows = json.loads(file.read_text())
        pairs = [PairCalibration(**row) for row in rows.values()]
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise ModelError(f"compatibility table {file} is corrupt ({exc}); delete it and recalibrate") from exc
    return {(c.probe, c.gallery): c for c in pairs}


def record(calibrations: list[PairCalibration]) -> Path:
    """Add or replace calibrations in ``compat.json`` (atomically)."""
    rows: dict[str, Any] = {c.key: dataclasses.asdict(c) for c in table().values()}
    rows.update({c.key: dataclasses.asdict(c) for c in calibrations})
    file = path()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2, sort_keys=True))
    tmp.replace(file)
    return file


def _card(version: str) -> ModelCard | None:
    name = registry.names_by_version().get(version)
    return None if name is None else registry.peek_card(name)


def _from_cards(probe: str, gallery: str) -> float | None:
    probe_card, gallery_card = _card(probe), _card(gallery)
    if probe_card is not None and gallery in probe_card.compatible_with and gallery in probe_card.thresholds:
        return probe_card.thresholds[gallery]
    key = AS_GALLERY + probe
    if gallery_card is not None and probe in gallery_card.compatible_with and key in gallery_card.thresholds:
        return gallery_card.thresholds[key]
    return None


def threshold(probe: str, gallery: str) -> float:
    """The squared-L2 threshold for ``probe``-version embeddings against a ``gallery``-version gallery."""
    calibrated = table().get((probe, gallery))
    if calibrated is not None:
        return calibrated.threshold
    found = _from_cards(probe, gallery)
    if found is not None:
        return found
    if probe == gallery:
        raise ModelError(f"model version {probe!r} has no calibrated threshold on its card")
    raise IncompatibleModels(
        f"model version {probe!r} is not known to be compatible with a {gallery!r} gallery: its "
        "embeddings are never compared with it. Train a harmonic model against it, or calibrate "
        f"the pair with `streamproc eval compat --gallery-model {gallery} --probe-model {probe} --write`"
    )


def compatible(probe: str, gallery: str) -> bool:
    try:
        threshold(probe, gallery)
    except IncompatibleModels:
        return False
    except ModelError:
        return probe == gallery
    return True
