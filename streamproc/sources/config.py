"""Configuration of one video source (a file or a live RTSP camera).

Example:
    >>> cfg = SourceConfig(uri="rtsp://cam1.local:8554/stream", sample_fps=5)
    >>> cfg.stream_id, cfg.is_live, cfg.queue_policy
    ('cam1.local-8554-stream', True, 'drop_oldest')
    >>> SourceConfig(uri="/videos/lobby.mp4").stream_id
    'lobby'
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamproc import env

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp"})
NETWORK_SCHEMES = LIVE_SCHEMES | {"http", "https", "tcp"}


def uri_scheme(uri: str) -> str:
    """Lower-case URL scheme, or '' for a plain path (a one-letter scheme is a Windows drive)."""
    scheme = urlsplit(uri).scheme.lower()
    return "" if len(scheme) <= 1 else scheme


def is_network_uri(uri: str) -> bool:
    return uri_scheme(uri) in NETWORK_SCHEMES


def redact_uri(uri: str) -> str:
    """The URI without a password, safe for logs, errors and stream ids."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def stream_id_for(uri: str) -> str:
    """A readable id from a URI: the file stem, or host-port-path for a URL (never credentials)."""
    if uri_scheme(uri) in ("", "file"):
        text = PurePath(urlsplit(uri).path if uri_scheme(uri) == "file" else uri).stem
    else:
        parts = urlsplit(uri)
        text = "-".join(p for p in (parts.hostname, str(parts.port or ""), parts.path) if p and p != "/")
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "video"


class SourceConfig(BaseModel):
    """Where frames come from and how they are sampled, batched, watched and reconnected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(
        min_length=1,
        description="video file path, file:// or rtsp:// URL; or uri_env: NAME to read it from that "
        "environment variable (keeps a camera password out of the config file)",
    )
    stream_id: str = Field(
        "", description="id carried by every FrameBatch; default derived from the uri (no credentials)"
    )
    sample_fps: float | None = Field(
        None, gt=0, description="keep about this many frames per second of stream time; None = every frame"
    )
    batch_frames: int = Field(8, ge=1, le=1024, description="frames per FrameBatch (the last may be shorter)")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport asked of RTSP servers")
    open_timeout_s: float = Field(10.0, gt=0, description="give up opening (connect + probe) after this long")
    stall_timeout_s: float = Field(
        5.0, gt=0, description="watchdog: no decoded frame for this long means the source is disconnected"
    )
    reconnect_backoff_s: float = Field(0.5, ge=0, description="first wait before a reconnect attempt")
    reconnect_backoff_cap_s: float = Field(
        2.0,
        ge=0,
        description="longest wait between reconnect attempts; bounds the delay between a camera's "
        "return and its next frame (at most this plus the time to open the stream)",
    )
    max_reconnects: int | None = Field(
        None, ge=0, description="failed reconnect attempts in a row before giving up; None = forever (live)"
    )
    live: bool | None = Field(
        None,
        description="live source (reconnects, may drop frames); None = auto: rtsp/rtmp/udp live, file not",
    )
    max_width: int | None = Field(
        None, ge=16, description="downscale frames wider than this, keeping the aspect ratio; None = no"
    )
    queue_frames: int = Field(
        32, ge=1, description="decoded frames buffered between the reader thread and the consumer"
    )
    drop_policy: Literal["block", "drop_oldest"] | None = Field(
        None,
        description="when the buffer is full: block the reader, or drop (and count) the oldest frame; "
        "None = drop_oldest for live sources, block for files",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_uri(cls, data: Any) -> Any:
        """``uri_env: NAME`` takes the uri from that environment variable (a camera URL with a
        password kept in a Kubernetes Secret); the stream id is derived from the uri when not given."""
        if isinstance(data, dict) and "uri_env" in data:
            data = {**data}
            name = str(data.pop("uri_env"))
            if data.get("uri"):
                raise ValueError(f"give uri or uri_env, not both (uri_env={name})")
            data["uri"] = env.get_str(name)
            if data["uri"] is None:
                raise ValueError(f"uri_env: the environment variable {name} is not set")
        if isinstance(data, dict) and not data.get("stream_id") and isinstance(data.get("uri"), str):
            data = {**data, "stream_id": stream_id_for(data["uri"])}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> SourceConfig:
        if self.reconnect_backoff_cap_s < self.reconnect_backoff_s:
            raise ValueError(
                f"reconnect_backoff_cap_s={self.reconnect_backoff_cap_s} is below "
                f"reconnect_backoff_s={self.reconnect_backoff_s}: raise the cap or lower the base"
            )
        return self

    @property
    def is_live(self) -> bool:
        return self.live if self.live is not None else uri_scheme(self.uri) in LIVE_SCHEMES

    @property
    def queue_policy(self) -> Literal["block", "drop_oldest"]:
        if self.drop_policy is not None:
            return self.drop_policy
        return "drop_oldest" if self.is_live else "block"

    @property
    def display_uri(self) -> str:
        return redact_uri(self.uri)
