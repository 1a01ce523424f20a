#!/usr/bin/python3
"""A small RTSP test server on GStreamer's rtsp-server; run it with the system python (needs ``gi``).

    /usr/bin/python3 rtsp_server.py --port 8554                     # live test pattern
    /usr/bin/python3 rtsp_server.py --port 8554 --file a.mp4 --loop # a file, played in real time

Serves ``rtsp://127.0.0.1:PORT/MOUNT`` (H.264 over RTP), prints ``READY <url>`` once listening and
exits cleanly on SIGTERM or SIGINT. Every client gets its own pipeline, so a new session starts from
the beginning of the file (or a fresh test pattern with times from zero).

Files are decoded by a separate pipeline paced by the clock and pushed into an ``appsrc`` with times
counted in frames, so ``--loop`` seeks only the private decoding pipeline and the RTP times keep
increasing.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODE = (
    "videoconvert ! video/x-raw,format=I420 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bframes=0 ! "
    "rtph264pay name=pay0 pt=96 config-interval=-1"
)


class FileFeeder:
    """Decode a file at real-time pace into an appsrc; loop or end the stream at the end of the file."""

    def __init__(self, path: str, appsrc: Gst.Element, loop: bool) -> None:
        self.appsrc = appsrc
        self.loop = loop
        self.frames = 0
        self.frame_ns = Gst.SECOND // 25
        self.pipeline = Gst.parse_launch(
            f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! '
            "appsink name=sink sync=true emit-signals=true max-buffers=4"
        )
        self.pipeline.get_by_name("sink").connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)
        self.pipeline.set_state(Gst.State.PLAYING)

    def _on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if self.appsrc.get_property("caps") is None:
            caps = sample.get_caps()
            ok, num, den = caps.get_structure(0).get_fraction("framerate")
            self.frame_ns = Gst.SECOND * den // num if ok and num > 0 else Gst.SECOND // 25
            self.appsrc.set_property("caps", caps)
        buffer = sample.get_buffer().copy_deep()  # the decoder reuses its memory
        # our own times: they keep increasing across loops and stay evenly spaced even when
        # frames arrive in a burst (start, after a seek), which the encoder's rate control needs
        buffer.pts = buffer.dts = self.frames * self.frame_ns
        buffer.duration = self.frame_ns
        self.frames += 1
        self.appsrc.emit("push-buffer", buffer)
        return Gst.FlowReturn.OK

    def _on_message(self, bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.EOS:
            if self.loop:
                self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
            else:
                self.appsrc.emit("end-of-stream")
        elif message.type == Gst.MessageType.ERROR:
            err, _ = message.parse_error()
            print(f"feeder error: {err.message}", file=sys.stderr, flush=True)
            self.appsrc.emit("end-of-stream")

    def stop(self) -> None:
        self.pipeline.get_bus().remove_signal_watch()
        self.pipeline.set_state(Gst.State.NULL)


def make_factory(args: argparse.Namespace) -> GstRtspServer.RTSPMediaFactory:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(False)
    encode = ENCODE.format(gop=max(1, round(args.fps)))
    if args.file is None:
        caps = f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1"
        factory.set_launch(f"( videotestsrc is-live=true pattern=ball ! {caps} ! {encode} )")
        return factory
    factory.set_launch(f"( appsrc name=src is-live=true format=time ! {encode} )")

    def on_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name_recurse_up("src")
        feeder = FileFeeder(args.file, appsrc, args.loop)
        media.connect("unprepared", lambda _media: feeder.stop())

    factory.connect("media-configure", on_configure)
    return factory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--mount", default="/stream", help="path of the stream in the URL")
    parser.add_argument("--file", default=None, help="serve this video file; default: a live test pattern")
    parser.add_argument("--loop", action="store_true", help="with --file: start over at the end")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, make_factory(args))
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
