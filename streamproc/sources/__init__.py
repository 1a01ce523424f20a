"""Video ingest: files and RTSP cameras decoded into ``FrameBatch`` es.

SourceConfig   what to read and how (sampling, batching, timeouts, reconnects, queue policy)
VideoSource    iterator of FrameBatch with a stall watchdog and reconnects through a Retry policy
Decoder        the PyAV adapter: one open file or stream as RGB frames with times in seconds
write_video    write test videos from numpy frames (libx264)
"""

from streamproc.sources.config import SourceConfig
from streamproc.sources.decode import DecodedFrame, Decoder, FpsSampler, PtsClock
from streamproc.sources.source import FrameQueue, VideoSource
from streamproc.sources.synth import moving_pattern, write_pattern_video, write_video

__all__ = [
    "DecodedFrame",
    "Decoder",
    "FpsSampler",
    "FrameQueue",
    "PtsClock",
    "SourceConfig",
    "VideoSource",
    "moving_pattern",
    "write_pattern_video",
    "write_video",
]
