"""``streamproc gallery search | list | show | delete | cluster | promote`` and shared enrollment code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamproc.align import PickPolicy
from streamproc.commands import calibrate
from streamproc.commands.common import add_config_args, config_from_args
from streamproc.config import Config
from streamproc.errors import InputError, UnknownIdentity
from streamproc.faces import FacePipeline, read_image
from streamproc.gallery import policy
from streamproc.gallery.base import GalleryStore, check_name
from streamproc.gallery.cluster import Cluster
from streamproc.gallery.config import check_threshold
from streamproc.gallery.redis_store import RedisGalleryStore


@contextmanager
def open_store(config: Config) -> Iterator[GalleryStore]:
    store = RedisGalleryStore.from_config(config.gallery)
    try:
        yield store
    finally:
        store.close()


@dataclass
class Enrolled:
    name: str
    embeddings: np.ndarray
    crops: np.ndarray
    rejected: list[tuple[Path, str]]


def embed_person(
    pipeline: FacePipeline, name: str, images: list[Path], progress: tqdm, pick: PickPolicy | None = None
) -> Enrolled:
    """One embedding per image: its subject (``choose_subject``, or ``pick``); the images without a
    clear subject are rejected with the reason."""
    rows, crops, rejected = [], [], []
    for path in images:
        progress.set_postfix_str(name[:24])
        try:
            image = read_image(path, pipeline.config.image.max_pixels)
            faces, face_crops, subject = pipeline.analyse_subject(image, pick)
        except InputError as exc:
            rejected.append((path, str(exc).removeprefix(f"{path}: ")))  # the caller names the path
        else:
            if subject.index is None:
                rejected.append((path, subject.reason))
            else:
                rows.append(faces.embedding[subject.index])  # type: ignore[index]
                crops.append(face_crops[subject.index])
        progress.update()
    dim = pipeline.embedder.card.embedding_dim
    size = pipeline.config.align.image_size
    return Enrolled(
        name,
        np.array(rows, np.float32).reshape(-1, dim),
        np.array(crops, np.uint8).reshape(-1, size, size, 3),
        rejected,
    )


def usable_names(people: dict[str, list[Path]], what: str) -> tuple[dict[str, list[Path]], int]:
    """The people whose names a gallery takes, checked before any image is embedded; the others are
    reported (one line each) and their image count returned."""
    usable, skipped = {}, 0
    for name, images in people.items():
        try:
            check_name(name)
        except InputError as exc:
            print(f"rejected {what} {name!r} ({len(images)} image(s)): {exc}", file=sys.stderr)
            skipped += len(images)
        else:
            usable[name] = images
    return usable, skipped


def enroll_people(
    config: Config,
    people: dict[str, list[Path]],
    *,
    quiet: bool = False,
    pick: PickPolicy | None = None,
    what: str = "name",
) -> int:
    """Enrol every person; returns the exit code (1 when any image or name was rejected)."""
    total = sum(len(v) for v in people.values())
    people, failed = usable_names(people, what)
    bad_names = failed
    pipeline = FacePipeline(config)
    with open_store(config) as store, tqdm(total=total, desc="enroll", unit="img", disable=quiet) as bar:
        bar.update(bad_names)
        for name, images in people.items():
            person = embed_person(pipeline, name, images, bar, pick)
            for path, reason in person.rejected:
                tqdm.write(f"rejected {path}: {reason}", file=sys.stderr)
            failed += len(person.rejected)
            if len(person.embeddings) == 0:
                tqdm.write(f"{name}: nothing enrolled (no usable image)", file=sys.stderr)
                continue
            crops = person.crops if config.gallery.retain_crops else None
            ident = store.enroll(name, person.embeddings, pipeline.model_version, crops=crops)
            tqdm.write(f"{name}: {len(person.embeddings)} image(s) enrolled ({ident.embeddings})")
    note = f" ({bad_names} for an unusable {what})" if bad_names else ""
    print(f"enrolled {total - failed} of {total} images; {failed} rejected{note}")
    return 1 if failed else 0


def add_pick_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pick",
        choices=["largest", "center", "score"],
        help="with several faces in a photo, take this one (default: the clearly dominant face; "
        "photos with two comparable faces are rejected)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gallery", help="search and manage the gallery of known people")
    cmds = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    p = cmds.add_parser("search", help="who is in this image? top-k with distances")
    p.add_argument("image", type=Path)
    p.add_argument("-k", type=int, default=5, help="candidates to show")
    p.add_argument(
        "--threshold",
        type=float,
        help="squared-L2 threshold in (0, 4] (default: the model's calibrated one)",
    )
    add_pick_arg(p)
    p.add_argument("--all-faces", action="store_true", help="search every face found, not only the subject")
    p.set_defaults(handler=_search)
    p = cmds.add_parser("list", help="every identity")
    p.set_defaults(handler=_list)
    p = cmds.add_parser("show", help="one identity in detail")
    p.add_argument("name")
    p.set_defaults(handler=_show)
    p = cmds.add_parser("delete", help="erase a person: every embedding and crop under every model version")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm the erasure")
    p.set_defaults(handler=_delete)
    p = cmds.add_parser("cluster", help="group stored unknown faces (agglomerative clustering)")
    p.add_argument("--min-size", type=int, default=2, help="smallest cluster to show")
    p.set_defaults(handler=_cluster)
    p = cmds.add_parser("promote", help="turn a cluster of unknown faces into an identity")
    p.add_argument("cluster", help="cluster id as printed by 'gallery cluster'")
    p.add_argument("--name", required=True, help="name of the new (or existing) identity")
    p.set_defaults(handler=_promote)
    p = cmds.add_parser("forget-unknowns", help="erase stored unknown faces older than a number of days")
    p.add_argument(
        "--older-than-days",
        type=float,
        help="age limit in days (default: gallery.unknown_retention_s; 0 erases them all)",
    )
    p.set_defaults(handler=_forget_unknowns)
    for p in cmds.choices.values():
        add_config_args(p)
    calibrate.add_parser(cmds)


def _search(args: argparse.Namespace) -> int:
    from streamproc.gallery.base import named
    from streamproc.gallery.index import GalleryIndex

    config = config_from_args(args)
    threshold = None if args.threshold is None else check_threshold(args.threshold)
    pipeline = FacePipeline(config)
    faces, _, subject = pipeline.analyse_subject(read_image(args.image, config.image.max_pixels), args.pick)
    if not args.all_faces:
        if subject.index is None:
            raise InputError(f"{args.image}: {subject.reason}")
        faces = faces[subject.index]
    elif len(faces) == 0:
        raise InputError(f"{args.image}: no face found")
    if threshold is not None:
        config = config.model_copy(
            update={"gallery": config.gallery.model_copy(update={"threshold": threshold})}
        )
    with open_store(config) as store:
        index = GalleryIndex.load(store, pipeline.model_version, match=config.gallery.match)
        card = pipeline.embedder.card
        rule = policy.for_gallery(config.gallery, card, card.version, len(index), store)
        results = index.search(faces.embedding, k=max(args.k, 2))  # type: ignore[arg-type]
    for i, (box, matches) in enumerate(zip(faces.boxes, results, strict=True)):
        chosen = named(matches, rule.value, rule.margin)
        verdict = "unknown" if chosen is None else chosen.name
        if chosen is None and matches and matches[0].within(rule.value):
            verdict += f" ({matches[0].name} and {matches[1].name} are within the margin)"
        print(
            f"face {i} at {np.round(box).astype(int).tolist()}: {verdict} (threshold {rule.value:.3f}, margin {rule.margin:g})"
        )
        matches = matches[: args.k]
        for m in matches:
            print(f"    {m.name:<30} d={m.distance:.3f}")
    return 0


def _list(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with open_store(config) as store:
        people = store.list_identities()
    for ident in people:
        print(f"{ident.name:<30} {ident.id}  embeddings={ident.embeddings} crops={ident.crops}")
    print(f"{len(people)} identities")
    return 0


def _show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with open_store(config) as store:
        ident = store.get(args.name)
    print(json.dumps(ident.__dict__, indent=2, default=str))
    return 0


def _delete(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not args.yes:
        raise InputError(f"erasing {args.name!r} cannot be undone: add --yes to confirm")
    with open_store(config) as store:
        ident = store.delete(args.name)
    print(f"erased {ident.name} ({ident.id}): embeddings {ident.embeddings}, crops {ident.crops}")
    return 0


def _forget_unknowns(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.older_than_days is not None:
        older_than_s = args.older_than_days * 86400.0
    elif config.gallery.unknown_retention_s is not None:
        older_than_s = config.gallery.unknown_retention_s
    else:
        raise InputError("give --older-than-days, or set gallery.unknown_retention_s")
    with open_store(config) as store:
        gone = store.forget_unknowns(older_than_s)
    print(f"erased {gone} unknown faces older than {older_than_s / 86400:g} days")
    return 0


def _clusters(args: argparse.Namespace, config: Config, store: GalleryStore) -> list[Cluster]:
    from streamproc.gallery.cluster import cluster_unknowns
    from streamproc.models import registry

    version = registry.card(config.embedder.model).version
    return cluster_unknowns(store, version, config.gallery, min_size=getattr(args, "min_size", 1))


def _cluster(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with open_store(config) as store:
        clusters = _clusters(args, config, store)
    for c in clusters:
        print(f"cluster {c.members[0]}: {c.size} faces, spread {c.spread:.3f}")
    print(f"{len(clusters)} clusters of at least {args.min_size} unknown faces")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from streamproc.gallery.cluster import promote

    config = config_from_args(args)
    with open_store(config) as store:
        found = [c for c in _clusters(args, config, store) if c.members[0] == args.cluster]
        if not found:
            raise UnknownIdentity(
                f"no cluster {args.cluster!r}: run 'streamproc gallery cluster' for the ids"
            )
        ident = promote(store, found[0], args.name)
    print(f"promoted {found[0].size} faces to {ident.name} ({ident.embeddings})")
    return 0
