"""Configuration of the gallery: where it lives, how embeddings are stored and how faces are matched.

>>> cfg = GalleryConfig(dtype="int8", match="best")
>>> cfg.prefix, cfg.k
('streamproc', 5)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from streamproc.errors import ConfigError
from streamproc.sources.config import redact_uri

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# squared L2 between unit vectors lies in [0, 4]; 0 would accept nothing
Distance = Annotated[float, Field(gt=0.0, le=4.0, allow_inf_nan=False)]


def check_threshold(value: float, what: str = "--threshold") -> float:
    """``value`` as a distance threshold, validated like ``gallery.threshold``.

    >>> check_threshold(float("nan"))
    Traceback (most recent call last):
    streamproc.errors.ConfigError: --threshold: Input should be a finite number, got nan
    """
    try:
        return TypeAdapter(Distance).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(f"{what}: {exc.errors()[0]['msg']}, got {value!r}") from None


class GalleryConfig(BaseModel):
    """Gallery section of the configuration (``gallery:`` in the YAML file).

    Example:
        >>> GalleryConfig(url="redis://localhost:6379/0").url
        'redis://localhost:6379/0'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        description="redis://, rediss:// (TLS) or unix:// URL with optional user:password; "
        "None = STREAMPROC_REDIS_URL, or an embedded server when that is unset too",
    )
    retry_s: float = Field(
        10.0, ge=0.0, le=3600.0, description="how long a Redis call is retried through a lost connection"
    )
    prefix: str = Field("streamproc", description="every gallery key starts with '<prefix>:'")
    dtype: Literal["float32", "int8"] = Field(
        "float32",
        description="storage of new model versions and of the search index: 512 or 128 bytes a face",
    )
    match: Literal["mean", "best"] = Field(
        "mean", description="compare a probe with each person's mean embedding or with their closest one"
    )
    retain_crops: bool = Field(
        False, description="keep aligned enrollment crops (needed to re-embed for a new model version)"
    )
    k: int = Field(5, ge=1, le=1000, description="candidates returned per probe by a gallery search")
    threshold: Distance | None = Field(
        None,
        description="largest squared L2 distance that names a person; None = chosen for the target "
        "fpir (the gallery's calibration, else the model's FAR curve at the gallery's size)",
    )
    fpir: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="target false-positive identification rate: the fraction of strangers given a name",
    )
    margin: float = Field(
        0.1,
        ge=0.0,
        le=4.0,
        allow_inf_nan=False,
        description="squared L2 distance by which the nearest person must beat the next one to be named "
        "(a near-tie is unknown); 0 = off. The calibration is made for this margin",
    )
    cluster_threshold: Distance = Field(
        1.0, description="squared L2 distance below which unknown faces are merged"
    )
    cluster_linkage: Literal["average", "complete", "single"] = Field(
        "average", description="agglomerative linkage used to group unknown faces"
    )
    cluster_max_unknowns: int = Field(
        5000, ge=2, description="most recent unknown faces clustered at once (memory grows as its square)"
    )
    unknown_retention_s: float | None = Field(
        None,
        gt=0,
        description="unknown faces older than this are erased by running jobs (checked every minute); "
        "None = kept until promoted or forgotten with `gallery forget-unknowns`",
    )
    changelog_maxlen: int = Field(
        100_000, ge=10, description="change-log entries kept (approximately); lagging replicas reload"
    )
    embedded_dir: Path | None = Field(
        None, description="data folder of the embedded server; None = <STREAMPROC_DATA_DIR>/redis"
    )
    ann_min_size: int | None = Field(
        50_000,
        ge=1,
        description="identities from which search uses the approximate index; None = always exact",
    )
    ann_index: Literal["ivfpq", "pq", "hnsw", "ivf"] = Field(
        "ivfpq",
        description="approximate index: 4-bit PQ codes in k-means cells, the nearest ann_ivf_share of them "
        "scanned (fastest at 1M), full scan of those codes, HNSW graph or IVF cells",
    )
    ann_nlist: int = Field(
        0, ge=0, description="k-means cells; 0 = sqrt(rows) for ivfpq (1,000 at 1M), 2 * sqrt(rows) for ivf"
    )
    ann_nprobe: int = Field(
        64, ge=1, description="ivf: cells scanned per probe: more = better recall, slower"
    )
    ann_ivf_share: float = Field(
        0.375, gt=0, le=1, description="ivfpq: share of the cells scanned per probe (at least one)"
    )
    ann_storage: Literal["flat", "sq8"] = Field(
        "flat", description="approximate index storage: float32 rows or 8-bit codes (re-ranked exactly)"
    )
    ann_candidates: int = Field(32, ge=1, description="approximate candidates per probe re-ranked exactly")
    ann_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="faiss OpenMP threads of the whole matcher process (decoder and embedder included); "
        "2 halves a 1M search where two cores are free for it",
    )
    ann_hnsw_m: int = Field(
        32, ge=2, le=256, description="HNSW links a node: more = better recall, slower build"
    )
    ann_hnsw_ef_construction: int = Field(
        40, ge=1, description="HNSW build beam: more = better graph, slower"
    )
    ann_pq_m: int = Field(
        32, ge=1, le=256, description="PQ scan: 4-bit codes a row (must divide the dimension)"
    )
    ann_hnsw_ef_search: int = Field(
        128, ge=1, description="HNSW search beam: more = better recall, slower search"
    )
    search_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="exact search on a CUDA GPU (torch, float16) when 'auto' finds one or 'cuda'"
    )
    index_cache_dir: Path | None = Field(
        None,
        description="where an approximate index is saved so a restart does not rebuild it; "
        "None = <STREAMPROC_DATA_DIR>/index",
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError(f"expected 1-64 letters, digits, '_', '.' or '-', got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_URL_SCHEMES):
            shown = redact_uri(value)  # the message reaches logs: never with the password
            raise ValueError(f"expected a URL starting with {', '.join(_URL_SCHEMES)}, got {shown!r}")
        return value
