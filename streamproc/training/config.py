"""The configuration of a triplet-training run, read from ``configs/train/*.yaml`` with overrides.

Batch composition. FaceNet (section 3.2) used ~40 faces per identity and ~1,800 faces per
mini-batch on a CPU cluster; this project's reference machine has 2 cores, so the defaults are
``identities_per_batch`` P=16 and ``images_per_identity`` K=4 (64 faces: 16·4·3 = 192 anchor-positive
pairs per step). Mining runs on the *global* batch of all workers, so the batch composition -- and
the gradient step -- do not depend on ``num_workers``, which must divide P·K.

>>> cfg = load_train_config(None, ["data=/tmp/lfw", "identities_per_batch=8"])
>>> cfg.global_batch, cfg.input_size
(32, 160)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from streamproc.config import load_validated
from streamproc.configbase import Section
from streamproc.models.architectures import ARCHITECTURES

__all__ = ["AugmentConfig", "TrainConfig", "load_train_config"]

DEFAULT_LR = {"adagrad": 0.05, "adam": 1e-3, "sgd": 0.01}


class AugmentConfig(Section):
    """Training-time image perturbations, after the paper's image-quality study (section 5.3).

    Example:
        >>> AugmentConfig(jpeg_prob=0.5).jpeg_quality
        (20, 90)
    """

    flip: bool = Field(True, description="mirror each face left-right with probability 0.5")
    jitter_px: int = Field(4, ge=0, le=32, description="random shift of up to this many pixels in x and y")
    jpeg_prob: float = Field(0.0, ge=0.0, le=1.0, description="probability of re-encoding a face as JPEG")
    jpeg_quality: tuple[int, int] = Field(
        (20, 90), description="JPEG quality range [low, high] drawn uniformly when re-encoding"
    )
    downscale_prob: float = Field(
        0.0, ge=0.0, le=1.0, description="probability of down-scaling a face and scaling it back up"
    )
    downscale_min_px: int = Field(
        40, ge=8, description="smallest side a face is down-scaled to (the paper tested down to 40x40)"
    )

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1 <= low <= high <= 100:
            raise ValueError(f"expected 1 <= low <= high <= 100, got low={low} high={high}")
        return value


class TrainConfig(Section):
    """One training run: model, data, batch, loss, optimiser, workers, output.

    Example:
        >>> TrainConfig(data=Path("lfw"), arch="nns2", init="scratch").input_size
        140
    """

    name: str = Field("facenet-trained", description="registry name of the trained model")
    version: str = Field("t1", description="version written into the model card (embedding-space id)")
    arch: str = Field(
        "inception_resnet_v1", description="architecture: nn1..nn4, nns1, nns2, inception_resnet_v1"
    )
    init: str = Field(
        "pretrained:facenet-irv1-128",
        description="'pretrained:<registry name>' to fine-tune a registered model, or 'scratch'",
    )
    embedding_dim: int = Field(128, description="embedding size (must equal the parent's when fine-tuning)")
    freeze_trunk: bool = Field(
        False,
        description="train only the embedding head; the trunk is frozen and the model runs in eval mode",
    )
    reinit_head: bool = Field(
        False, description="start the embedding head from random weights (the harmonic recipe's first stage)"
    )
    harmonic_with: str | None = Field(
        None,
        description=(
            "registry name of a frozen older model whose embeddings this one must be comparable with "
            "(harmonic triplet loss, FaceNet section 7); None: ordinary training"
        ),
    )
    crop_size: int | None = Field(
        None,
        ge=32,
        description=(
            "side of the cached face crops (the pipeline's align.image_size); default: the reference "
            "model's input with harmonic_with, else the architecture's input"
        ),
    )
    data: Path = Field(description="folder with one sub-folder of face images per identity")
    pairs: Path | None = Field(None, description="LFW-style pairs.txt; default: pairs.txt beside data")
    holdout_fold: int | None = Field(
        10,
        ge=1,
        description="pairs.txt fold (from 1) whose people are never trained on and whose pairs are evaluated",
    )
    train_folds: tuple[int, ...] | None = Field(
        tuple(range(1, 10)),
        description="train on the people of these pairs.txt folds only; None: every identity of data",
    )
    holdout_max_pairs: int | None = Field(
        None, ge=2, description="evaluate on at most this many holdout pairs (half same, half different)"
    )
    min_images_per_identity: int = Field(2, ge=2, description="identities with fewer images are not used")
    max_identities: int | None = Field(
        None, ge=2, description="use at most this many identities (first by name)"
    )
    max_images_per_identity: int | None = Field(
        None, ge=2, description="use at most this many images of each"
    )
    detector: Literal["mtcnn", "haar"] = Field(
        "mtcnn", description="face detector that makes the training crops"
    )
    crops_cache: Path = Field(Path("out/train/crops"), description="folder of cached aligned face crops")
    identities_per_batch: int = Field(16, ge=2, description="P: identities in one global batch")
    images_per_identity: int = Field(4, ge=2, description="K: images of each identity in one global batch")
    small_identities: Literal["replace", "skip"] = Field(
        "replace",
        description="identities with fewer than K images: sample them with replacement, or never sample them",
    )
    margin: float = Field(0.2, gt=0.0, description="triplet margin alpha on squared L2 distances")
    mining: Literal["semi-hard", "hardest", "random"] = Field("semi-hard", description="negative selection")
    optimizer: Literal["adagrad", "adam", "sgd"] = Field(
        "adagrad", description="optimiser (the paper: AdaGrad)"
    )
    lr: float | None = Field(
        None, gt=0.0, description="learning rate; default 0.05 (adagrad), 1e-3 (adam), 0.01 (sgd)"
    )
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")
    epochs: int = Field(
        1, ge=1, description="epochs; metrics, holdout evaluation and a checkpoint after each"
    )
    steps_per_epoch: int = Field(50, ge=1, description="optimizer steps per epoch")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel, DDP)")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs (and torch threads) of each worker")
    use_gpu: bool = Field(False, description="one GPU per worker (DDP over NCCL); CPU uses gloo")
    eval_batch_size: int = Field(64, ge=1, description="faces per forward pass when evaluating")
    augment: AugmentConfig = Field(AugmentConfig(), description="training-time perturbations")
    seed: int = Field(0, description="seed of model initialisation, batch sampling, augmentation, mining")
    output: Path = Field(
        Path("out/train"), description="folder of Ray results, checkpoints and the final model"
    )
    progress: bool = Field(True, description="show progress bars")

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {value!r}; choose one of: {', '.join(ARCHITECTURES)}")
        return value

    @field_validator("init")
    @classmethod
    def _init(cls, value: str) -> str:
        if value != "scratch" and not (value.startswith("pretrained:") and len(value) > len("pretrained:")):
            raise ValueError(f"expected 'scratch' or 'pretrained:<registry name>', got {value!r}")
        return value

    @field_validator("embedding_dim")
    @classmethod
    def _embedding_dim(cls, value: int) -> int:
        if value not in (64, 128, 256, 512):
            raise ValueError(f"expected one of 64, 128, 256, 512, got {value}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        if self.global_batch % self.num_workers:
            raise ValueError(
                f"num_workers={self.num_workers} must divide the global batch identities_per_batch x "
                f"images_per_identity = {self.identities_per_batch} x {self.images_per_identity} = {self.global_batch}"
            )
        if self.train_folds is not None and self.holdout_fold in self.train_folds:
            raise ValueError(
                f"holdout_fold={self.holdout_fold} is also in train_folds={list(self.train_folds)}"
            )
        if self.reinit_head and self.init == "scratch":
            raise ValueError("reinit_head=true with init='scratch': a model from scratch is random already")
        if self.freeze_trunk and self.init == "scratch":
            raise ValueError("freeze_trunk=true with init='scratch' would train a head on a random trunk")
        return self

    @property
    def input_size(self) -> int:
        """Side of the square input of ``arch`` (the crop size)."""
        return ARCHITECTURES[self.arch].input_size

    @property
    def global_batch(self) -> int:
        return self.identities_per_batch * self.images_per_identity

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def parent(self) -> str | None:
        """The registry name of the model fine-tuned, or None from scratch."""
        return None if self.init == "scratch" else self.init.removeprefix("pretrained:")

    @property
    def pairs_file(self) -> Path:
        return self.pairs if self.pairs is not None else self.data.parent / "pairs.txt"


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML file (``None``: defaults), apply ``key=value`` overrides, validate."""
    return load_validated(TrainConfig, path, overrides, what="training config")
