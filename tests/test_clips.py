"""Clips cut from the packet ring: a remuxed mp4 of ~10 s from a keyframe, bytes unchanged; attached
to the event as its next revision through the real Outbox."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import av
import pytest
from support.footage import clip_1080p, packets_of

from bk_contract import MediaRef, decode_chunk
from edge_agent.analysis.types import Box
from edge_agent.capture.clips import CameraMedia, remux_mp4
from edge_agent.events.emitter import EventEmitter
from edge_agent.outbox.store import Outbox
from edge_agent.rules.engine import Mark, Transition

pytestmark = pytest.mark.unit

DEVICE = "64050200001180000001"


def media_bytes(outbox: Outbox, ref: MediaRef) -> bytes:
    """Reassemble queued media chunks and check the sha256."""
    rows = outbox.db.execute("SELECT payload FROM messages WHERE grp = ? ORDER BY seq", [ref.id]).fetchall()
    parts = sorted((decode_chunk(r[0]) for r in rows), key=lambda p: p[0].index)
    data = b"".join(p[1] for p in parts)
    assert hashlib.sha256(data).hexdigest() == ref.sha256 and len(data) == ref.bytes
    return data


def wait(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_clip_is_a_ten_second_remux_starting_at_a_keyframe() -> None:
    """Clip around t=12 s (5 s before, 5 s after) of a looping 1080p file: valid mp4, ~11 s, source bytes."""
    media = CameraMedia("t", pre_s=5.0, post_s=5.0)
    stop = threading.Event()
    media.start(stop)
    got: list[bytes] = []
    source: list[tuple[float, bytes, bool]] = []
    try:
        for p, t in packets_of(clip_1080p("bikes.mp4"), 20.0):
            media.ring.push(p, t)
            source.append((t, bytes(p), p.is_keyframe))
            if abs(t - 12.0) < 1e-6:
                assert media.request_clip(got.append, center=12.0)
        wait(lambda: got)
    finally:
        stop.set()
        assert media.join(2)
    data = got[0]
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        assert c.format.name.startswith("mov,mp4") and (s.width, s.height) == (1920, 1080)
        packets = [p for p in c.demux(s) if p.size]
        duration = c.duration / 1e6
    with av.open(io.BytesIO(data)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    # keyframe at or before 7.0 s is 6.0 s; the first packet at or after 17.0 s ends it
    expect = [b for t, b, _ in source if 6.0 - 1e-6 <= t <= 17.0 + 1e-6]
    assert packets[0].is_keyframe and [bytes(p) for p in packets] == expect  # remux, no re-encode
    assert 10.5 <= duration <= 11.5 and len(packets) == len(expect) == decoded == 276
    keys = [p.is_keyframe for p in packets]
    assert sum(keys) == sum(k for t, _, k in source if 6.0 - 1e-6 <= t <= 17.0 + 1e-6)


def test_clip_is_cut_short_when_the_stream_stops() -> None:
    """A stream that closes mid-clip still gives the part recorded (>= 1 s); a shorter one gives none."""
    media = CameraMedia("t", pre_s=2.0, post_s=5.0)
    done = []
    media.cut = lambda rec, on_clip: done.append(rec)  # the recorder, before remuxing
    for p, t in packets_of(clip_1080p("bikes.mp4"), 4.0, loop=False):
        media.ring.push(p, t)
    assert media.request_clip(lambda b: None, center=4.0)
    media.ring.reset()
    rec, _ = media._jobs.get_nowait()
    assert not rec.complete and 1.5 <= rec.duration <= 4.1 and rec.packets[0].key
    assert remux_mp4(rec.template, [rp.packet for rp in rec.packets])[4:8] == b"ftyp"
    empty = CameraMedia("e")
    assert not empty.request_clip(lambda b: None)


def _tr(state: str, frame: object, ended_at: float | None = None) -> Transition:
    marks = (Mark("person", 0.8, Box(64, 36, 320, 324), 3),)
    return Transition("intrusion_off_hours", state, 1_764_468_000.0, ended_at, 0.8, marks, "persons=1",
                      "warning", None, frame, (640, 360), key="rule0")


def test_event_gets_its_clip_as_the_next_revision(tmp_path: Path) -> None:
    """start (rev 0, 1080p snapshot from the ring) → clip stored as media → update rev 1 with clip; end keeps it."""
    outbox = Outbox(tmp_path / "agent.db", device_id=DEVICE)
    media = CameraMedia("cam1", pre_s=2.0, post_s=2.0)
    stop = threading.Event()
    media.start(stop)
    seen = []
    em = EventEmitter(DEVICE, "cam1", outbox, seen.append)
    try:
        feed = packets_of(clip_1080p("bikes.mp4"), 8.0, loop=False)
        for p, t in feed:
            media.ring.push(p, t)
            if t >= 3.0:
                break
        start = em.emit(_tr("start", media.moment(2.5)))  # the clip is centred on the newest packet, 3.0 s
        for p, t in feed:
            media.ring.push(p, t)
        wait(lambda: len(seen) == 2)
        end = em.emit(_tr("end", None, ended_at=1_764_468_030.0))
    finally:
        stop.set()
        media.join(2)
    assert start.snapshot is not None and start.frame_size == [1920, 1080] and start.clip is None
    upd = seen[1]
    assert (upd.id, upd.rev, upd.state) == (start.id, 1, "update") and upd.clip is not None
    assert upd.snapshot == start.snapshot
    assert (end.rev, end.state, end.clip) == (2, "end", upd.clip)
    data = media_bytes(outbox, upd.clip)
    with av.open(io.BytesIO(data)) as c:
        # from the keyframe at 0.0 s (<= 1.0 s) to 5.0 s
        assert c.streams.video[0].height == 1080 and 4.9 <= c.duration / 1e6 <= 5.2
    stored = outbox.recent_events(5)
    assert [(e.id, e.rev, e.clip) for e in stored] == [(start.id, 2, upd.clip)]
    outbox.close()


def test_clip_after_the_end_is_sent_as_end_again(tmp_path: Path) -> None:
    """An event that ended before its clip was ready gets it as `end` with the next rev (never reopened)."""
    outbox = Outbox(tmp_path / "agent.db", device_id=DEVICE)
    media = CameraMedia("cam1", pre_s=1.0, post_s=2.0)  # no clip thread: cut by hand below
    seen = []
    em = EventEmitter(DEVICE, "cam1", outbox, seen.append)
    feed = packets_of(clip_1080p("bikes.mp4"), 6.0, loop=False)
    for p, t in feed:
        media.ring.push(p, t)
        if t >= 2.0:
            break
    start = em.emit(_tr("start", media.moment(2.0)))
    em.emit(_tr("end", None, ended_at=1_764_468_001.0))
    for p, t in feed:
        media.ring.push(p, t)
    rec, on_clip = media._jobs.get_nowait()
    assert rec.complete
    media.cut(rec, on_clip)
    assert [(a.state, a.rev) for a in seen] == [("start", 0), ("end", 1), ("end", 2)]
    assert seen[2].id == start.id and seen[2].clip is not None and seen[2].ended_at == seen[1].ended_at
    outbox.close()


def test_store_without_media_gets_no_clip_request() -> None:
    """An event store without add_media (e.g. a test recorder) never asks the ring for a clip."""

    class Recorder:
        def add_event(self, alert, snapshot=None):
            return alert

    asked = []

    class Handle:
        def picture(self):
            return None

        def request_clip(self, on_clip):
            asked.append(on_clip)
            return True

    em = EventEmitter(DEVICE, "cam1", Recorder())
    assert em.emit(_tr("start", Handle())) is not None and not asked
