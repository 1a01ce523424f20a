"""Runtime section: how the pipeline is placed on Ray (or run in-process).

>>> RuntimeConfig(runner="local").max_in_flight
4
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from streamproc.configbase import Section


class RuntimeConfig(Section):
    """Runner choice, Ray cluster, actor placement and backpressure.

    Example:
        >>> RuntimeConfig(embedders=2, stream_cpus=0.5).stream_cpus
        0.5
    """

    runner: Literal["ray", "local"] = Field("ray", description="ray actors, or everything in this process")
    ray_address: str | None = Field(
        None,
        description="Ray cluster address; None = STREAMPROC_RAY_ADDRESS, else Ray's RAY_ADDRESS (set inside "
        "ray job submit), else start a local cluster",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started Ray cluster (None = all)")
    object_store_mb: int = Field(256, ge=64, description="object store of a locally started Ray cluster")
    embedders: int = Field(1, ge=1, description="embedding actors in the pool")
    embed_batch: int = Field(64, ge=1, description="most face crops per embedding call")
    embed_max_wait_ms: float = Field(20.0, ge=0, description="longest a partial embedding batch waits")
    max_in_flight: int = Field(4, ge=1, description="batches in flight per stream before ingest waits")
    gpus_per_embedder: float = Field(
        -1.0, description="GPUs per embedding actor; -1 = one if the cluster has GPUs, else none"
    )
    embedder_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each embedding actor (its threads)")
    detectors: int = Field(
        0,
        ge=0,
        description="detector actors in a pool shared by all streams; 0 = each stream actor runs its own "
        "detector (a pool detects the batches of one stream in parallel: for few, large streams)",
    )
    detector_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each detector actor (its threads)")
    stream_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs reserved by each stream actor (decode, detect, track, aggregate); "
        "None = share what the embedders leave, at most 1 each",
    )
    stream_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each stream actor asks for, to place it on the nodes that offer "
        'them (e.g. {"decode": 0.01} on nodes started with --resources=\'{"decode": 1}\')',
    )
    embedder_resources: dict[str, float] = Field(
        default_factory=dict,
        description='custom Ray resources each embedding actor asks for (e.g. {"embed": 0.01}); ask for '
        "a small share, so that a rolling upgrade's new embedders fit beside the old ones",
    )
    detector_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each detector actor asks for"
    )
    max_restarts: int = Field(
        3, ge=0, description="times Ray restarts a crashed actor (a restarted stream starts its source over)"
    )
    gallery_sync_s: float = Field(
        1.0, gt=0, description="seconds between gallery change-log syncs of the matcher's index"
    )
    stop_grace_s: float = Field(
        15.0, gt=0, description="on stop, how long streams get to close their open tracks before being killed"
    )

    @model_validator(mode="after")
    def _check_gpus(self) -> RuntimeConfig:
        if self.gpus_per_embedder < 0 and self.gpus_per_embedder != -1:
            raise ValueError(
                f"gpus_per_embedder: expected -1 (auto) or a value >= 0, got {self.gpus_per_embedder}"
            )
        return self

    @field_validator("stream_resources", "embedder_resources", "detector_resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory") or amount <= 0:
                raise ValueError(
                    f"expected custom resource names with amounts > 0 (CPUs and GPUs have their own "
                    f"options), got {name}: {amount}"
                )
        return value
