"""A test RTSP server: Debian's gst-rtsp-server serving an H.264 .mp4 in an endless loop.

Run as a script under Debian's /usr/bin/python3 (it has python3-gi):
    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4 [--path /cam] [--user u --password p]
The file is looped by segment seeks (no re-encode): the first seek asks for a segment, and each
SEGMENT_DONE is answered by a non-flushing segment seek back to 0, so running time keeps growing.

From pytest, `RtspServer(file).start()` picks a free port, waits until the port accepts
connections and `stop()` kills the process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """Handle on a gst-rtsp-server subprocess serving `file` at rtsp://127.0.0.1:{port}{path}."""

    def __init__(self, file: Path, *, port: int | None = None, path: str = "/cam",
                 user: str | None = None, password: str | None = None) -> None:
        self.file = Path(file)
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
        pipeline = media.get_element().get_parent() or media.get_element()

        def seek(flags: Gst.SeekFlags, position: int) -> bool:
            if not pipeline.seek(1.0, Gst.Format.TIME, flags | Gst.SeekFlags.SEGMENT,
                                 Gst.SeekType.SET, position, Gst.SeekType.NONE, -1):
                print("segment seek refused", file=sys.stderr, flush=True)
            return False

        def probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            event = info.get_event()
            if event is not None and event.type == Gst.EventType.SEGMENT_DONE:
                GLib.idle_add(seek, Gst.SeekFlags.NONE, 0)  # non-flushing: running time goes on
                return Gst.PadProbeReturn.DROP
            return Gst.PadProbeReturn.OK

        def on_new_state(media: GstRtspServer.RTSPMedia, state: int) -> None:
            # rtsp-media seeks on PLAY itself; turn that playback into a segment afterwards
            if state == Gst.State.PLAYING:
                ok, pos = pipeline.query_position(Gst.Format.TIME)
                GLib.idle_add(seek, Gst.SeekFlags.FLUSH, pos if ok else 0)

        pay = media.get_element().get_by_name("pay0")
        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, probe)
        media.connect("new-state", on_new_state)

    class LoopingFactory(GstRtspServer.RTSPMediaFactory):
        def do_configure(self, media: GstRtspServer.RTSPMedia) -> None:
            media.connect("prepared", on_prepared)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = LoopingFactory()
    factory.set_launch(
        f'( filesrc location="{file}" ! qtdemux ! h264parse config-interval=-1 '
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)
    factory.set_stop_on_disconnect(False)
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
