"""Config sections of the per-frame stages: detect, track, aggregate, emit.

Each is a frozen pydantic model (unknown keys are an error); the top-level ``Config`` holds one of
each. The tracker reads ``DetectStageConfig.every_k_frames`` (to know which frames were detection
passes) and ``AggregateConfig`` (how many faces a track needs embedded), so those numbers live in
one place only.

>>> AggregateConfig().n_frames, TrackConfig().iou_threshold
(100, 0.3)
"""

from __future__ import annotations

from pydantic import Field, model_validator

from streamproc.configbase import Section


class ShotCutConfig(Section):
    """Hard-cut detection on every decoded frame (see ``streamproc.stages.schedule``).

    Example:
        >>> ShotCutConfig().enabled
        True
    """

    enabled: bool = Field(True, description="close every open track of a stream at a hard cut")
    histogram_change: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="a cut needs this much change of the colour histogram (0..1, half the L1 distance)",
    )
    pixel_change: float = Field(
        0.08,
        gt=0.0,
        le=1.0,
        description="and this mean absolute pixel change of a 64x36 thumbnail (0..1 of full scale)",
    )


class DetectStageConfig(Section):
    """How often the detector runs and how face quality is scored.

    Example:
        >>> DetectStageConfig(every_k_frames=3).every_k_frames
        3
    """

    every_k_frames: int = Field(
        5, ge=1, description="run the detector on every k-th frame of a stream; the tracker bridges the rest"
    )
    min_score: float = Field(
        0.0, ge=0.0, le=1.0, description="drop detections whose detector score is below this"
    )
    quality_face_size: int = Field(
        80,
        ge=1,
        description="face side (pixels) from which size stops lowering quality; quality = score * min(1, side / this)",
    )
    cuts: ShotCutConfig = Field(
        default_factory=ShotCutConfig,
        description="shot-cut detection; a cut frame always gets a detector pass",
    )


class TrackConfig(Section):
    """The per-stream tracker: IoU matching, then centre distance for fast faces.

    Example:
        >>> TrackConfig(max_missed=2).max_missed
        2
        >>> TrackConfig(max_face_speed=None).max_face_speed is None
        True
    """

    iou_threshold: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="least IoU between a predicted track box and a detection to match them",
    )
    max_missed: int = Field(
        5, ge=0, description="detection passes a track may go unmatched in a row before it is closed"
    )
    max_gap_s: float = Field(
        2.0, gt=0.0, description="seconds of stream time without a match after which a track is closed"
    )
    min_hits: int = Field(
        1,
        ge=1,
        description="matched detections in a row before a track gets an id (1 = every detection starts a track)",
    )
    max_face_speed: float | None = Field(
        3.0,
        gt=0.0,
        description="a track and a detection the IoU round left apart are paired (nearest centres first) "
        "when the gap, in face sizes, is at most this per second since the track's last match and "
        "their sizes differ by at most 2x; None = IoU only",
    )
    velocity_smoothing: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="weight of the newest box velocity in the running estimate used to predict boxes",
    )
    appearance_distance: float | None = Field(
        1.0,
        gt=0.0,
        le=4.0,
        description="a face whose embedding is farther (squared L2) than this from its track's running "
        "mean embedding starts a new track, and the old one is decided; None = boxes only",
    )
    check_every: int = Field(
        1,
        ge=1,
        description="after a track's first aggregate.n_frames embedded faces, embed one face in this "
        "many so the appearance check goes on (1: every face; with more, a newcomer who takes a "
        "person's place for fewer passes keeps that person's track and name)",
    )


class AggregateConfig(Section):
    """Per-track aggregation of embeddings (YouTube Faces protocol of the paper: first 100 frames).

    Example:
        >>> AggregateConfig(n_frames=10, min_frames=3).min_frames
        3
    """

    n_frames: int = Field(100, ge=1, description="faces of a track aggregated into its final embedding")
    min_frames: int = Field(
        5, ge=1, description="faces a track needs before its first (revision 0) aggregate"
    )
    quality_weighted: bool = Field(
        False, description="weight each embedding by its face quality instead of a plain mean"
    )
    min_quality: float = Field(
        0.0, ge=0.0, le=1.0, description="faces below this quality are neither embedded nor aggregated"
    )
    recheck: bool = Field(
        False,
        description="keep embedding after n_frames and yield a new revision for every further n_frames faces",
    )
    decide_short: bool = Field(
        True,
        description="a track that closes with fewer than min_frames usable faces (but at least one) is "
        "still decided at close; False = such short appearances get no decision",
    )

    @model_validator(mode="after")
    def _min_not_above_n(self) -> AggregateConfig:
        if self.min_frames > self.n_frames:
            raise ValueError(f"min_frames ({self.min_frames}) must not exceed n_frames ({self.n_frames})")
        return self


class EmitConfig(Section):
    """Where decisions go.

    Example:
        >>> EmitConfig(jsonl_path="-").redis_stream is None
        True
    """

    jsonl_path: str | None = Field(
        None, description="append one JSON event per line to this file; '-' = standard output; None = off"
    )
    redis_stream: str | None = Field(
        None, description="XADD events to this Redis stream key (exactly once per event id); None = off"
    )
    dedupe_ttl_s: int = Field(
        7 * 24 * 3600, ge=1, description="seconds Redis remembers an event id to drop repeated writes"
    )
    stream_maxlen: int | None = Field(
        None, ge=1, description="trim the Redis stream to about this many entries; None = never trim"
    )
