"""A test RTSP server: Debian's gst-rtsp-server serving an H.264 .mp4 in an endless loop.

Run as a script under Debian's /usr/bin/python3 (it has python3-gi):
    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4 [--path /cam] [--user u --password p]
The file is looped by segment seeks (no re-encode), one pipeline per client: when the media is
prepared (before any client is attached) a flushing segment seek makes the first pass a segment;
each SEGMENT_DONE is answered by a non-flushing segment seek back to 0, and pass n is given the
running time n x duration, so timestamps keep growing by one frame at every loop.

Why no flushing seek once a client plays: gst-rtsp-server 1.22's TCP sender thread can block in
appsink pull_sample() while holding the stream lock when a flush empties the appsink under it; the
streaming thread then waits for that lock (caps notify), the media thread too, and every later
RTSP request hangs (clients see an open timeout, then "Invalid data" on each reconnect).

From pytest, `RtspServer(file).start()` picks a free port, waits until the port accepts
connections and `stop()` kills the process.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    """Handle on a gst-rtsp-server subprocess serving `file` at rtsp://127.0.0.1:{port}{path}."""

    def __init__(self, file: Path, *, port: int | None = None, path: str = "/cam",
                 user: str | None = None, password: str | None = None) -> None:
        self.file = Path(file)
        from devkit.localbroker import free_port  # here: this file also runs as a script under /usr/bin/python3

        self.port = port or free_port()
        self.path = path
        self.user = user
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 10.0) -> RtspServer:
        cmd = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(self.port),
               "--file", str(self.file), "--path", self.path]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password or ""]
        self.log_path = Path(tempfile.gettempdir()) / f"bk-rtsp-server-{self.port}.log"
        with open(self.log_path, "wb") as log:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}: {err[-2000:]}")
            if "ready" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"RTSP server did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(port: int, file: str, path: str, user: str | None, password: str | None) -> None:  # pragma: no cover
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)

    def on_prepared(media: GstRtspServer.RTSPMedia) -> None:
        demux = media.get_element().get_by_name("demux")
        pay = media.get_element().get_by_name("pay0")
        sink = pay.get_static_pad("sink")

        ok, duration = demux.query_duration(Gst.Format.TIME)

        def seek(flags: Gst.SeekFlags) -> bool:
            # to the demuxer itself: before SETUP the pipeline has no sinks to carry a seek upstream.
            # An explicit stop: the next pass then starts exactly one file duration later.
            if not demux.seek(1.0, Gst.Format.TIME, flags | Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0,
                              Gst.SeekType.SET if ok else Gst.SeekType.NONE, duration if ok else -1):
                print("segment seek refused", file=sys.stderr, flush=True)
            return False

        passes = [0]  # completed passes over the file

        def on_downstream(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            event = info.get_event()
            if event is None:
                return Gst.PadProbeReturn.OK
            if event.type == Gst.EventType.SEGMENT_DONE:
                passes[0] += 1
                # non-flushing, so running time goes on and nothing is flushed under a streaming
                # client; from the main loop, not the streaming thread the seek waits for
                GLib.idle_add(seek, Gst.SeekFlags.NONE)
                return Gst.PadProbeReturn.DROP
            if event.type == Gst.EventType.SEGMENT and passes[0] and ok:
                # a non-flushing seek continues from the last frame's pts, so the first frame of
                # the next pass would repeat it (timestamps going back, for a camera's receiver):
                # pass n starts at n file durations instead
                seg = event.parse_segment()
                if seg.base != passes[0] * duration:
                    seg.base = passes[0] * duration
                    fixed = Gst.Event.new_segment(seg)
                    fixed.set_seqnum(event.get_seqnum())
                    pad.send_event(fixed)  # comes back through this probe with the right base
                    return Gst.PadProbeReturn.DROP
            return Gst.PadProbeReturn.OK

        sink.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_downstream)
        # The first pass becomes a segment too (SEGMENT_DONE, not EOS, at the end). This is the
        # only flushing seek, done while the media is prerolled and no client is attached yet.
        # PLAY reads the rates of the segment the payloader last sent (and aborts if there is
        # none): wait until the new segment and a buffer are through, before DESCRIBE is answered
        through = threading.Event()

        def on_buffer(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            through.set()
            return Gst.PadProbeReturn.REMOVE

        pay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
        seek(Gst.SeekFlags.FLUSH)
        if not through.wait(10):
            print("no buffer after the first segment seek", file=sys.stderr, flush=True)

    class LoopingFactory(GstRtspServer.RTSPMediaFactory):
        def do_configure(self, media: GstRtspServer.RTSPMedia) -> None:
            media.connect("prepared", on_prepared)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = LoopingFactory()
    factory.set_launch(
        f'( filesrc location="{file}" ! qtdemux name=demux ! h264parse config-interval=-1 '
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(False)  # a pipeline per client: no client's PLAY seek flushes another's
    if user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_from_structure(Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    if server.get_bound_port() != port:
        raise SystemExit(f"bound to {server.get_bound_port()} instead of {port}")
    print(f"ready on port {port}", file=sys.stderr, flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--user")
    ap.add_argument("--password")
    a = ap.parse_args()
    _serve(a.port, a.file, a.path, a.user, a.password)
    sys.exit(0)
