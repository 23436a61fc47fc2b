"""What is made from a camera's packet ring: a picture decoded on demand and an mp4 clip (remuxed).

* `decode_moment`: a fresh decoder (the stream's codec and extradata) decodes from a GOP's
  keyframe to the packet of the wanted moment; bounded by a packet count and a time budget.
* `remux_mp4`: packets copied into an mp4 as they are (no re-encode), starting at a keyframe,
  timestamps shifted to start at 0.
* `CameraMedia`: one camera's ring, its `Moment`s (the frame handles the rules keep for a snapshot)
  and a small thread that cuts finished clips off the reader thread.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import structlog

from edge_agent.capture.packet_ring import ClipRecorder, Gop, PacketRing, StreamTemplate

log = structlog.get_logger(__name__)

CLIP_PRE_S = 5.0
CLIP_POST_S = 5.0
MAX_SKEW_S = 1.0  # a main-stream packet farther than this from the moment is not the same moment
MAX_DECODE_PACKETS = 300  # a GOP longer than this is not decoded on demand (12 s at 25 fps)
DECODE_BUDGET_S = 2.0


class ClipError(Exception):
    """A clip or an on-demand picture could not be made from the packets at hand."""


def decode_moment(template: StreamTemplate, packets: Sequence[av.Packet], target: int, *,
                  max_packets: int = MAX_DECODE_PACKETS, budget_s: float = DECODE_BUDGET_S) -> av.VideoFrame:
    """The frame of `packets[target]`, decoding from `packets[0]` (a keyframe) with a fresh decoder."""
    if not packets or not packets[0].is_keyframe:
        raise ClipError("decoding must start at a keyframe")
    if target + 1 > max_packets:
        raise ClipError(f"{target + 1} packets to decode, more than {max_packets}")
    ctx = av.CodecContext.create(template.codec_name, "r")
    if template.extradata:
        ctx.extradata = template.extradata
    want = packets[target].pts
    deadline = time.monotonic() + budget_s
    frames: list[av.VideoFrame] = []
    try:
        for packet in packets[:target + 1]:
            frames = [f for f in frames if f.pts == want] + list(ctx.decode(packet))
            if time.monotonic() > deadline:
                raise ClipError(f"decoding took more than {budget_s} s")
        frames += ctx.decode(None)  # drain: with B-frames the wanted frame may still be inside
    except av.error.FFmpegError as err:
        raise ClipError(f"decode failed: {err}") from err
    exact = [f for f in frames if f.pts == want]
    if exact:
        return exact[-1]
    if not frames:
        raise ClipError("the decoder gave no frame")
    return frames[-1]


def remux_mp4(template: StreamTemplate, packets: Sequence[av.Packet]) -> bytes:
    """An mp4 of `packets` (from a keyframe, in decode order), bytes unchanged, starting at time 0."""
    packets = [p for p in packets if p.dts is not None]
    if not packets or not packets[0].is_keyframe:
        raise ClipError("a clip must start at a keyframe")
    buf = io.BytesIO()
    zero = packets[0].dts
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream_from_template(template.stream)
        for p in packets:
            q = av.Packet(bytes(p))  # a copy: the ring's packets are shared and must not be retimed
            q.dts = p.dts - zero
            q.pts = (p.pts if p.pts is not None else p.dts) - zero
            q.duration = p.duration
            q.time_base = p.time_base
            q.is_keyframe = p.is_keyframe
            q.stream = stream
            out.mux(q)
    return buf.getvalue()


@dataclass(eq=False)
class Moment:
    """One instant of a camera's stream, kept by the rules as the event's best frame.

    `frame` is set when the main stream was decoded anyway; otherwise the picture is decoded from
    the ring on demand (the GOP is pinned here, so a moment older than the ring still resolves).
    `fallback` (the detection frame) serves when the main stream has nothing near this moment.
    """

    media: CameraMedia
    t: float  # monotonic seconds
    frame: av.VideoFrame | None = None
    fallback: av.VideoFrame | None = None
    gop: Gop | None = None

    def picture(self) -> av.VideoFrame | None:
        if self.frame is not None:
            return self.frame
        return self.media.picture_at(self)

    def request_clip(self, on_clip: Callable[[bytes], None]) -> bool:
        """Cut a clip around now (the camera's pre_s before, post_s after); `on_clip` gets the mp4
        bytes later, on the clip thread. False when the ring is empty."""
        return self.media.request_clip(on_clip)


class CameraMedia:
    """A camera's main-stream ring, its moments and its clip thread."""

    def __init__(self, name: str, *, pre_s: float = CLIP_PRE_S, post_s: float = CLIP_POST_S,
                 max_skew_s: float = MAX_SKEW_S, ring_extra_s: float = 0.0) -> None:
        self.name = name
        self.pre_s, self.post_s, self.max_skew_s = pre_s, post_s, max_skew_s
        self.ring = PacketRing(name, keep_s=pre_s + ring_extra_s)
        self.clips_made = 0
        self.pictures_decoded = 0
        self._jobs: queue.Queue[tuple[ClipRecorder, Callable[[bytes], None]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.log = log.bind(camera=name)

    # --- moments and snapshots -----------------------------------------------------------
    def moment(self, t: float, *, frame: av.VideoFrame | None = None,
               fallback: av.VideoFrame | None = None) -> Moment:
        return Moment(self, t, frame, fallback, None if frame is not None else self.ring.locate(t))

    def picture_at(self, m: Moment) -> av.VideoFrame | None:
        """The main-stream frame nearest to the moment, decoded now; else the fallback frame.

        The ring is asked again (the main stream may have been behind when the moment was taken);
        the GOP pinned by the moment serves when the ring has moved on.
        """
        best: tuple[float, Gop, list, int] | None = None
        for gop in (self.ring.locate(m.t), m.gop):
            if gop is None or not gop.packets:
                continue
            pk = list(gop.packets)
            i = min(range(len(pk)), key=lambda k: abs(pk[k].t - m.t))
            skew = abs(pk[i].t - m.t)
            if best is None or skew < best[0]:
                best = (skew, gop, pk, i)
        if best is None:
            return m.fallback
        skew, gop, pk, i = best
        if skew > self.max_skew_s:
            self.log.info("snapshot_not_in_ring", skew_s=round(skew, 2))
            return m.fallback
        t0 = time.perf_counter()
        try:
            frame = decode_moment(gop.template, [rp.packet for rp in pk], i)
        except ClipError as err:
            self.log.warning("snapshot_decode_failed", error=str(err))
            return m.fallback
        self.pictures_decoded += 1
        self.log.debug("snapshot_decoded", packets=i + 1, skew_ms=round((pk[i].t - m.t) * 1000),
                       ms=round((time.perf_counter() - t0) * 1000, 1))
        return frame

    # --- clips -------------------------------------------------------------------------
    def request_clip(self, on_clip: Callable[[bytes], None], center: float | None = None) -> bool:
        """Record `pre_s` before to `post_s` after `center` (default: the newest packet, i.e. now on
        the main stream); `on_clip` gets the mp4 on the clip thread. False when the ring is empty."""
        span = self.ring.span()
        if span is None:
            self.log.info("clip_skipped", why="no packets")
            return False
        c = span[1] if center is None else center
        rec = self.ring.record(c - self.pre_s, c + self.post_s, lambda r: self._jobs.put((r, on_clip)))
        return rec is not None

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._run, args=(stop,), name=f"clips-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                rec, on_clip = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            self.cut(rec, on_clip)

    def cut(self, rec: ClipRecorder, on_clip: Callable[[bytes], None]) -> None:
        """Remux one recorder's packets and hand the bytes on; errors are logged."""
        try:
            assert rec.template is not None
            t0 = time.perf_counter()
            data = remux_mp4(rec.template, [rp.packet for rp in rec.packets])
            self.clips_made += 1
            self.log.info("clip_cut", bytes=len(data), seconds=round(rec.duration, 2), complete=rec.complete,
                          packets=len(rec.packets), ms=round((time.perf_counter() - t0) * 1000, 1))
            on_clip(data)
        except Exception:  # noqa: BLE001 - a bad clip never stops the camera
            self.log.exception("clip_failed")
