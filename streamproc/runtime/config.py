"""Runtime section: how the pipeline is placed on Ray (or run in-process)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamproc.configbase import Section


class RuntimeConfig(Section):
    runner: Literal["ray", "local"] = Field("ray", description="ray actors, or everything in this process")
    ray_address: str | None = Field(
        None, description="Ray cluster address; None = STREAMPROC_RAY_ADDRESS, else start a local cluster"
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
