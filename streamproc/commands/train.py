"""``streamproc train``: triplet training on Ray Train from a ``configs/train/*.yaml`` file.

The Ray cluster is found as ``streamproc run`` finds it: ``--address``, else
``STREAMPROC_RAY_ADDRESS``, else Ray's own ``RAY_ADDRESS`` (set for the driver of ``ray job submit``
and of a KubeRay RayJob), else a local cluster is started.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamproc import env


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune an embedding model with the triplet loss")
    parser.add_argument(
        "--config", type=Path, required=True, help="training config, e.g. configs/train/finetune-irv1.yaml"
    )
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. steps_per_epoch=20"
    )
    parser.add_argument(
        "--address",
        help="Ray cluster address (default: $STREAMPROC_RAY_ADDRESS, else $RAY_ADDRESS as set inside "
        "`ray job submit`, else a local cluster)",
    )
    parser.add_argument("--workers", type=int, help="Ray Train workers (overrides num_workers)")
    parser.set_defaults(handler=_train)


def ray_address(args: argparse.Namespace) -> str | None:
    """The cluster to train on: ``--address``, ``STREAMPROC_RAY_ADDRESS``, ``RAY_ADDRESS``; None = local."""
    return args.address or env.ray_address() or env.ray_job_address()


def _train(args: argparse.Namespace) -> int:
    from streamproc.training.config import load_train_config
    from streamproc.training.launch import train

    overrides = list(args.set or [])
    if args.workers is not None:
        overrides.append(f"num_workers={args.workers}")
    config = load_train_config(args.config, overrides)  # validated before anything starts
    result = train(config, ray_address=ray_address(args))
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"model: {config.name}@{config.version} registered; checkpoint: {result.checkpoint.path}")
    return 0
