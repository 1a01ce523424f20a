"""``streamproc eval lfw``: the paper's verification protocol on LFW."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="evaluate models")
    cmds = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    p = cmds.add_parser("lfw", help="LFW 10-fold verification accuracy and VAL@FAR=1e-3")
    p.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of images per person")
    p.add_argument("--pairs", type=Path, required=True, help="the official pairs.txt (View 2)")
    p.add_argument("--model", help="model name in the registry (default: embedder.model)")
    p.add_argument("--detector", choices=["mtcnn", "haar"], help="face detector (default: detector.kind)")
    p.add_argument("--align", choices=["crop", "similarity"], help="alignment (default: align.mode)")
    p.add_argument("--out", type=Path, required=True, help="folder for report.json, roc.png and the cache")
    add_config_args(p)
    p.set_defaults(handler=_lfw)


def _lfw(args: argparse.Namespace) -> int:
    from streamproc.eval.lfw import EmbedResult, evaluate, read_pairs
    from streamproc.eval.report import write_report
    from streamproc.faces import FacePipeline, read_image

    overrides = list(args.set or [])
    if args.model:
        overrides.append(f"embedder.model={args.model}")
    if args.detector:
        overrides.append(f"detector.kind={args.detector}")
    if args.align:
        overrides.append(f"align.mode={args.align}")
    config = config_from_args(args, overrides)
    if not args.data.is_dir():
        raise ConfigError(f"--data {args.data}: not a folder")
    root = args.data / "lfw-deepfunneled" if (args.data / "lfw-deepfunneled").is_dir() else args.data
    pairs = read_pairs(args.pairs)
    started = time.perf_counter()
    pipeline = FacePipeline(config)

    def embed(paths: list[Path]) -> EmbedResult:
        result = pipeline.embed_subjects([read_image(p) for p in paths])
        return EmbedResult(embeddings=result.embeddings, failed=result.failed)

    settings = config.model_dump(mode="json", include={"detector", "align", "embedder"})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    args.out.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        pairs,
        root,
        embed,
        cache=args.out / f"embeddings-{digest}.npz",
        cache_tag=digest,
        model_name=pipeline.embedder.card.key,
    )
    extra = {"config": settings, "wall_seconds": round(time.perf_counter() - started, 1)}
    report = write_report(result, args.out, extra)
    summary = json.loads(report.read_text())
    print(
        f"accuracy {summary['accuracy_mean']:.4f} ± {summary['accuracy_sem']:.4f}  "
        f"VAL@FAR=1e-3 {summary['val_at_far_1e-3']:.4f}  int8 {summary['int8_accuracy_mean']:.4f}  "
        f"threshold {summary['threshold_mean']:.3f}  failed detections {summary['n_failed_detections']}"
    )
    print(f"report: {report}")
    return 0
