"""Arguments and helpers shared by command groups."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from streamproc.config import Config, load_config

log = logging.getLogger("streamproc")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. detector.kind=haar"
    )


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """Validate the config before anything starts, and log the resolved values."""
    overrides = extra if extra is not None else list(args.set or [])
    config = load_config(args.config, overrides)
    log.debug("resolved config: %s", json.dumps(config.redacted(), sort_keys=True))
    return config
