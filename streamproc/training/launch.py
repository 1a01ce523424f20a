"""The thin launcher: prepare the data once, run ``train_loop_per_worker`` on Ray Train, register.

``train(config)`` (1) resolves the parent model and the train / held-out split from ``pairs.txt``
(the people of ``holdout_fold`` are never trained on), (2) caches the face crops of both in this
process, so workers only read them, (3) runs a ``TorchTrainer`` (Ray Train V2) with
``ScalingConfig(num_workers, use_gpu)`` and results under ``config.output``, and (4) copies the last
checkpoint's ``model.pt`` to ``<output>/<name>-<version>.pt`` and registers it under ``config.name``.

Example:
    >>> result = train(load_train_config("configs/train/finetune-irv1.yaml"))  # doctest: +SKIP
    >>> result.metrics["holdout_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from streamproc import env
from streamproc.errors import ConfigError, StreamprocError
from streamproc.eval.lfw import read_pairs
from streamproc.models import registry
from streamproc.training.config import TrainConfig
from streamproc.training.data import FaceCrops, build_crops, identity_files

log = logging.getLogger(__name__)

__all__ = ["TrainingFailed", "holdout_pairs", "train", "worker_config"]

OBJECT_STORE_BYTES = 200 * 2**20


class TrainingFailed(StreamprocError):
    """The Ray Train run ended in an error (the message carries the worker's)."""


def _image_root(data: Path) -> Path:
    """``data`` itself, or its ``lfw-deepfunneled`` sub-folder when given the LFW download folder."""
    nested = data / "lfw-deepfunneled"
    return nested if nested.is_dir() else data


def _person(path: str) -> str:
    return path.split("/", 1)[0]


def holdout_pairs(config: TrainConfig) -> tuple[dict[str, Any] | None, set[str], set[str] | None]:
    """``(held-out pairs, held-out people, people of train_folds or None)`` from ``pairs.txt``."""
    if config.holdout_fold is None and config.train_folds is None:
        return None, set(), None
    pairs = read_pairs(config.pairs_file)
    n_folds = int(pairs.fold.max()) + 1
    for fold in [config.holdout_fold, *(config.train_folds or ())]:
        if fold is not None and fold > n_folds:
            raise ConfigError(f"fold {fold} does not exist: {config.pairs_file} has {n_folds} folds")
    people_of = [set() for _ in range(n_folds)]  # type: list[set[str]]
    for a, b, fold in zip(pairs.left, pairs.right, pairs.fold, strict=True):
        people_of[fold] |= {_person(a), _person(b)}
    train_people = (
        None if config.train_folds is None else set().union(*(people_of[f - 1] for f in config.train_folds))
    )
    if config.holdout_fold is None:
        return None, set(), train_people
    rows = [i for i in range(len(pairs)) if pairs.fold[i] == config.holdout_fold - 1]
    if config.holdout_max_pairs is not None:
        same = [i for i in rows if pairs.same[i]][: config.holdout_max_pairs // 2]
        diff = [i for i in rows if not pairs.same[i]][: config.holdout_max_pairs - len(same)]
        rows = same + diff
    left, right = [pairs.left[i] for i in rows], [pairs.right[i] for i in rows]
    holdout = {
        "files": sorted(set(left) | set(right)),
        "left": left,
        "right": right,
        "same": [bool(pairs.same[i]) for i in rows],
    }
    return holdout, people_of[config.holdout_fold - 1], train_people


def worker_config(config: TrainConfig) -> dict[str, Any]:
    """Resolve the parent, split the data and cache every crop; the dict ``train_loop_per_worker`` takes."""
    parent_checkpoint = None
    if config.parent is not None:
        card = registry.card(config.parent)
        new_head_ok = config.reinit_head and card.arch == config.arch
        if (card.arch, card.embedding_dim) != (config.arch, config.embedding_dim) and not new_head_ok:
            raise ConfigError(
                f"init={config.init} is {card.arch} with {card.embedding_dim}-D embeddings, but the config "
                f"says arch={config.arch} embedding_dim={config.embedding_dim}"
            )
        parent_checkpoint = str(registry.checkpoint_path(config.parent).resolve())
    root = _image_root(config.data).resolve()
    reference = registry.card(config.harmonic_with) if config.harmonic_with else None
    size = config.crop_size or (reference.input_size if reference else config.input_size)
    update = {"data": root, "crops_cache": config.crops_cache.resolve(), "crop_size": size}
    config = config.model_copy(update=update)
    holdout, held_out_people, train_people = holdout_pairs(config)
    files = identity_files(
        root,
        include=train_people,
        exclude=held_out_people,
        min_images=config.min_images_per_identity,
        max_identities=config.max_identities,
        max_images=config.max_images_per_identity,
    )
    opts: dict[str, Any] = {"detector": config.detector, "image_size": size}
    train_crops = build_crops(root, files, config.crops_cache, progress=config.progress, **opts)
    holdout_crops = None
    if holdout is not None:
        holdout_crops = build_crops(
            root, {"holdout": holdout["files"]}, config.crops_cache, progress=config.progress, **opts
        )
    log.info(
        "training on %d identities, %d images; %s held-out pairs",
        len(files),
        sum(map(len, files.values())),
        len(holdout["same"]) if holdout else "no",
    )
    return {
        "train": config.model_dump(mode="json"),
        "train_files": files,
        "holdout": holdout,
        "parent_checkpoint": parent_checkpoint,
        "reference": None if config.harmonic_with is None else _reference(config, train_crops, holdout_crops),
    }


def _reference(config: TrainConfig, train: FaceCrops, holdout: FaceCrops | None) -> dict[str, Any]:
    """The frozen old model's embeddings of the train (and held-out) crops, cached beside the crops."""
    from streamproc.training.loop import embed_crops

    assert config.harmonic_with is not None
    model, card = registry.load(config.harmonic_with)
    out: dict[str, Any] = {"version": card.version, "model": config.harmonic_with}
    for part, crops in (("train", train), ("holdout", holdout)):
        if crops is None:
            out[part] = None
            continue
        key = hashlib.sha256(
            json.dumps([card.key, str(config.data), crops.image_size, list(crops.files)]).encode()
        )
        path = config.crops_cache / f"reference-{card.version}-{key.hexdigest()[:16]}.npy"
        if not path.is_file():
            log.info("embedding %d %s crops with the reference model %s", len(crops), part, card.key)
            np.save(path, embed_crops(model, crops.crops, card, config.eval_batch_size, crops.points))
        out[part] = str(path)
    return out


def _init_ray(address: str | None, config: TrainConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or env.ray_address() or env.ray_job_address()
    if address:  # a cluster Ray did not start here takes no resource arguments
        ray.init(address=address)
        return
    cpus = max(os.cpu_count() or 1, config.num_workers * config.cpus_per_worker)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES)


def train(config: TrainConfig, ray_address: str | None = None, run_name: str | None = None) -> Any:
    """Run the whole training (module docstring); returns the Ray Train ``Result``."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from streamproc.training.loop import train_loop_per_worker

    log.info("training config: %s", json.dumps(config.model_dump(mode="json"), sort_keys=True))
    loop_config = worker_config(config)
    _init_ray(ray_address, config)
    output = config.output.resolve()
    trainer = TorchTrainer(
        cast(Any, train_loop_per_worker),  # returns its metrics (Result.return_value); stubs say None
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name or f"{config.name}-{config.version}",
            storage_path=str(output / "ray"),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    if result.error is not None:
        raise TrainingFailed(f"training {config.name}@{config.version} failed: {result.error}")
    if result.checkpoint is None:
        raise TrainingFailed(f"training {config.name}@{config.version} reported no checkpoint")
    final = output / f"{config.name}-{config.version}.pt"
    with result.checkpoint.as_directory() as folder:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(folder) / "model.pt", final)
    card = registry.register(config.name, final)
    log.info("registered %s (%s) after %.0f s", card.key, final, time.perf_counter() - started)
    return result
