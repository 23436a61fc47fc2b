"""回放: a camera's main-stream packets kept on disk as they are (never re-encoded), and cut on request.

`SegmentRecorder.push` (the camera's reader thread) muxes each packet into the current segment, a
fragmented MP4 file (readable even if the box loses power mid-segment) named by the wall-clock
millisecond of its first keyframe; a segment ends at the first keyframe after `segment_s` and is
renamed `<start>-<end>.mp4`. The oldest segments go when the camera's folder exceeds `quota_bytes`
or they are older than `keep_s`: recordings are bounded by disk and by hours, oldest first.
`cut(start, end)` remuxes the packets of that wall-clock range (from the keyframe at or before
`start`) into one MP4, which the box uploads at clip priority (the `playback` command).
"""

from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import structlog

from edge_agent.capture.packet_ring import StreamTemplate

log = structlog.get_logger(__name__)

NAME = re.compile(r"^(\d{13})(?:-(\d{13}))?\.mp4$")
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


class RecordingError(Exception):
    """No recording of the asked range, or it could not be cut."""


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    start: float  # wall-clock seconds of its first packet
    end: float  # of its last (the file's mtime for a segment cut short by a crash)
    bytes: int


class SegmentRecorder:
    def __init__(self, root: Path, camera_id: str, *, segment_s: float = 60.0, quota_bytes: int = 2 << 30,
                 keep_s: float = 24 * 3600.0) -> None:
        self.dir = root / camera_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.camera_id = camera_id
        self.segment_s, self.quota_bytes, self.keep_s = segment_s, quota_bytes, keep_s
        self._lock = threading.Lock()  # push (reader thread) against cut/segments (commands thread)
        self._out: av.container.OutputContainer | None = None
        self._stream = None
        self._path: Path | None = None
        self._start = 0.0
        self._last = 0.0
        self._zero = 0
        self._template: StreamTemplate | None = None
        self.dropped_segments = 0
        self.errors = 0  # failed writes (each closed its segment; recording went on at the next keyframe)
        self._last_dts = -1

    # --- writing (reader thread) ---------------------------------------------------------------
    def push(self, packet: av.Packet, template: StreamTemplate, wall: float) -> None:
        """Add one demuxed packet (its stream described by `template`) seen at wall-clock `wall`. Never
        raises: recording is a side line of the camera's reader thread, which must go on whatever happens."""
        if packet.dts is None:
            return
        with self._lock:
            try:
                self._push(packet, template, wall)
            except (av.FFmpegError, OSError, ValueError) as err:
                self.errors += 1
                log.warning("recording_write_failed", camera=self.camera_id, error=str(err))
                self._abandon()

    def _push(self, packet: av.Packet, template: StreamTemplate, wall: float) -> None:
        if self._out is not None and (template is not self._template or packet.dts - self._zero <= self._last_dts
                                      or (packet.is_keyframe and wall - self._start >= self.segment_s)):
            self._finish()  # a new segment: the stream changed, started again (timestamps went back) or is long enough
        if self._out is None:
            if not packet.is_keyframe:
                return  # a segment starts at a keyframe
            self._open(template, wall, packet.dts)
        q = av.Packet(bytes(packet))
        q.dts = packet.dts - self._zero
        q.pts = (packet.pts if packet.pts is not None else packet.dts) - self._zero
        q.duration, q.time_base, q.is_keyframe = packet.duration, packet.time_base, packet.is_keyframe
        q.stream = self._stream
        self._out.mux(q)
        self._last, self._last_dts = wall, q.dts

    def _abandon(self) -> None:
        """Close the current segment after a failed write (kept if it holds anything); go on at the next keyframe."""
        if self._out is None:
            return
        try:
            self._finish()
        except (av.FFmpegError, OSError, ValueError):
            self._out = self._stream = self._path = None

    def _open(self, template: StreamTemplate, wall: float, dts: int) -> None:
        self._path = self.dir / f"{int(wall * 1000):013d}.mp4"
        self._out = av.open(str(self._path), "w", format="mp4", options=FRAGMENTED)
        self._stream = self._out.add_stream_from_template(template.stream)
        self._template, self._start, self._zero, self._last, self._last_dts = template, wall, dts, wall, -1

    def _finish(self) -> None:
        assert self._out is not None and self._path is not None
        try:
            self._out.close()
        except (av.FFmpegError, OSError) as err:
            log.warning("recording_segment_close_failed", camera=self.camera_id, error=str(err))
        final = self._path.with_name(f"{int(self._start * 1000):013d}-{int(self._last * 1000):013d}.mp4")
        self._path.rename(final)
        self._out = self._stream = self._path = None
        self._enforce()

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._finish()

    def _enforce(self) -> None:
        """Drop the oldest finished segments beyond the quota or the age limit."""
        done = [s for s in self._segments() if s.path != self._path]
        total = sum(s.bytes for s in done)
        now = time.time()
        for seg in done:
            if total <= self.quota_bytes and now - seg.end <= self.keep_s:
                break
            seg.path.unlink(missing_ok=True)
            total -= seg.bytes
            self.dropped_segments += 1

    # --- reading ----------------------------------------------------------------------------------
    def _segments(self) -> list[Segment]:
        out = []
        for path in self.dir.iterdir():
            m = NAME.match(path.name)
            if m is None:
                continue
            st = path.stat()
            end = int(m.group(2)) / 1000 if m.group(2) else st.st_mtime
            out.append(Segment(path, int(m.group(1)) / 1000, end, st.st_size))
        return sorted(out, key=lambda s: s.start)

    def segments(self) -> list[Segment]:
        with self._lock:
            return self._segments()

    def hours_kept(self) -> float:
        segs = self.segments()
        return round(sum(max(0.0, s.end - s.start) for s in segs) / 3600, 3)

    def cut(self, start: float, end: float) -> bytes:
        """One MP4 of wall-clock [start, end], from the keyframe at or before `start` (bytes unchanged)."""
        if end <= start:
            raise RecordingError("the end of the range must come after its start")
        with self._lock:
            if self._out is not None and self._start < end:
                self._finish()  # the range reaches into the open segment: close it so it can be read
            parts = [s for s in self._segments() if s.end >= start and s.start <= end]
        if not parts:
            raise RecordingError("no recording of this camera in that time range (kept: "
                                 f"{self.hours_kept():.2f} h)")
        return _remux_range(parts, start, end)


def _remux_range(parts: list[Segment], start: float, end: float) -> bytes:
    buf = io.BytesIO()
    origin = parts[0].start
    with av.open(buf, "w", format="mp4") as out:
        stream = None
        offset_base = None
        for seg in parts:
            with av.open(str(seg.path)) as src:
                vin = src.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(vin)
                tb = vin.time_base
                shift = int((seg.start - origin) / tb)
                pending: list[av.Packet] = []
                for p in src.demux(vin):
                    if p.dts is None:
                        continue
                    t = seg.start + float(p.dts * tb)
                    if t > end:
                        break
                    if t < start:  # before the range: keep only the GOP that leads into it
                        pending = [p] if p.is_keyframe else ([*pending, p] if pending else [])
                        continue
                    for q in [*pending, p]:
                        if offset_base is None:
                            if not q.is_keyframe:
                                continue
                            offset_base = q.dts + shift
                        pts = q.pts if q.pts is not None else q.dts
                        q.dts, q.pts = q.dts + shift - offset_base, pts + shift - offset_base
                        q.stream = stream
                        out.mux(q)
                    pending = []
    data = buf.getvalue()
    if offset_base is None:
        raise RecordingError("no keyframe in that time range")
    return data
