"""Typed, validated configuration, loaded from YAML with ``key.path=value`` overrides.

Every section is a frozen pydantic model; unknown keys are an error.

>>> cfg = load_config(None, ["detector.kind=haar"])
>>> cfg.detector.kind
'haar'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from streamproc.configbase import Section
from streamproc.errors import ConfigError
from streamproc.gallery.config import GalleryConfig
from streamproc.runtime.config import RuntimeConfig
from streamproc.sources.config import SourceConfig, redact_uri
from streamproc.stages.config import AggregateConfig, DetectStageConfig, EmitConfig, TrackConfig

__all__ = ["Config", "ConfigError", "Section", "load_config", "load_validated", "parse_overrides"]
SectionT = TypeVar("SectionT", bound=Section)
_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


def check_device(value: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    >>> check_device("cpu")
    'cpu'
    """
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"expected cpu, cuda, cuda:N or mps, got {value!r}")
    if value == "cpu":
        return value
    import torch  # only for an accelerator: the CPU default stays cheap to validate

    if value == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("got 'mps' but this machine has no MPS device: use cpu")
        return value
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(value.partition(":")[2] or 0)
    if index >= count:
        raise ValueError(f"got {value!r} but this machine has {count} CUDA device(s): use cpu")
    return value


Device = Annotated[str, AfterValidator(check_device)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class DetectorConfig(Section):
    kind: Literal["mtcnn", "haar"] = Field("mtcnn", description="face detector: MTCNN or OpenCV Haar cascade")
    min_face_size: int = Field(20, ge=8, description="smallest face side in pixels to look for")
    thresholds: tuple[Probability, Probability, Probability] = Field(
        (0.6, 0.7, 0.7), description="MTCNN P/R/O-Net score thresholds, each in [0, 1]"
    )
    scale_factor: float = Field(0.709, gt=0.1, lt=1.0, description="MTCNN image-pyramid scale step")
    max_side: int | None = Field(
        None,
        ge=32,
        description="detect on a copy shrunk to this longer side (boxes mapped back, crops cut from the "
        "full frame), but never so far that min_face_size falls under the detector's window; None = full size",
    )
    device: Device = Field("cpu", description="torch device for the detector: cpu, cuda, cuda:N or mps")
    pick: Literal["center", "largest", "score"] = Field(
        "center", description="which face LFW evaluation and the demo take when a photo has several"
    )
    subject_area_ratio: float = Field(
        2.0,
        ge=1.0,
        allow_inf_nan=False,
        description="enrol / gallery search: the largest face is a photo's subject when its area is at "
        "least this many times the next largest's",
    )
    subject_score_margin: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="enrol / gallery search: or when its detector score beats every other face's by this "
        "much (and its area is not below 1/subject_area_ratio of the largest); else the photo is ambiguous",
    )


class AlignConfig(Section):
    mode: Literal["crop", "similarity"] = Field(
        "similarity",
        description="warp the 5 landmarks onto a template (default; +0.2 points on LFW), or crop the box "
        "with a margin (the only choice with the landmark-free Haar detector, which gets it by default)",
    )
    margin: float = Field(
        0.2, ge=0.0, le=1.0, description="crop mode: margin around the box as a fraction of its size"
    )
    image_size: int = Field(160, ge=32, le=1024, description="side of the square face crop in pixels")


class EmbedderConfig(Section):
    model: str = Field("facenet-irv1-128", description="model name in the registry")
    batch_size: int = Field(64, ge=1, description="faces per forward pass")
    device: Device = Field("cpu", description="torch device: cpu, cuda, cuda:N or mps")
    threads: int = Field(0, ge=0, le=256, description="torch intra-op threads; 0 = torch default")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="autocast dtype on CUDA (with channels_last); auto = bfloat16 where the GPU has it, "
        "else float16; other devices always run float32",
    )
    flip: bool = Field(
        False,
        description="also embed each crop mirrored and average the two (twice the model work; "
        "LFW stills: more people named at FPIR 1%, verification 0.1 point lower; README)",
    )


class ImageConfig(Section):
    max_pixels: int = Field(
        100_000_000,
        ge=1,
        description="refuse still images with more pixels than this (read from the file header, "
        "before decoding): a small compressed file can expand to gigabytes",
    )


class MetricsConfig(Section):
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve Prometheus /metrics on this port; None = off, 0 = any free port",
    )
    addr: str = Field("127.0.0.1", description="address to bind /metrics to; loopback unless set otherwise")


class Config(Section):
    """The whole configuration; each stage reads its own section."""

    detector: DetectorConfig = DetectorConfig()
    align: AlignConfig = AlignConfig()
    image: ImageConfig = ImageConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    gallery: GalleryConfig = GalleryConfig()
    detect: DetectStageConfig = DetectStageConfig()
    track: TrackConfig = TrackConfig()
    aggregate: AggregateConfig = AggregateConfig()
    emit: EmitConfig = EmitConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    metrics: MetricsConfig = MetricsConfig()
    sources: tuple[SourceConfig, ...] = Field((), description="video sources: files or rtsp:// URLs")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.detector.kind == "haar" and "mode" not in self.align.model_fields_set:
            object.__setattr__(self, "align", self.align.model_copy(update={"mode": "crop"}))
        if self.align.mode == "similarity" and self.detector.kind == "haar":
            raise ValueError(
                "align.mode='similarity' needs landmarks, but detector.kind='haar' gives none: "
                "use detector.kind=mtcnn or align.mode=crop"
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """The values as JSON types, with the passwords of the Redis URL and the sources masked."""
        out = self.model_dump(mode="json")
        if self.gallery.url is not None:
            out["gallery"]["url"] = redact_uri(self.gallery.url)
        for source in out["sources"]:
            source["uri"] = redact_uri(source["uri"])
        return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


SHIPPED = Path(__file__).resolve().parent / "configs"  # in a checkout, configs/ links here


def shipped_or_given(path: Path) -> Path:
    """``configs/...`` names a shipped config (``streamproc/configs/...``, in the wheel too) when there
    is no such file here, so ``--config configs/train/finetune-irv1.yaml`` works from any folder."""
    if path.exists() or path.is_absolute() or path.parts[:1] != ("configs",):
        return path
    shipped = SHIPPED.joinpath(*path.parts[1:])
    return shipped if shipped.is_file() else path


def load_validated(
    model: type[SectionT],
    path: str | Path | None,
    overrides: list[str] | None = None,
    *,
    what: str = "config",
) -> SectionT:
    """Read a YAML file (or defaults when None), apply ``key.path=value`` overrides, validate as ``model``."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = shipped_or_given(Path(path))
        if p.is_dir():
            raise ConfigError(f"{what} path {p} is a directory, not a {what} file")
        if not p.is_file():
            raise ConfigError(f"{what} file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} file {p} is not valid YAML: {_yaml_problem(exc)}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{what} file {p}: expected a mapping at the top, got {type(loaded).__name__}")
        tree = loaded
    tree = _deep_merge(tree, parse_overrides(overrides or []))
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}: " + "; ".join(map(_problem, exc.errors()))) from None


def _problem(error: Any) -> str:
    """One validation error on one line: ``key.path: what is wrong``."""
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key (not a setting of this section; check the spelling)"
    return f"{where}: {str(error['msg']).removeprefix('Value error, ')}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The YAML error on one line, with where it is."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """The pipeline's configuration: ``configs/*.yaml`` plus overrides, validated."""
    return load_validated(Config, path, overrides, what="config")
