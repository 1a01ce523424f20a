"""The one command line: ``streamproc <group> <command> ...``.

Each group lives in ``streamproc/commands/<group>.py`` and exposes ``register(subparsers)``;
a command's handler takes the parsed ``argparse.Namespace`` and returns an exit code.
User mistakes (any ``StreamprocError``) print one message and exit 2, never a traceback. Any other
exception is a bug: it is logged with its traceback and the exit code is 1. A command module that
fails to import is a bug too: its import error ends the program rather than leaving a smaller CLI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streamproc.errors import StreamprocError

log = logging.getLogger("streamproc")
GROUPS = ("models", "eval", "demo", "enroll", "gallery", "run", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamproc", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"streamproc.commands.{group}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
    try:
        return int(args.handler(args))
    except StreamprocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("internal error (a bug in streamproc, not in your input or config)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
