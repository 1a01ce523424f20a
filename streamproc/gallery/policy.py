"""The one threshold policy: which squared-L2 distance names a person, decided in one place.

``resolve`` is used by the match stage (runs), ``gallery search``, gallery switches and model
upgrades alike. In order:

1. ``gallery.threshold`` set explicitly in the config (or ``--threshold``): the operator's value;
2. a probe of another model version than the gallery's (a rolling upgrade): the calibrated pair
   threshold (``streamproc.models.compat``), which refuses pairs never calibrated;
3. the gallery's own open-set calibration (``streamproc gallery calibrate``), stored with its
   model version, when made for the configured target FPIR and margin; the run warns when the
   gallery has grown to more than ``GROWTH_WARNING`` times the size it was calibrated at;
4. the model's 1:1 impostor curve (``ModelCard.far_thresholds``) at the gallery's size and target
   FPIR (see ``calibrate.threshold_from_far``);
5. the card's 1:1 verification threshold, with a warning: it names strangers in large galleries.

Whatever the threshold, a face is named only with ``gallery.margin`` of lead over the next person
(``streamproc.gallery.base.named``). Only a calibration accounts for the margin; the thresholds of 4.
and 5. ignore it, so there the margin names fewer strangers than the target, and fewer enrolled people.

Example:
    >>> from streamproc.gallery.config import GalleryConfig
    >>> resolve(GalleryConfig(threshold=0.9), None, "v1", "v1", 10).describe()
    '0.900 with margin 0.15 (gallery.threshold in the config)'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streamproc.errors import ModelError
from streamproc.gallery.calibrate import Calibration, threshold_from_far
from streamproc.gallery.config import GalleryConfig
from streamproc.models.checkpoint import ModelCard

log = logging.getLogger(__name__)

GROWTH_WARNING = 2.0  # warn when the gallery outgrew its calibration by this factor


@dataclass(frozen=True)
class Threshold:
    """A resolved threshold and where it came from (shown in logs, events carry the value)."""

    value: float
    source: str
    margin: float = 0.0  # the lead over the next person needed to be named

    def describe(self) -> str:
        lead = f" with margin {self.margin:g}" if self.margin else ""
        return f"{self.value:.3f}{lead} ({self.source})"


def resolve(
    config: GalleryConfig,
    card: ModelCard | None,
    probe_version: str,
    gallery_version: str,
    gallery_size: int,
    calibration: Calibration | None = None,
) -> Threshold:
    """The threshold for ``probe_version`` embeddings against a ``gallery_version`` gallery of
    ``gallery_size`` people (see the module doc for the order). ``card`` is the gallery version's."""
    margin = config.margin
    if config.threshold is not None:
        return Threshold(config.threshold, "gallery.threshold in the config", margin)
    if probe_version != gallery_version:
        from streamproc.models import compat

        pair = compat.threshold(probe_version, gallery_version)
        return Threshold(pair, "calibrated model pair, 1:1", margin)
    if calibration is not None and calibration.model_version == gallery_version:
        same_rule = abs(calibration.margin - margin) < 1e-9
        if abs(calibration.fpir - config.fpir) < 1e-12 and same_rule:
            if gallery_size > GROWTH_WARNING * max(calibration.gallery_size, 1):
                log.warning(
                    "gallery %s has %d people, calibrated at %d: re-run `streamproc gallery calibrate`",
                    gallery_version,
                    gallery_size,
                    calibration.gallery_size,
                )
            return Threshold(
                calibration.threshold,
                f"FPIR {calibration.fpir:g} calibrated at {calibration.gallery_size} people ({calibration.method})",
                margin,
            )
        log.warning(
            "gallery %s was calibrated for FPIR %g with margin %g, the config asks for FPIR %g with "
            "margin %g: using the model's curve; re-run `streamproc gallery calibrate`",
            gallery_version,
            calibration.fpir,
            calibration.margin,
            config.fpir,
            margin,
        )
    if card is None:
        raise ModelError(f"no model card for version {gallery_version!r}: cannot choose a threshold")
    from_curve = threshold_from_far(card.far_thresholds, config.fpir, gallery_size)
    if from_curve is not None:
        return Threshold(
            from_curve, f"FPIR {config.fpir:g} at {gallery_size} people from the model's FAR curve", margin
        )
    if gallery_version not in card.thresholds:
        raise ModelError(
            f"{card.key} has no calibrated threshold: set gallery.threshold, or run "
            "`streamproc gallery calibrate` on an enrolled gallery"
        )
    value = card.thresholds[gallery_version]
    log.warning(
        "model %s has no FAR curve and the gallery no calibration: using the 1:1 threshold %.3f, "
        "which names strangers in large galleries; run `streamproc gallery calibrate`",
        card.key,
        value,
    )
    return Threshold(value, "model card, 1:1 verification", margin)


def for_gallery(
    config: GalleryConfig, card: ModelCard | None, version: str, gallery_size: int, store: object | None
) -> Threshold:
    """``resolve`` for a gallery's own version, with the calibration stored beside it (if any).
    ``store`` is a ``GalleryStore`` (or None: no stored calibration)."""
    from streamproc.gallery.base import GalleryStore

    calibration = None
    if isinstance(store, GalleryStore):
        raw = store.calibration(version)
        calibration = None if raw is None else Calibration.from_dict(raw)
    return resolve(config, card, version, version, gallery_size, calibration)
