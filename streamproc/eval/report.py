"""Write an LFW result as ``report.json`` and an ROC plot ``roc.png``.

The plot is drawn on a ``matplotlib.figure.Figure`` with an explicit Agg canvas: no pyplot, no
backend switch, no figure left open, so calling this from a program that plots interactively
changes nothing there.

>>> path = write_report(result, Path("out/lfw"), {"detector": "mtcnn"})  # doctest: +SKIP
>>> json.loads(path.read_text())["accuracy_mean"]  # doctest: +SKIP
0.9923
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streamproc.eval.lfw import LfwResult
from streamproc.eval.verification import roc_curve


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy values become Python ones, paths strings, NaN/inf None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"report: expected JSON-like values (numbers, strings, lists, dicts), got {type(value).__name__}"
    )


def summary(result: LfwResult) -> dict[str, Any]:
    """The report's computed keys (without ``extra``), as plain Python values."""
    kfold = result.kfold
    return {
        "model": result.model_name,
        "accuracy_mean": kfold.mean,
        "accuracy_sem": kfold.sem,
        "fold_accuracies": kfold.accuracies.tolist(),
        "fold_thresholds": kfold.thresholds.tolist(),
        "threshold_mean": float(np.mean(kfold.thresholds)),
        "val_at_far_1e-3": result.val_at_far,
        "val_threshold": result.val_threshold,
        "far_at_val_threshold": result.far_at_val_threshold,
        "target_far": result.target_far,
        "kfold_val_mean": kfold.val_mean,
        "kfold_val_sem": kfold.val_sem,
        "kfold_far_mean": float(np.mean(kfold.far)),
        "int8_accuracy_mean": result.int8_kfold.mean,
        "int8_accuracy_sem": result.int8_kfold.sem,
        "int8_fold_accuracies": result.int8_kfold.accuracies.tolist(),
        "n_pairs": len(result.distances),
        "n_same_pairs": int(np.sum(result.same)),
        "n_folds": len(kfold.folds),
        "n_images": len(result.images),
        "n_failed_detections": result.n_failed,
        "embedding_dim": int(result.embeddings.shape[1]),
        "images_per_second": result.images_per_second,
        "embeddings_from_cache": result.from_cache,
    }


def _plot_roc(result: LfwResult, path: Path) -> None:
    _, val, far = roc_curve(result.distances, result.same)
    # FAR = 0 cannot sit on a log axis: draw it at a floor left of both 1/m and the target FAR
    floor = min(1.0 / (2 * int(np.sum(~result.same))), result.target_far / 2)
    figure = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.step(np.maximum(far, floor), val, where="post", label="ROC (all pairs)")
    axes.axvline(result.target_far, color="grey", linestyle=":", linewidth=1)
    axes.plot(
        [result.target_far],
        [result.val_at_far],
        "o",
        color="tab:red",
        label=f"VAL {result.val_at_far:.3f} @ FAR {result.target_far:g}",
    )
    axes.set_xscale("log")
    axes.set_xlim(floor, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("FAR (false accept rate)")
    axes.set_ylabel("VAL (validation rate)")
    axes.set_title(
        f"{result.model_name}: LFW accuracy {100 * result.kfold.mean:.2f}% ± {100 * result.kfold.sem:.2f}%"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


def write_report(result: LfwResult, out_dir: Path, extra: Mapping[str, Any]) -> Path:
    """Write ``out_dir/report.json`` (computed keys plus ``extra``) and ``out_dir/roc.png``.

    ``extra`` holds run settings such as detector, alignment and wall time; a key that would
    overwrite a computed one is an error. Returns the path of ``report.json``.
    """
    report = summary(result)
    clashes = sorted(set(report) & set(extra))
    if clashes:
        raise ValueError(f"extra: expected keys other than the computed ones, got {clashes}; rename them")
    report.update(_jsonable(dict(extra)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    _plot_roc(result, out_dir / "roc.png")
    return path
