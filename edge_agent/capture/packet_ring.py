"""Encoded packets of a camera's main stream, kept for a few seconds without decoding them.

The ring holds whole GOPs (each starts at a keyframe) covering at least `keep_s` back from the
newest packet, so it always starts at a keyframe and lasts between `keep_s` and `keep_s` + one GOP.
Packets are refcounted FFmpeg buffers: keeping them costs their compressed size (a 4 Mbit/s 1080p
stream: ~0.5 MB per second), and handing them to a snapshot or a clip copies nothing.

Times are monotonic seconds (`MediaClock` maps a stream's media time to them), so a moment seen on
the sub-stream can be found on the main stream.

Thread use: the stream's reader thread pushes; the inference thread locates moments and starts
clip recorders; everything shared is guarded by one lock.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import av
import structlog

from edge_agent.capture.sources.av_io import demux_video, open_input, with_credentials
from edge_agent.errors import RetryLater

log = structlog.get_logger(__name__)

DEFAULT_KEEP_S = 5.0  # the clip's pre-roll; the ring then lasts keep_s + up to one GOP
DEFAULT_MAX_BYTES = 48 << 20  # a camera with absurdly long GOPs cannot eat the box's memory


class MediaClock:
    """Media seconds → monotonic seconds, anchored on the least-delayed packet seen.

    `offset` is the smallest (arrival - media time) so far: network and decoder delays only add
    to it. A jump bigger than `resync_s` (a new session, a file loop, a long stall) re-anchors.
    """

    def __init__(self, resync_s: float = 2.0) -> None:
        self.resync_s = resync_s
        self.offset: float | None = None

    def observe(self, media_t: float, arrival: float) -> float:
        d = arrival - media_t
        if self.offset is None or d < self.offset or d - self.offset > self.resync_s:
            self.offset = d
        return media_t + self.offset

    def to_mono(self, media_t: float) -> float | None:
        return None if self.offset is None else media_t + self.offset


def packet_seconds(packet: av.Packet) -> float | None:
    """Presentation time of a packet in seconds (dts when pts is unknown)."""
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or packet.time_base is None:
        return None
    return float(ts * packet.time_base)


class StreamTemplate:
    """What a clip muxer and an on-demand decoder need from a stream, kept after its container closes.

    An input stream's C struct dies with its container (a reconnect, a file loop), so its codec
    parameters are copied into a stream of a never-written output container that lives as long
    as this object.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        try:  # copying from a closed container's stream would read freed memory
            stream.container.bit_rate  # noqa: B018 - raises once the container is closed
        except Exception as err:  # noqa: BLE001
            raise ValueError("the packet's container is closed; push packets as they are demuxed") from err
        ctx = stream.codec_context
        self.codec_name: str = ctx.name  # the decoder's name (e.g. "h264")
        self.extradata: bytes | None = ctx.extradata
        self.width, self.height = ctx.width, ctx.height
        self.time_base = stream.time_base
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        self.stream = self._holder.add_stream_from_template(stream)

    def same_as(self, stream: av.video.stream.VideoStream) -> bool:
        ctx = stream.codec_context
        return (ctx.name, ctx.extradata, ctx.width, ctx.height, stream.time_base) == (
            self.codec_name, self.extradata, self.width, self.height, self.time_base)


@dataclass(slots=True)
class RingPacket:
    packet: av.Packet
    t: float  # monotonic seconds of its presentation
    key: bool


@dataclass(eq=False)
class Gop:
    """A keyframe and the packets that depend on it, in decode order."""

    template: StreamTemplate
    packets: list[RingPacket] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.packets[0].t

    def nearest(self, t: float) -> int:
        """Index of the packet whose time is nearest to `t`."""
        pk = self.packets
        return min(range(len(pk)), key=lambda i: abs(pk[i].t - t))


@dataclass(eq=False)
class ClipRecorder:
    """Collects packets from a keyframe at or before `start` until one at or past `end` arrives."""

    start: float
    end: float
    on_done: Callable[[ClipRecorder], None]
    template: StreamTemplate | None = None
    packets: list[RingPacket] = field(default_factory=list)
    complete: bool = False  # False: cut short (the stream stopped)

    @property
    def duration(self) -> float:
        return self.packets[-1].t - self.packets[0].t if self.packets else 0.0


class PacketRing:
    """Whole GOPs of one stream covering the last `keep_s` seconds; clip recorders fed on push."""

    def __init__(self, name: str = "", *, keep_s: float = DEFAULT_KEEP_S, max_bytes: int = DEFAULT_MAX_BYTES,
                 min_clip_s: float = 1.0) -> None:
        self.name = name
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self.min_clip_s = min_clip_s
        self.gops: deque[Gop] = deque()
        self.bytes = 0
        self.template: StreamTemplate | None = None
        self.recorders: list[ClipRecorder] = []
        self.resets = 0
        self._last_dts: int | None = None
        self._stream: object = None
        self._lock = threading.Lock()
        self.log = log.bind(ring=name)

    # --- reader thread -------------------------------------------------------------------
    def push(self, packet: av.Packet, t: float) -> None:
        """Keep one demuxed packet (empty flush packets and packets before a keyframe are ignored).

        Call it while the packet's container is open: a new stream's parameters are copied then.
        """
        if packet.size == 0:
            return
        stream = packet.stream
        done: list[ClipRecorder] = []
        with self._lock:
            if stream is not self._stream:  # a new container: the same parameters continue the ring
                self._stream = stream
                if self.template is None or not self.template.same_as(stream):
                    done += self._reset_locked("new stream parameters")
                    self.template = StreamTemplate(stream)
            if packet.dts is not None:
                if self._last_dts is not None and packet.dts <= self._last_dts:
                    done += self._reset_locked("timestamps went back")
                self._last_dts = packet.dts
            rp = RingPacket(packet, t, packet.is_keyframe)
            if rp.key:
                assert self.template is not None
                self.gops.append(Gop(self.template))
            elif not self.gops:
                return
            self.gops[-1].packets.append(rp)
            self.bytes += packet.size
            self._trim_locked()
            for rec in self.recorders:
                rec.packets.append(rp)
                if t >= rec.end:
                    rec.complete = True
                    done.append(rec)
            self.recorders = [r for r in self.recorders if not r.complete]
        for rec in done:
            rec.on_done(rec)

    def reset(self, why: str = "stream closed") -> None:
        """Forget everything (the stream ended); running recorders finish with what they have."""
        with self._lock:
            done = self._reset_locked(why)
            self._stream = None
        for rec in done:
            rec.on_done(rec)

    def _reset_locked(self, why: str) -> list[ClipRecorder]:
        """Empty the ring; returns the recorders long enough to be worth a (short) clip."""
        finished = [r for r in self.recorders if r.duration >= self.min_clip_s]
        if self.gops or self.recorders:
            self.log.info("ring_reset", why=why, gops=len(self.gops), recorders=len(self.recorders),
                          clips_cut_short=len(finished))
        self.recorders = []
        self.gops.clear()
        self.bytes = 0
        self._last_dts = None
        self.resets += 1
        return finished

    def _trim_locked(self) -> None:
        newest = self.gops[-1].packets[-1].t
        while len(self.gops) > 1 and self.gops[1].start <= newest - self.keep_s:
            self._drop_oldest()
        while self.bytes > self.max_bytes and self.gops:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        gop = self.gops.popleft()
        self.bytes -= sum(rp.packet.size for rp in gop.packets)

    # --- other threads -------------------------------------------------------------------
    def span(self) -> tuple[float, float] | None:
        """(oldest, newest) packet time, or None when empty."""
        with self._lock:
            if not self.gops:
                return None
            return self.gops[0].start, self.gops[-1].packets[-1].t

    def locate(self, t: float) -> Gop | None:
        """The GOP that holds moment `t`: the newest one starting at or before it (or the oldest)."""
        with self._lock:
            for gop in reversed(self.gops):
                if gop.start <= t:
                    return gop
            return self.gops[0] if self.gops else None

    def record(self, start: float, end: float, on_done: Callable[[ClipRecorder], None]) -> ClipRecorder | None:
        """Start a clip from the keyframe at or before `start` to the first packet at or after `end`.

        Packets already in the ring are taken at once, later ones as they arrive; `on_done` is
        called (on the reader thread) when the clip is complete or the stream stops.
        """
        with self._lock:
            if not self.gops:
                return None
            first = 0
            for i, gop in enumerate(self.gops):
                if gop.start <= start:
                    first = i
            rec = ClipRecorder(start, end, on_done, self.template,
                               [rp for gop in list(self.gops)[first:] for rp in gop.packets])
            if rec.packets[-1].t >= end:
                rec.complete = True
            else:
                self.recorders.append(rec)
                return rec
        on_done(rec)
        return rec


# --- where packets come from -------------------------------------------------------------
PacketFeed = Callable[[threading.Event], Iterator[av.Packet]]


def packet_feed(source: object, *, decode: bool) -> PacketFeed | None:
    """Demux-only reading of an RTSP or file source (the same URL, options and pacing it uses for
    frames), or None for a source that only offers decoded frames (e.g. GB/T 28181).

    `decode=True` turns frame threads on for a stream that will be decoded by the caller.
    """
    from edge_agent.capture.sources.file import FileSource
    from edge_agent.capture.sources.rtsp import RtspSource

    if isinstance(source, RtspSource):
        return lambda stop: _rtsp_packets(source, stop, decode)
    if isinstance(source, FileSource):
        return lambda stop: _file_packets(source, stop, decode)
    return None


def _rtsp_packets(src: object, stop: threading.Event, decode: bool) -> Iterator[av.Packet]:
    url = with_credentials(src.url, src.username, src.password)
    container = open_input(url, options=src.options(), open_timeout_s=src.open_timeout_s,
                           read_timeout_s=src.read_timeout_s, what=src.name)
    try:
        if decode:
            container.streams.video[0].thread_type = "AUTO"
        yield from demux_video(container, stop, what=src.name)
    finally:
        container.close()


def _file_packets(src: object, stop: threading.Event, decode: bool) -> Iterator[av.Packet]:
    """Like FileSource.frames: loops with timestamps that keep growing, paced at real time by dts."""
    offset_s = 0.0
    t0: float | None = None
    while not stop.is_set():
        container = open_input(src.path, options={}, open_timeout_s=src.open_timeout_s,
                               read_timeout_s=src.read_timeout_s, what=src.name)
        last_s: float | None = None
        count = 0
        try:
            stream = container.streams.video[0]
            if decode:
                stream.thread_type = "AUTO"
            tb = stream.time_base
            rate = float(stream.average_rate or 25)
            shift = int(round(offset_s / tb))
            for packet in demux_video(container, stop, what=src.name):
                if packet.size and packet.dts is not None:
                    packet.dts += shift
                    if packet.pts is not None:
                        packet.pts += shift
                    t = float(packet.dts * tb)
                    if src.realtime:
                        if t0 is None:
                            t0 = time.monotonic() - t
                        delay = t0 + t - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    last_s = max(last_s or t, float((packet.pts or packet.dts) * tb))
                    count += 1
                yield packet
        finally:
            container.close()
        if not src.loop or stop.is_set():
            return
        if count == 0:
            raise RetryLater(f"{src.name}: no packet in the file")
        offset_s = (last_s or 0.0) + 1.0 / rate
