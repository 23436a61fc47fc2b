"""Live video pieces: the fragmented-MP4 reader (bk_contract.fmp4), the box's encoder and the cloud's relay."""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct

import av
import numpy as np
import pytest

from bk_contract import fmp4
from cloud_receiver.live.relay import LiveRelay
from edge_agent.live.encoder import LiveEncoder, LiveProfile

pytestmark = pytest.mark.unit


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, flags: int, body: bytes) -> bytes:
    return box(kind, struct.pack(">I", flags) + body)


def fragment(first_flags: int | None, *, tfhd_default: int | None = None) -> bytes:
    """moof(traf(tfhd, trun)) + mdat, with the first sample's flags given the three ways the format allows."""
    tfhd = full(b"tfhd", 0x20 if tfhd_default is not None else 0,
                struct.pack(">I", 1) + (struct.pack(">I", tfhd_default) if tfhd_default is not None else b""))
    if first_flags is None:
        trun = full(b"trun", 0x01, struct.pack(">Ii", 1, 0))
    else:
        trun = full(b"trun", 0x01 | 0x04, struct.pack(">IiI", 1, 0, first_flags))
    return box(b"moof", box(b"traf", tfhd + trun)) + box(b"mdat", b"\x00" * 5)


def test_keyframe_flags_read_the_three_ways():
    """The first sample's flags come from trun's first_sample_flags, else tfhd's default, else trex's."""
    assert fmp4.starts_with_keyframe(fragment(0x02000000))
    assert not fmp4.starts_with_keyframe(fragment(0x01010000))
    assert not fmp4.starts_with_keyframe(fragment(None, tfhd_default=fmp4.NON_SYNC))
    assert fmp4.starts_with_keyframe(fragment(None, tfhd_default=0))
    assert not fmp4.starts_with_keyframe(fragment(None), trex_flags=fmp4.NON_SYNC)


def test_split_keeps_incomplete_tail_and_rejects_nonsense():
    """Complete pieces are cut off the front, a partial box stays for later; a box of size 3 is an error."""
    init = box(b"ftyp", b"isom") + box(b"moov", b"x")
    frag = fragment(0)
    pieces, rest = fmp4.split_pieces(init + frag + frag[:10])
    assert pieces == [init, frag] and rest == frag[:10]
    with pytest.raises(fmp4.Fmp4Error):
        fmp4.split_pieces(struct.pack(">I4s", 3, b"moof") + b"\x00" * 8)
    with pytest.raises(fmp4.Fmp4Error, match="claims"):
        list(fmp4.boxes(struct.pack(">I4s", 100, b"moof")))


def _frames(n: int, fps: float = 25.0):
    for i in range(n):
        img = np.zeros((720, 1280, 3), np.uint8)
        img[:, (i * 20) % 1280:(i * 20) % 1280 + 100] = 250
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        yield frame, i / fps


def test_encoder_emits_init_before_each_keyframe_at_the_profile_rate():
    """Fed 25 fps for 3 s, the encoder keeps 12 fps, scales to 640x360, a keyframe each second with its init."""
    enc = LiveEncoder(LiveProfile(fps=12, gop_s=1.0))
    pieces = [p for frame, t in _frames(75) for p in enc.feed(frame, t)]
    inits = [p for p in pieces if fmp4.is_init(p)]
    frags = [p for p in pieces if not fmp4.is_init(p)]
    keys = [i for i, p in enumerate(frags) if fmp4.starts_with_keyframe(p, fmp4.default_sample_flags(inits[0]))]
    assert 34 <= enc.frames <= 37  # 12 fps of 3 s
    assert keys[:3] == [0, 12, 24] and len(inits) == len(keys)
    assert fmp4.codec_string(inits[0]).startswith("avc1.42")  # constrained baseline: no B-frames
    stream = av.open(io.BytesIO(inits[0] + b"".join(frags[:12])))
    video = stream.streams.video[0]
    assert (video.codec_context.width, video.codec_context.height) == (640, 360)
    stream.close()
    enc.close()


async def test_relay_gives_a_late_viewer_the_gop_and_then_live():
    """A viewer who joins mid-GOP gets codec, init and the fragments since the keyframe at once, then new
    ones; the box is asked for live once for two viewers and told to stop when the last leaves."""
    sent: list[str] = []

    async def send(device: str, camera: str, name: str) -> None:
        sent.append(name)

    relay = LiveRelay(send, renew_s=60)
    relay.bind_loop(asyncio.get_running_loop())
    enc = LiveEncoder(LiveProfile(fps=12, gop_s=1.0))
    init, key, d1, d2, d3 = [p for frame, t in _frames(12) for p in enc.feed(frame, t)][:5]
    enc.close()
    assert fmp4.is_init(init) and fmp4.starts_with_keyframe(key) and not fmp4.starts_with_keyframe(d1)
    relay.feed("D", "cam", d1)  # before any keyframe: useless, dropped

    async def first(n: int) -> list:
        out = []
        async with contextlib.aclosing(relay.watch("D", "cam", timeout_s=2)) as items:
            async for item in items:
                out.append(item)
                if len(out) == n:
                    break
        return out

    early = asyncio.create_task(first(6))
    await asyncio.sleep(0.01)
    for piece in (init, key, d1, d2):
        relay.feed("D", "cam", piece)
    late = await asyncio.wait_for(first(5), 2)  # joins mid-GOP: has everything since the keyframe at once
    assert late == [fmp4.codec_string(init), init, key, d1, d2]
    relay.feed("D", "cam", d3)
    assert await asyncio.wait_for(early, 2) == [fmp4.codec_string(init), init, key, d1, d2, d3]
    await asyncio.sleep(0.01)
    assert sent == ["live_start", "live_stop"]  # asked once for both viewers, stopped when the last left
    assert relay.stats()["D/cam"]["viewers"] == 0


def test_recording_survives_a_stream_that_starts_again(tmp_path):
    """A camera whose stream starts over (timestamps back to 0, as after a reconnect) gets a new segment,
    and no write error reaches the camera's reader; both parts are in the recording."""
    import time as _time

    from edge_agent.capture.packet_ring import StreamTemplate
    from edge_agent.capture.recording import SegmentRecorder

    enc_pieces = io.BytesIO()
    with av.open(enc_pieces, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.options = {"g": "10", "bf": "0"}
        for i in range(30):
            f = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i * 8, np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    rec = SegmentRecorder(tmp_path, "cam", segment_s=60)
    t0 = _time.time() - 30
    tpl = None
    for run in range(2):  # the same 3 s twice: the second time its timestamps start at 0 again
        with av.open(io.BytesIO(enc_pieces.getvalue())) as src:
            v = src.streams.video[0]
            tpl = tpl or StreamTemplate(v)  # the camera's ring keeps its template when the stream is the same
            for p in src.demux(v):
                if p.dts is not None:
                    rec.push(p, tpl, t0 + run * 5 + float(p.pts * v.time_base))
    rec.close()
    segs = rec.segments()
    assert rec.errors == 0 and len(segs) == 2
    assert all(s.bytes > 0 for s in segs) and segs[1].start >= segs[0].end


def test_live_follows_what_the_budget_leaves_it():
    """With clips taking most of the budget the session re-encodes at its share (new init, keyframe); back up after."""
    from types import SimpleNamespace

    from support.waiting import wait_until

    from edge_agent.live.manager import ADAPT_EVERY_S, MIN_BPS, LiveManager
    from edge_agent.outbox.priority import Priority
    from edge_agent.uplink.budget import UploadBudget

    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731 - the manager's and the budget's clock, moved by hand
    budget = UploadBudget.for_cameras(500, 1, max_packet=33_000, clock=clock)
    pieces: list[tuple[bytes, bool]] = []

    class Box:
        def add_message(self, topic, payload, **kw):  # noqa: ANN001, ANN202 - the outbox's signature
            pieces.append((payload, kw.get("supersede", False)))

    live = LiveManager("64050200001180000001", Box(), LiveProfile(bitrate_bps=400_000), clock=clock,
                       uplink=lambda: SimpleNamespace(budget=budget))
    assert live.target_bps() == 400_000  # nothing else spends: the profile's rate
    for _ in range(8):  # a clip upload: 8 s of 50 kB at clip priority in the budget's history
        budget._spend(now[0], 50_000, Priority.CLIP)
    squeezed = live.target_bps()
    assert squeezed is not None and MIN_BPS <= squeezed < 300_000
    live.start("cam1")
    session = live._sessions["cam1"]
    try:
        for i, (frame, t) in enumerate(_frames(30)):
            if i == 10:
                now[0] += ADAPT_EVERY_S  # the session is due to compare its rate before its next frame
            live.offer("cam1", frame, t)
            assert wait_until(lambda: session._frame is None, 5)  # taken by the session's thread, one by one

        def inits() -> list[int]:
            return [i for i, (p, _) in enumerate(pieces) if fmp4.is_init(p)]
        assert wait_until(lambda: len(inits()) == 2, 5), len(inits())
        assert session.encoder is not None and session.encoder.profile.bitrate_bps == squeezed
        assert all(pieces[i][1] for i in inits())  # each encoder's init supersedes what is still queued
        assert live.status()["cam1"]["frames"] >= 10
    finally:
        live.close()
