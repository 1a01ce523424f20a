"""``streamproc eval lfw``: the paper's verification protocol on LFW."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamproc.commands.common import add_config_args, config_from_args
from streamproc.config import Config
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.eval.compat import CompatRow


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

    c = cmds.add_parser(
        "compat",
        help="cross-model LFW verification: probes of one model against a gallery of another",
        description=(
            "LFW 10-fold accuracy and VAL@FAR for gallery-gallery, probe-probe, probe vs gallery and "
            "gallery vs probe models (and a baseline model in mixed mode); --write records the "
            "calibrated thresholds for the matcher"
        ),
    )
    c.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of images per person")
    c.add_argument("--pairs", type=Path, required=True, help="the official pairs.txt (View 2)")
    c.add_argument("--gallery-model", required=True, help="the older model (name or version), e.g. v1")
    c.add_argument("--probe-model", help="the newer model (name or version), e.g. v2 (not with --cross-fit)")
    c.add_argument("--baseline-model", help="a model trained without the harmonic loss, shown in mixed mode")
    c.add_argument("--target-far", type=float, default=1e-3, help="FAR the thresholds are calibrated at")
    c.add_argument("--out", type=Path, required=True, help="folder for compat.json and the crop cache")
    c.add_argument("--write", action="store_true", help="record the pair thresholds in the model registry")
    c.add_argument(
        "--cross-fit",
        action="store_true",
        help=(
            "fit the v2 heads (harmonic, plain, ridge map) on the MobileFaceNet trunk once per LFW fold, "
            "on the other folds' people, and score each fold with heads that never saw its people"
        ),
    )
    c.add_argument("--steps", type=int, help="triplet steps per head (--cross-fit; default 300)")
    c.add_argument(
        "--distill",
        type=float,
        help="harmonic head's distillation weight (--cross-fit; default 1)",
    )
    add_config_args(c)
    c.set_defaults(handler=_compat)


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


def _compat(args: argparse.Namespace) -> int:
    import torch

    from streamproc.eval.compat import compat_table, crop_images, time_per_face
    from streamproc.eval.lfw import read_pairs, unique_images
    from streamproc.models import compat, registry

    config = config_from_args(args, list(args.set or []))
    if not 0 < args.target_far < 1:
        raise ConfigError(f"--target-far: expected a rate between 0 and 1, got {args.target_far}")
    if not args.data.is_dir():
        raise ConfigError(f"--data {args.data}: not a folder")
    root = args.data / "lfw-deepfunneled" if (args.data / "lfw-deepfunneled").is_dir() else args.data
    if args.cross_fit:
        return _crossfit(args, config, root)
    if not args.probe_model:
        raise ConfigError("eval compat: --probe-model is required (or pass --cross-fit)")
    models = {"gallery": registry.name_for(args.gallery_model), "probe": registry.name_for(args.probe_model)}
    combos = [
        ("gallery-gallery", "gallery", "gallery"),
        ("probe-probe", "probe", "probe"),
        ("probe vs gallery", "probe", "gallery"),
        ("gallery vs probe", "gallery", "probe"),
    ]
    if args.baseline_model:
        models["baseline"] = registry.name_for(args.baseline_model)
        combos += [
            ("baseline-baseline", "baseline", "baseline"),
            ("baseline vs gallery", "baseline", "gallery"),
        ]
    settings = config.model_dump(mode="json", include={"detector", "align"})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    started = time.perf_counter()
    pairs, cache = read_pairs(args.pairs), args.out / f"crops-{digest}.npz"
    rows, _ = compat_table(pairs, root, models, combos, config, cache=cache, target_far=args.target_far)
    _print_rows(rows)
    crops, _ = crop_images(root, unique_images(pairs), config, cache, progress=False)  # cached by now
    per_face = {key: time_per_face(models[key], crops) for key in ("gallery", "probe")}
    timing = {f"{key}_ms_per_face": 1000 * t for key, t in per_face.items()}
    print(
        f"embedding time per face (batch 32, {torch.get_num_threads()} threads): "
        f"gallery model {timing['gallery_ms_per_face']:.2f} ms, probe model {timing['probe_ms_per_face']:.2f} ms, "
        f"probe / gallery {per_face['probe'] / per_face['gallery']:.3f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "compat.json"
    payload = {
        "rows": [r.as_dict() for r in rows],
        "models": models,
        "timing": timing,
        "config": settings,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    report.write_text(json.dumps(payload, indent=2))
    print(f"report: {report}")
    if args.write:
        source = f"LFW View 2 {args.pairs.name}, 10 folds, FAR target {args.target_far:g}"
        # the gallery model keeps the threshold on its own card; the baseline is never served
        keep = [r for r in rows if "baseline" not in r.label and r.label != "gallery-gallery"]
        path = compat.record([r.calibration(source) for r in keep])
        print(f"recorded {len(keep)} pair thresholds in {path}")
    return 0


def _print_rows(rows: list[CompatRow]) -> None:
    print(
        f"{'pair':<22}{'probe':>10}{'gallery':>10}{'accuracy':>18}{'VAL@FAR':>9}{'FAR':>8}{'thr@FAR':>9}{'thr acc':>9}"
    )
    for r in rows:
        print(
            f"{r.label:<22}{r.probe:>10}{r.gallery:>10}{r.accuracy:>10.4f} ± {r.accuracy_sem:.4f}"
            f"{r.val:>9.4f}{r.far:>8.4f}{r.threshold:>9.3f}{r.accuracy_threshold:>9.3f}"
        )


CROSSFIT_COMBOS = [
    ("v1-v1", "v1", "v1"),
    ("v2-v2", "v2", "v2"),
    ("v2 vs v1", "v2", "v1"),
    ("v1 vs v2", "v1", "v2"),
    ("plain head mixed", "plain", "v1"),
    ("plain head-head", "plain", "plain"),
    ("ridge map mixed", "ridge", "v1"),
    ("ridge map v1 vs map", "v1", "ridge"),
    ("ridge map-map", "ridge", "ridge"),
]


def _crossfit(args: argparse.Namespace, config: Config, root: Path) -> int:
    """``eval compat --cross-fit``: the table of heads fitted on people disjoint from each fold."""
    from streamproc.eval.crossfit import crossfit_table, face_arrays
    from streamproc.eval.lfw import read_pairs, unique_images
    from streamproc.models import registry
    from streamproc.training.heads import HeadRecipe

    if args.write:
        raise ConfigError("eval compat: --write records a trained model's thresholds; not with --cross-fit")
    if args.steps is not None and args.steps < 0:
        raise ConfigError(f"--steps: expected a count >= 0, got {args.steps}")
    tuned = {k: v for k, v in (("steps", args.steps), ("distill", args.distill)) if v is not None}
    settings = config.model_dump(mode="json", include={"detector", "align"})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    started = time.perf_counter()
    pairs = read_pairs(args.pairs)
    images = unique_images(pairs)
    gallery = registry.name_for(args.gallery_model)
    features, old = face_arrays(root, images, config, gallery, args.out / f"crops-{digest}.npz")
    recipes = {
        "v2": HeadRecipe("harmonic", **tuned),
        "plain": HeadRecipe("plain", ridge_init=False, **{k: v for k, v in tuned.items() if k == "steps"}),
        "ridge": HeadRecipe("ridge"),
    }
    fitted = time.perf_counter()
    rows = crossfit_table(pairs, images, features, old, recipes, CROSSFIT_COMBOS, args.target_far)
    print(
        f"cross-fitted over {len(set(pairs.fold.tolist()))} folds: every pair scored by heads that never saw its people"
    )
    _print_rows(rows)
    report = args.out / "compat-crossfit.json"
    payload = {
        "rows": [r.as_dict() for r in rows],
        "gallery_model": gallery,
        "trunk": registry.MOBILEFACENET,
        "recipes": {k: dataclasses.asdict(r) for k, r in recipes.items()},
        "config": settings,
        "fit_seconds": round(time.perf_counter() - fitted, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    report.write_text(json.dumps(payload, indent=2))
    print(f"heads fitted and scored in {payload['fit_seconds']} s; report: {report}")
    return 0
