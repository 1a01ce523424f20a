"""``streamproc gallery calibrate``: the open-set threshold of the gallery at a target FPIR."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def add_parser(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "calibrate",
        help="choose the identification threshold for a target false-positive identification rate",
        description=(
            "Measures how close strangers come to the enrolled people and stores the threshold at "
            "which a fraction --fpir of them would be named (by the naming rule with gallery.margin), "
            "with the gallery's model version. "
            "Strangers are the photos under --strangers (people NOT enrolled), or else each enrolled "
            "person against the others (leave-one-out)."
        ),
    )
    p.add_argument("--fpir", type=float, help="target fraction of strangers named (default: gallery.fpir)")
    p.add_argument("--strangers", type=Path, help="folder of photos of people who are not enrolled")
    p.add_argument("--max-strangers", type=int, default=5000, help="photos of strangers used at most")
    p.add_argument("--dry-run", action="store_true", help="print the threshold, store nothing")
    add_config_args(p)
    p.set_defaults(handler=_calibrate)


def _stranger_images(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"--strangers {folder}: not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"--strangers {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths[:limit] if limit > 0 else paths


def _embed_strangers(config: object, paths: list[Path]) -> tuple[np.ndarray, str]:
    from streamproc.faces import FacePipeline, read_image

    pipeline = FacePipeline(config)  # type: ignore[arg-type]
    parts = []
    for start in tqdm(range(0, len(paths), 32), desc="embed strangers", unit="batch"):
        result = pipeline.embed_subjects([read_image(p) for p in paths[start : start + 32]])
        parts.append(result.embeddings[~result.failed])
    return np.concatenate(parts), pipeline.model_version


def gallery_templates(store: object, version: str, match: str) -> tuple[np.ndarray, np.ndarray]:
    """What a probe is compared with: one unit row per person (``mean``) or every row (``best``),
    and each row's owner."""
    from streamproc.gallery.base import GalleryStore
    from streamproc.gallery.quantize import dequantize

    assert isinstance(store, GalleryStore)
    rows, owners = [], []
    for batch in store.snapshot(version):
        for person in batch:
            emb = dequantize(person.rows) if person.rows.dtype == np.int8 else person.rows.astype(np.float32)
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            if match == "mean":
                mean = emb.mean(axis=0)
                emb = (mean / max(float(np.linalg.norm(mean)), 1e-12))[None, :]
            rows.append(emb)
            owners.extend([person.identity_id] * len(emb))
    if not rows:
        raise InputError(f"the gallery has nobody enrolled for model version {version!r}: enrol people first")
    return np.concatenate(rows).astype(np.float32), np.array(owners)


def _calibrate(args: argparse.Namespace) -> int:
    from streamproc.commands.gallery import open_store
    from streamproc.gallery.calibrate import calibrate
    from streamproc.models import registry

    config = config_from_args(args)
    fpir = config.gallery.fpir if args.fpir is None else args.fpir
    strangers, version = None, registry.peek_card(registry.name_for(config.embedder.model)).version
    if args.strangers is not None:
        strangers, version = _embed_strangers(config, _stranger_images(args.strangers, args.max_strangers))
    with open_store(config) as store:
        rows, owners = gallery_templates(store, version, config.gallery.match)
        result = calibrate(
            version, rows, owners, fpir=fpir, strangers=strangers, margin=config.gallery.margin
        )
        if not args.dry_run:
            store.set_calibration(version, result.as_dict())
    print(
        f"gallery {version}: {result.gallery_size} people; threshold {result.threshold:.3f} (squared L2, "
        f"margin {result.margin:g}) "
        f"for FPIR {result.fpir:g} from {result.impostors} impostor scores ({result.method}); "
        f"measured FPIR {result.measured_fpir:.4f}" + (" [dry run: not stored]" if args.dry_run else "")
    )
    return 0
