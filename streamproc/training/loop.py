"""The per-worker training loop of Ray Train: ``train_loop_per_worker(config)``.

``config`` is the plain dict the launcher builds (:func:`streamproc.training.launch.worker_config`):

* ``"train"``: the ``TrainConfig`` as JSON; ``"train_files"``: ``identity -> relative image paths``
  (the crops are already cached by the launcher, workers only read them);
* ``"holdout"``: ``{"files", "left", "right", "same"}`` of the held-out pairs, or None;
* ``"parent_checkpoint"``: the checkpoint file to fine-tune, or None from scratch.

Each step: sample the global P x K batch, take this rank's shard, augment, embed, mine on the global
batch (``streamproc.training.distributed``), step. After each epoch rank 0 evaluates the held-out
pairs (accuracy at the accuracy-optimal threshold, VAL at FAR <= 1e-3) and writes a checkpoint
directory: ``model.pt`` (a self-describing streamproc checkpoint: the model is rebuilt from it
alone), ``state.pt`` (optimizer and epoch, to resume) and ``config.json``. Every rank calls
``ray.train.report`` once per epoch. A run restarted with a checkpoint resumes after its epoch.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from streamproc.align import adapt_crops
from streamproc.errors import ConfigError
from streamproc.eval.verification import best_threshold, squared_l2, val_at_far
from streamproc.models.architectures import build
from streamproc.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from streamproc.models.embedder import preprocess
from streamproc.training.config import TrainConfig
from streamproc.training.data import FaceCrops, PKSampler, augment, build_crops
from streamproc.training.distributed import global_triplet_loss, rank_and_world_size
from streamproc.training.harmonic import harmonic_triplet_loss
from streamproc.training.losses import TripletLoss, TripletStats
from streamproc.training.miners import Miner, build_miner

log = logging.getLogger(__name__)

__all__ = ["StepResult", "evaluate_pairs", "make_optimizer", "train_loop_per_worker", "train_step"]

HEAD_PREFIXES = ("bottleneck", "embedding", "head")  # Inception-ResNet-v1; Inception/ZF nets; MobileFaceNet


@dataclass(frozen=True)
class StepResult:
    """The global loss ``L`` of one step and its triplet statistics (the same on every rank).

    Example:
        >>> StepResult(0.1, TripletStats.empty()).loss
        0.1
    """

    loss: float
    stats: TripletStats


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    miner: Miner,
    loss_fn: TripletLoss,
    old: torch.Tensor | None = None,
) -> StepResult:
    """One optimizer step on this rank's shard, mining on the global batch (exact DDP gradient).

    With ``old`` (a frozen older model's embeddings of the same faces) the loss is harmonic.
    """
    optimizer.zero_grad(set_to_none=True)
    new = model(inputs)
    if old is None:
        out = global_triplet_loss(new, labels, miner, loss_fn)
    else:
        out = harmonic_triplet_loss(new, old, labels, miner, loss_fn)
    out.backward_loss.backward()
    optimizer.step()
    return StepResult(float(out.loss), out.stats)


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    lr, decay = config.learning_rate, config.weight_decay
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)


def trainable_parameters(model: nn.Module, freeze_trunk: bool) -> list[nn.Parameter]:
    """Parameters to optimise; with ``freeze_trunk`` only the head's, the rest lose requires_grad."""
    if not freeze_trunk:
        return [p for p in model.parameters() if p.requires_grad]
    head = []
    for name, param in model.named_parameters():
        in_head = name.startswith(HEAD_PREFIXES)
        if not in_head:
            param.requires_grad_(False)
        elif param.requires_grad:
            head.append(param)
    if not head:
        raise ConfigError(f"freeze_trunk: no head parameters named {HEAD_PREFIXES} in this model")
    return head


def _with_new_head(config: TrainConfig, parent: nn.Module) -> nn.Module:
    """A fresh ``config.arch`` model holding ``parent``'s trunk and a random head (seeded)."""
    torch.manual_seed(config.seed)
    model = build(config.arch, config.embedding_dim)
    trunk = {k: v for k, v in parent.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    if unexpected or any(not k.startswith(HEAD_PREFIXES) for k in missing):
        raise ConfigError(
            f"reinit_head: the parent's trunk does not fit {config.arch}: {missing} {unexpected}"
        )
    return model


def initial_model(config: TrainConfig, parent_checkpoint: str | None) -> tuple[nn.Module, ModelCard | None]:
    """The parent model from its checkpoint (with a new head if asked), or a fresh seeded one."""
    if parent_checkpoint is not None:
        model, card = load_checkpoint(Path(parent_checkpoint))
        if config.reinit_head:
            return _with_new_head(config, model), card
        if (card.arch, card.embedding_dim) != (config.arch, config.embedding_dim):
            raise ConfigError(
                f"init {config.init} is {card.arch} with {card.embedding_dim}-D embeddings, but the config "
                f"says arch={config.arch} embedding_dim={config.embedding_dim}"
            )
        return model, card
    torch.manual_seed(config.seed)
    return build(config.arch, config.embedding_dim), None


def model_input(crops: np.ndarray, points: np.ndarray | None, card: ModelCard) -> np.ndarray:
    """Cached pipeline crops as ``card``'s model sees them (resized, or warped by the landmarks)."""
    if crops.shape[1] == card.input_size and card.alignment == "crop":
        return np.array(crops)  # a writable copy of the memmap rows
    marks = np.full((len(crops), 5, 2), np.nan, np.float32) if points is None else points
    return adapt_crops(np.asarray(crops), marks, card.alignment, card.input_size)


def embed_crops(
    model: nn.Module, crops: np.ndarray, card: ModelCard, batch_size: int, points: np.ndarray | None = None
) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 -> ``(N, D)`` float32 with the model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            marks = None if points is None else points[start : start + batch_size]
            batch = preprocess(model_input(crops[start : start + batch_size], marks, card), card)
            out.append(model(batch.to(next(model.parameters()).device)).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


def evaluate_pairs(
    embeddings: np.ndarray,
    rows: dict[str, int],
    holdout: dict[str, Any],
    gallery: np.ndarray | None = None,
    prefix: str = "holdout_",
) -> dict[str, float]:
    """Accuracy at the accuracy-optimal threshold and VAL at FAR <= 1e-3 on the held-out pairs.

    With ``gallery`` (another model's embeddings of the same rows) the right side of each pair
    comes from it: mixed-model verification.
    """
    left = embeddings[[rows[f] for f in holdout["left"]]]
    right = (embeddings if gallery is None else gallery)[[rows[f] for f in holdout["right"]]]
    dist, same = squared_l2(left, right), np.array(holdout["same"], bool)
    threshold = best_threshold(dist, same)
    val, val_threshold = val_at_far(dist, same, 1e-3)
    return {
        f"{prefix}accuracy": float(np.mean((dist <= threshold) == same)),
        f"{prefix}threshold": threshold,
        f"{prefix}val_at_far_1e-3": val,
        f"{prefix}val_threshold": val_threshold,
        f"{prefix}pairs": float(len(same)),
    }


class _Evaluator:
    """Rank 0's held-out evaluation; a no-op without held-out pairs.

    The other workers wait at ``ray.train.report`` meanwhile, so on CPU it borrows their threads.
    """

    def __init__(
        self,
        config: TrainConfig,
        holdout: dict[str, Any] | None,
        world_size: int,
        reference: dict[str, Any] | None = None,
    ) -> None:
        self.holdout = holdout
        self.config = config
        self.threads = config.cpus_per_worker * world_size
        self.crops: FaceCrops | None = None
        self.reference: np.ndarray | None = None  # the old model's holdout embeddings (harmonic runs)
        if holdout is not None:
            self.crops = build_crops(
                config.data,
                {"holdout": holdout["files"]},
                config.crops_cache,
                detector=config.detector,
                image_size=crop_size(config),
                progress=False,
            )
            if reference is not None:
                self.reference = np.load(reference["holdout"])

    def __call__(self, model: nn.Module, card: ModelCard) -> dict[str, float]:
        if self.holdout is None or self.crops is None:
            return {}
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            emb = embed_crops(model, self.crops.crops, card, self.config.eval_batch_size, self.crops.points)
        finally:
            torch.set_num_threads(threads)
        rows = self.crops.row_of()
        metrics = evaluate_pairs(emb, rows, self.holdout)
        if self.reference is not None:  # new-model probes against an old-model gallery
            metrics.update(evaluate_pairs(emb, rows, self.holdout, self.reference, prefix="holdout_mixed_"))
        return metrics


def crop_size(config: TrainConfig) -> int:
    """Side of the cached crops: ``crop_size``, else the architecture's input."""
    return config.crop_size or config.input_size


def _card(
    config: TrainConfig,
    parent: ModelCard | None,
    metrics: dict[str, Any],
    n_images: int,
    reference_version: str | None = None,
) -> ModelCard:
    thresholds = (
        {config.version: float(metrics["holdout_threshold"])} if "holdout_threshold" in metrics else {}
    )
    compatible: tuple[str, ...] = (config.version,)
    if reference_version is not None:
        compatible += (reference_version,)
        if "holdout_mixed_threshold" in metrics:
            thresholds[reference_version] = float(metrics["holdout_mixed_threshold"])
    return ModelCard(
        name=config.name,
        version=config.version,
        arch=config.arch,
        embedding_dim=config.embedding_dim,
        input_size=config.input_size,
        normalisation=parent.normalisation if parent else "prewhiten",
        mean=parent.mean if parent else 127.5,
        std=parent.std if parent else 128.0,
        alignment=parent.alignment if parent else "crop",
        compatible_with=compatible,
        thresholds=thresholds,
        parent=parent.key if parent else None,
        provenance={
            "trainer": "streamproc.training",
            "data": str(config.data),
            "training_images": n_images,
            "holdout_fold": config.holdout_fold,
            "harmonic_with": config.harmonic_with,
            "config": config.model_dump(mode="json"),
        },
        licence=parent.licence if parent else "",
        metrics=metrics,
    )


def _save(
    folder: Path, module: nn.Module, card: ModelCard, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    save_checkpoint(folder / "model.pt", module, card)
    torch.save({"optimizer": optimizer.state_dict(), **state}, folder / "state.pt")
    (folder / "config.json").write_text(json.dumps(card.provenance["config"], indent=2, sort_keys=True))


def _resume(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        trained, _ = load_checkpoint(Path(folder) / "model.pt")
        module.load_state_dict(trained.state_dict())
        state = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state.pop("optimizer"))
    return dict(state)


@dataclass
class _Run:
    """What one worker holds while training."""

    cfg: TrainConfig
    model: nn.Module  # DDP-wrapped when world_size > 1
    module: nn.Module  # the bare model (evaluation, checkpoints)
    optimizer: torch.optim.Optimizer
    card: ModelCard  # of the model being trained (normalisation for preprocess)
    parent: ModelCard | None
    data: FaceCrops
    sampler: PKSampler
    miner: Miner
    loss_fn: TripletLoss
    rank: int
    world: int
    reference: np.ndarray | None = None  # (N, D) the frozen old model's embeddings of the rows
    reference_version: str | None = None

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train ``steps_per_epoch`` steps; the epoch's mean loss and triplet statistics."""
        cfg = self.cfg
        self.model.train(not cfg.freeze_trunk)  # frozen trunk: BatchNorm keeps its running statistics
        device = next(self.module.parameters()).device
        sums = np.zeros(4)
        steps = range(epoch * cfg.steps_per_epoch, (epoch + 1) * cfg.steps_per_epoch)
        quiet = self.rank != 0 or not cfg.progress
        bar = tqdm(steps, desc=f"epoch {epoch}", unit="step", file=sys.stderr, disable=quiet, mininterval=5)
        for step in bar:
            batch = self.sampler.global_batch(step)
            positions = self.sampler.shard(np.arange(len(batch)), self.rank, self.world)
            rows = batch[positions]
            points = None if self.data.points is None else self.data.points[rows]
            crops = model_input(self.data.crops[rows], points, self.card)
            crops = augment(crops, positions, step, cfg.seed, cfg.augment)
            inputs = preprocess(crops, self.card).to(device)
            labels = torch.from_numpy(self.data.labels[rows]).to(device)
            old = None if self.reference is None else torch.from_numpy(self.reference[rows]).to(device)
            result = train_step(self.model, self.optimizer, inputs, labels, self.miner, self.loss_fn, old)
            s = result.stats
            sums += (result.loss, s.active_fraction, s.pos_distance, s.neg_distance)
            bar.set_postfix(loss=f"{result.loss:.4f}", active=f"{s.active_fraction:.2f}")
        mean = (sums / cfg.steps_per_epoch).tolist()
        return {"loss": mean[0], "active_fraction": mean[1], "pos_distance": mean[2], "neg_distance": mean[3]}

    def report(self, epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        """Every rank reports; rank 0 attaches the checkpoint directory."""
        import ray.train

        metrics = {k: float(v) for k, v in metrics.items()}
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        log.info("epoch %d: %s", epoch, json.dumps(metrics, sort_keys=True))
        card = _card(self.cfg, self.parent, metrics, len(self.data), self.reference_version)
        with tempfile.TemporaryDirectory() as folder:
            _save(Path(folder), self.module, card, self.optimizer, {"epoch": epoch, **state})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _setup(config: dict[str, Any]) -> tuple[_Run, dict[str, Any] | None]:
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["train"])
    rank, world = rank_and_world_size()
    torch.set_num_threads(cfg.cpus_per_worker)
    module, parent = initial_model(cfg, config.get("parent_checkpoint"))
    optimizer = make_optimizer(trainable_parameters(module, cfg.freeze_trunk), cfg)
    resumed = _resume(module, optimizer)
    data = build_crops(
        cfg.data,
        config["train_files"],
        cfg.crops_cache,
        detector=cfg.detector,
        image_size=crop_size(cfg),
        progress=False,
    )
    reference = config.get("reference")
    sampler = PKSampler(
        data.labels, cfg.identities_per_batch, cfg.images_per_identity, cfg.seed, cfg.small_identities
    )
    model = ray.train.torch.prepare_model(module)
    miner = build_miner(cfg.mining, cfg.margin, cfg.seed)
    card = _card(cfg, parent, {}, len(data))
    run = _Run(
        cfg,
        model,
        module,
        optimizer,
        card,
        parent,
        data,
        sampler,
        miner,
        TripletLoss(cfg.margin),
        rank,
        world,
        None if reference is None else np.load(reference["train"], mmap_mode="r"),
        None if reference is None else reference["version"],
    )
    return run, resumed


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    """The Ray Train worker function (module docstring); returns the last epoch's metrics."""
    run, resumed = _setup(config)
    evaluator = (
        _Evaluator(run.cfg, config.get("holdout"), run.world, config.get("reference"))
        if run.rank == 0
        else None
    )
    start_epoch = 0 if resumed is None else int(resumed["epoch"]) + 1
    initial: dict[str, float] = {} if resumed is None else dict(resumed["initial"])
    if resumed is None and evaluator is not None:
        initial = {f"initial_{k}": v for k, v in evaluator(run.module, run.card).items()}
        log.info("before training: %s", json.dumps(initial, sort_keys=True))
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, run.cfg.epochs):
        metrics = {"epoch": float(epoch), **run.epoch(epoch), **initial}
        metrics.update(evaluator(run.module, run.card) if evaluator is not None else {})
        run.report(epoch, metrics, {"initial": initial})
    return metrics
