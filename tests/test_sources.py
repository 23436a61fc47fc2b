"""Frame sources against real files and a real RTSP server (gst-rtsp-server)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from support.footage import clip_1080p, corrupted_copy, garbage_file
from support.rtsp_server import RtspServer

from edge_agent.capture.sources import FileSource, RtspSource
from edge_agent.capture.sources.av_io import mask_url, with_credentials
from edge_agent.errors import AuthFailed, NeedsHuman, RetryLater

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def carphone() -> Path:
    return clip_1080p("carphone_pristine.mp4")


@pytest.fixture()
def rtsp(carphone: Path):
    with RtspServer(carphone, user="admin", password="p@ss w:rd") as srv:
        yield srv


def test_credentials_are_inserted_encoded_and_masked() -> None:
    """user:password go into the URL percent-encoded; logs see *** instead of the password."""
    url = with_credentials("rtsp://10.0.0.5:554/Streaming/101", "admin", "p@ss w:rd")
    assert url == "rtsp://admin:p%40ss%20w%3Ard@10.0.0.5:554/Streaming/101"
    assert mask_url(url) == "rtsp://admin:***@10.0.0.5:554/Streaming/101"
    assert with_credentials("rtsp://h/x", None, "pw") == "rtsp://h/x"


def test_file_loops_with_growing_timestamps(carphone: Path) -> None:
    """A looping file plays past its end with pts that keep growing (4 s clip, 150 frames = 6 s)."""
    stop = threading.Event()
    times = []
    for f in FileSource(str(carphone), realtime=False).frames(stop):
        times.append(f.time)
        if len(times) == 150:
            break
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] == pytest.approx(149 / 25, abs=0.05)


def test_file_realtime_is_paced_by_pts(carphone: Path) -> None:
    """Realtime mode delivers 25 frames in about one second."""
    stop = threading.Event()
    t0 = time.monotonic()
    for n, _ in enumerate(FileSource(str(carphone), realtime=True).frames(stop), start=1):
        if n == 26:
            break
    assert 0.85 <= time.monotonic() - t0 <= 1.6


def test_corrupted_file_skips_bad_packets(carphone: Path, tmp_path: Path) -> None:
    """Garbage over the middle of the mp4: bad packets are skipped, the rest decodes."""
    bad = corrupted_copy(carphone, tmp_path / "bad.mp4", length=150_000)
    frames = list(FileSource(str(bad), loop=False, realtime=False).frames(threading.Event()))
    assert 20 < len(frames) < 120


def test_garbage_and_missing_files_are_translated(tmp_path: Path) -> None:
    """Pure garbage is RetryLater, a missing file NeedsHuman; no PyAV error escapes."""
    with pytest.raises(RetryLater, match="InvalidData"):
        list(FileSource(str(garbage_file(tmp_path / "g.mp4")), realtime=False).frames(threading.Event()))
    with pytest.raises(NeedsHuman, match="not found"):
        list(FileSource(str(tmp_path / "none.mp4")).frames(threading.Event()))


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_delivers_1080p_frames(rtsp: RtspServer, transport: str) -> None:
    """Both transports deliver 1920x1080 frames whose pts grow by one frame, across the file's loop."""
    src = RtspSource(rtsp.url, transport=transport, username="admin", password="p@ss w:rd",
                     open_timeout_s=10, read_timeout_s=5)
    times: list[float] = []
    for f in src.frames(threading.Event()):
        assert (f.width, f.height) == (1920, 1080)
        times.append(f.time)
        if f.time > 4.2:  # the clip is 4 s long: a few frames into its second pass
            break
    steps = {round(b - a, 3) for a, b in zip(times, times[1:], strict=False)}
    # never a repeated or a sub-frame step (not at the loop either); UDP may lose a frame under load
    assert steps == {0.04} if transport == "tcp" else min(steps) == 0.04, steps
    assert times[0] < 4.0 < times[-1]


def test_rtsp_wrong_password_is_auth_failed(rtsp: RtspServer) -> None:
    """A 401 becomes AuthFailed (needs a human), and the message does not contain the password."""
    with pytest.raises(AuthFailed) as err:
        list(RtspSource(rtsp.url, username="admin", password="wrong-secret", open_timeout_s=10).frames(threading.Event()))
    assert "wrong-secret" not in str(err.value)


def test_rtsp_refused_is_retry_later() -> None:
    """Nothing listening: RetryLater quickly."""
    from devkit.localbroker import free_port

    t0 = time.monotonic()
    with pytest.raises(RetryLater):
        list(RtspSource(f"rtsp://127.0.0.1:{free_port()}/cam", open_timeout_s=2, read_timeout_s=2)
             .frames(threading.Event()))
    assert time.monotonic() - t0 < 3


def test_stalled_rtsp_stream_is_noticed(carphone: Path) -> None:
    """A server that stops sending (SIGSTOP) is noticed after one read_timeout (2 s), not two."""
    with RtspServer(carphone) as srv:
        src = RtspSource(srv.url, open_timeout_s=10, read_timeout_s=2)
        n = 0
        stalled_at = None
        try:
            with pytest.raises(RetryLater, match="timed out|Errno|Invalid"):
                for _ in src.frames(threading.Event()):
                    n += 1
                    if n == 5:
                        os.kill(srv.proc.pid, signal.SIGSTOP)
                        stalled_at = time.monotonic()
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert stalled_at is not None and 2.0 <= time.monotonic() - stalled_at < 3.5
