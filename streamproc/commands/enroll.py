"""``streamproc enroll --name NAME IMAGE... | --folder DIR``: add people to the gallery."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.commands.demo import IMAGE_SUFFIXES, list_people
from streamproc.commands.gallery import add_pick_arg, enroll_people
from streamproc.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="detect, align, embed and store people's faces")
    p.add_argument("--name", help="the person in IMAGE...")
    p.add_argument("images", nargs="*", type=Path, help="images of one person (with --name)")
    p.add_argument("--folder", type=Path, help="one sub-folder of images per person (the LFW layout)")
    add_pick_arg(p)
    add_config_args(p)
    p.set_defaults(handler=_enroll)


def _enroll(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.folder and (args.name or args.images):
        raise ConfigError("use either --folder DIR or --name NAME IMAGE..., not both")
    if args.folder:
        people: dict[str, list[Path]] = {}
        for name, path in list_people(args.folder):
            people.setdefault(name, []).append(path)
    elif args.name and args.images:
        bad = [p for p in args.images if p.suffix.lower() not in IMAGE_SUFFIXES and p.is_file()]
        if bad:
            raise ConfigError(f"not an image file type: {', '.join(map(str, bad))}")
        people = {args.name: list(args.images)}
    else:
        raise ConfigError("nothing to enrol: give --name NAME IMAGE... or --folder DIR")
    return enroll_people(config, people, pick=args.pick, what="folder" if args.folder else "name")
