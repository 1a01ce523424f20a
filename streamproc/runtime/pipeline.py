"""``RayRunner``: the pipeline on a Ray cluster, many streams at once.

Design::

    source 1 ── StreamActor 1: decode · track · cut crops · aggregate ──┐
    source 2 ── StreamActor 2 (each schedules its own batches: Pump)  ──┼─ records ─► driver: match
    ...           frames ─► DetectActor pool (runtime.detectors > 0)    │  (GalleryIndex) · emit
                  crops ──► EmbedActor pool (crops of all streams)      ┘  (exactly once) · metrics

* **One stream actor per source** (``runtime.stream_cpus`` CPUs, ``max_restarts``) holds the
  per-stream state (reader thread, detect schedule, track, aggregate) and runs ``Pump``, the
  scheduler the local runner uses too: at most ``runtime.max_in_flight`` batches between read and
  aggregate, every model call made by the stream actor itself. By default MTCNN runs in the stream
  actor; with ``runtime.detectors`` > 0 a **pool of detector actors** (``detector_cpus`` each) gets
  the picked frames, so the batches of one large stream are detected in parallel.
* **A pool of ``runtime.embedders`` embedding actors** (``embedder_cpus`` CPUs each; ``num_gpus=1``
  each when the cluster has GPUs and ``gpus_per_embedder`` is -1) merges the crops of every stream
  into calls of up to ``embed_batch`` crops, waiting at most ``embed_max_wait_ms``. Frames and crops
  go actor to actor through the object store.
* **The driver** (``driver.Loop``) only receives records: it matches the decisions against the
  in-memory ``GalleryIndex``, emits them through the sinks (which drop repeated event ids), and
  keeps the stream actors going (restarts, stop, rolling upgrades). ``Outlet`` and its
  ``Controller`` are the same code the local runner uses.
* **Backpressure**: a stream actor holds a bounded outbox for the driver and a bounded number of
  batches in flight; a file's reader thread then waits (``block`` policy), a live source keeps
  decoding and drops the oldest frames, counted in ``frames_dropped_total``.
* **Failures**: a source error ends only its stream (its open tracks are still decided); a stream
  actor that dies is restarted up to ``max_restarts`` times (a file starts over: the same event ids,
  which the sinks drop; a camera reconnects), then its stream is reported failed.
* **Cluster**: see ``connect``. Only a connection this runner opened is shut down, and only the
  actors it created are killed.

Example:
    >>> summary = RayRunner(config, sinks=[JsonLinesSink("-")]).run()  # doctest: +SKIP
    >>> summary.ok, summary.fps  # doctest: +SKIP
    (True, 41.7)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from streamproc import env
from streamproc.annotate import Annotator
from streamproc.config import Config
from streamproc.errors import ConfigError
from streamproc.gallery.base import GalleryStore
from streamproc.gallery.index import GalleryIndex
from streamproc.metrics import Recorder
from streamproc.models import registry
from streamproc.retry import ExponentialBackoff, Retry
from streamproc.runtime.base import Runner
from streamproc.runtime.chain import RunSummary
from streamproc.runtime.config import RuntimeConfig
from streamproc.runtime.control import Controller
from streamproc.runtime.driver import Loop, Pools, StreamBook
from streamproc.runtime.outlet import Outlet
from streamproc.runtime.ray_actors import DetectActor, EmbedActor, StreamActor
from streamproc.stages.emit import Sink

log = logging.getLogger(__name__)


def connect(runtime: RuntimeConfig) -> bool:
    """Make sure Ray is initialised; True when this call initialised it (and must shut it down).

    A running cluster is joined when ``runtime.ray_address`` or ``STREAMPROC_RAY_ADDRESS`` names
    one, or when Ray's own ``RAY_ADDRESS`` is set (the driver of ``ray job submit`` or a KubeRay
    RayJob); it is joined with no resource arguments, which Ray refuses for a cluster it did not
    start. Otherwise a new local cluster (``address="local"``: never one found on the machine)
    gets ``runtime.num_cpus`` and ``object_store_mb``.
    """
    if ray.is_initialized():
        return False
    address = runtime.ray_address or env.ray_address() or env.ray_job_address()
    if address:
        if runtime.num_cpus is not None or "object_store_mb" in runtime.model_fields_set:
            log.warning(
                "runtime.num_cpus and runtime.object_store_mb size a local cluster only: "
                "ignored when joining the one at %s",
                address,
            )
        log.info("joining the Ray cluster at %s", address)

        def join() -> None:
            try:
                ray.init(address=address, include_dashboard=False)
            except ConnectionError:  # e.g. the head's client server could not start a server yet
                ray.shutdown()  # drop the half-made connection before the next try
                raise

        Retry(ExponentialBackoff(base=1.0, cap=4.0), attempts=3).call(join)
    else:
        ray.init(
            address="local",
            num_cpus=runtime.num_cpus,
            object_store_memory=runtime.object_store_mb * 2**20,
            include_dashboard=False,
        )
    return True


@dataclass(frozen=True)
class Placement:
    """Resources each actor asks Ray for (``detector_cpus`` is 0 without a detector pool)."""

    stream_cpus: float
    embedder_cpus: float
    embedder_gpus: float
    detector_cpus: float = 0.0


def threads(cpus: float) -> int:
    """The torch / OpenCV threads of an actor that reserved ``cpus``."""
    return max(1, int(cpus))


def plan(runtime: RuntimeConfig, n_streams: int, cpus: float, gpus: float) -> Placement:
    """Fit ``n_streams`` stream actors and the model pools into the cluster, or say why not.

    >>> plan(RuntimeConfig(), n_streams=2, cpus=2, gpus=0)
    Placement(stream_cpus=0.5, embedder_cpus=1.0, embedder_gpus=0.0, detector_cpus=0.0)
    """
    gpu_each = runtime.gpus_per_embedder if runtime.gpus_per_embedder >= 0 else (1.0 if gpus >= 1 else 0.0)
    if gpu_each * runtime.embedders > gpus + 1e-9:
        raise ConfigError(
            f"runtime.embedders={runtime.embedders} x gpus_per_embedder={gpu_each} needs "
            f"{gpu_each * runtime.embedders:g} GPUs, the cluster has {gpus:g}"
        )
    detector_cpus = runtime.detector_cpus if runtime.detectors else 0.0
    pools = runtime.embedders * runtime.embedder_cpus + runtime.detectors * detector_cpus
    if runtime.stream_cpus is not None:
        stream_cpus = runtime.stream_cpus
    else:
        stream_cpus = round(min(1.0, (cpus - pools) / n_streams), 4)
    need = pools + n_streams * stream_cpus
    if stream_cpus <= 0 or need > cpus + 1e-9:
        raise ConfigError(
            f"{n_streams} stream actor(s), {runtime.embedders} embedding actor(s) x {runtime.embedder_cpus:g} "
            f"CPUs and {runtime.detectors} detector actor(s) x {runtime.detector_cpus:g} CPUs need more than "
            f"the cluster's {cpus:g} CPUs: lower runtime.embedders / embedder_cpus / detectors / "
            "detector_cpus / stream_cpus, or add CPUs"
        )
    return Placement(stream_cpus, runtime.embedder_cpus, gpu_each, detector_cpus)


class RayRunner(Runner):
    """Runs ``config.sources`` on Ray; ``run()`` returns the same ``RunSummary`` as ``LocalRunner``.

    Example:
        >>> runner = RayRunner(load_config("configs/default.yaml", ["runtime.embedders=2"]))  # doctest: +SKIP
        >>> runner.run(duration_s=600).streams  # doctest: +SKIP
    """

    name = "ray"

    def __init__(
        self,
        config: Config,
        *,
        recorder: Recorder | None = None,
        sinks: Sequence[Sink] = (),
        store: GalleryStore | None = None,
        index: GalleryIndex | None = None,
        annotator: Annotator | None = None,
    ):
        super().__init__(
            config, recorder=recorder, sinks=sinks, store=store, index=index, annotator=annotator
        )
        self.placement: Placement | None = None

    def run(self, duration_s: float | None = None) -> RunSummary:
        started_ray = connect(self.config.runtime)
        actors: list[Any] = []
        outlet: Outlet | None = None
        control: Controller | None = None
        try:
            card = registry.card(self.config.embedder.model)
            outlet = self._outlet(card)
            pools, streams = self._start(card.version, card.embedding_dim, actors)
            control = self._controller(outlet, on_model=lambda serving: loop.start_upgrade(serving))
            loop = Loop(
                self.config.runtime, self.recorder, self._stop, outlet, pools, streams, duration_s, control
            )
            started = time.monotonic()
            outlet.start_clock()
            loop.run()
            return outlet.summary(self.name, time.monotonic() - started)
        finally:
            if control is not None:
                control.close()
            for actor in actors:
                ray.kill(actor)
            if outlet is not None:
                outlet.close()
            if started_ray:
                ray.shutdown()

    def _start(self, version: str, dim: int, actors: list[Any]) -> tuple[Pools, dict[str, StreamBook]]:
        rt, sources = self.config.runtime, self.config.sources
        res = ray.cluster_resources()
        placement = plan(rt, len(sources), float(res.get("CPU", 0)), float(res.get("GPU", 0)))
        self.placement = placement
        emb_cfg = self.config.embedder
        if placement.embedder_gpus > 0:
            emb_cfg = emb_cfg.model_copy(update={"device": "cuda"})
        # Pool calls are idempotent: retried until the actor answers again or Ray gives up on it
        # (ActorDiedError after max_restarts). A bounded count would be spent while a dead node is
        # not yet detected: every retry meets "actor temporarily unavailable" at once.
        retried = {"max_restarts": rt.max_restarts, "max_task_retries": -1}

        def start_embedders(model: str | None = None, cpus: float = placement.embedder_cpus) -> list[Any]:
            cfg = emb_cfg if model is None else emb_cfg.model_copy(update={"model": model})
            new = [
                EmbedActor.options(  # type: ignore[attr-defined]
                    num_cpus=cpus,
                    num_gpus=placement.embedder_gpus,
                    resources=rt.embedder_resources,
                    **retried,
                ).remote(cfg, threads(placement.embedder_cpus), rt.embed_batch, rt.embed_max_wait_ms)
                for _ in range(rt.embedders)
            ]
            actors.extend(new)  # killed at the end of the run
            return new

        embedders = start_embedders()
        detectors = [
            DetectActor.options(  # type: ignore[attr-defined]
                num_cpus=placement.detector_cpus, resources=rt.detector_resources, **retried
            ).remote(self.config.detector, threads(placement.detector_cpus))
            for _ in range(rt.detectors)
        ]
        actors.extend(detectors)
        streams: dict[str, StreamBook] = {}
        for source in sources:
            actor = StreamActor.options(  # type: ignore[attr-defined]
                num_cpus=placement.stream_cpus,
                resources=rt.stream_resources,
                max_restarts=rt.max_restarts,
                max_task_retries=0,
            ).remote(source, self.config, version, dim, threads(placement.stream_cpus), not detectors)
            actors.append(actor)
            streams[source.stream_id] = StreamBook(source.stream_id, actor)
        for got_version, got_dim in ray.get([e.info.remote() for e in embedders]):
            if (got_version, got_dim) != (version, dim):
                raise ConfigError(
                    f"embedding actors load model version {got_version} ({got_dim}-D), the driver "
                    f"expected {version} ({dim}-D): the cluster's model registry differs from this one"
                )
        ray.get([a.__ray_ready__.remote() for a in [*detectors, *(s.actor for s in streams.values())]])
        log.info(
            "ray: %d stream actor(s) x %.2f CPU, %d embedding actor(s) x %.2f CPU %.2f GPU, %d detector "
            "actor(s) x %.2f CPU", len(streams), placement.stream_cpus, len(embedders),
            placement.embedder_cpus, placement.embedder_gpus, len(detectors), placement.detector_cpus,
        )  # fmt: skip

        def upgrade(model: str) -> list[Any]:
            """New embedding actors for a rolling upgrade; on a full cluster they surge beyond the
            CPU reservations (num_cpus=0, same threads) until the old ones have drained."""
            free = float(ray.available_resources().get("CPU", 0.0))
            if free < placement.embedder_cpus * rt.embedders:
                log.warning("rolling upgrade: no free CPUs; new embedding actors surge past reservations")
                return start_embedders(model, cpus=0.0)
            return start_embedders(model)

        return Pools(embedders, detectors, version, upgrade), streams
