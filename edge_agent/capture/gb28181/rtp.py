"""RTP (RFC 3550) header parsing and a bounded reorder buffer with loss skipping."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from edge_agent.errors import ParseError


@dataclass
class RtpPacket:
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: list[int] = field(default_factory=list)
    ext_profile: int | None = None
    ext_data: bytes = b""
    padding: int = 0


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < 12:
        raise ParseError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        raise ParseError(f"RTP version {b0 >> 6} is not 2")
    cc = b0 & 0x0F
    off = 12 + 4 * cc
    if len(data) < off:
        raise ParseError(f"RTP packet of {len(data)} bytes is too short for {cc} CSRCs")
    csrcs = list(struct.unpack_from(f"!{cc}I", data, 12)) if cc else []
    ext_profile, ext_data = None, b""
    if b0 & 0x10:
        if len(data) < off + 4:
            raise ParseError("RTP extension header is truncated")
        ext_profile, words = struct.unpack_from("!HH", data, off)
        off += 4
        if len(data) < off + 4 * words:
            raise ParseError(f"RTP extension of {words} words exceeds the packet")
        ext_data = bytes(data[off: off + 4 * words])
        off += 4 * words
    end = len(data)
    pad = 0
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or end - pad < off:
            raise ParseError(f"RTP padding length {pad} is invalid for a {len(data)}-byte packet")
        end -= pad
    return RtpPacket(payload_type=b1 & 0x7F, marker=bool(b1 & 0x80), seq=seq, timestamp=ts, ssrc=ssrc,
                     payload=bytes(data[off:end]), csrcs=csrcs, ext_profile=ext_profile, ext_data=ext_data,
                     padding=pad)


def build_rtp(p: RtpPacket) -> bytes:
    b0 = 0x80 | (len(p.csrcs) & 0x0F)
    if p.ext_profile is not None:
        b0 |= 0x10
    if p.padding:
        b0 |= 0x20
    out = bytearray(struct.pack("!BBHII", b0, (0x80 if p.marker else 0) | (p.payload_type & 0x7F),
                                p.seq & 0xFFFF, p.timestamp & 0xFFFFFFFF, p.ssrc & 0xFFFFFFFF))
    for c in p.csrcs[:15]:
        out += struct.pack("!I", c)
    if p.ext_profile is not None:
        ext = p.ext_data + b"\0" * (-len(p.ext_data) % 4)
        out += struct.pack("!HH", p.ext_profile, len(ext) // 4) + ext
    out += p.payload
    if p.padding:
        out += b"\0" * (p.padding - 1) + bytes([p.padding])
    return bytes(out)


def seq_delta(a: int, b: int) -> int:
    """Signed distance from a to b in 16-bit sequence space."""
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


class ReorderBuffer:
    """Releases packets in sequence order; waits for a gap at most `window` packets, then skips it.

    The first `startup` packets are held and the stream starts at the earliest of them, so a first
    packet overtaken by its successor (UDP reorders) is not dropped as late: that packet opens the
    first access unit (pack header, SPS, PPS, IDR), and without it nothing decodes until the next
    key frame. Duplicates and packets older than the release point are dropped. `lost` counts
    skipped sequence numbers, `late` counts dropped late or duplicate packets.
    """

    def __init__(self, window: int = 64, startup: int = 4) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.startup = max(1, min(startup, window))
        self._next: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self.lost = 0
        self.late = 0

    def push(self, pkt: RtpPacket) -> list[RtpPacket]:
        if self._next is None:  # starting: gather a few packets, then begin at the earliest
            if pkt.seq in self._held:
                self.late += 1
                return []
            self._held[pkt.seq] = pkt
            if len(self._held) < self.startup:
                return []
            self._next = self._earliest()
            return self._release()
        d = seq_delta(self._next, pkt.seq)
        if d < 0 or pkt.seq in self._held:
            if d < -self.window * 4:  # a jump far back: the sender restarted; resync
                self._held.clear()
                self._next = pkt.seq
            else:
                self.late += 1
                return []
        if seq_delta(self._next, pkt.seq) > 0x4000:  # a jump far ahead: resync rather than wait
            self.lost += seq_delta(self._next, pkt.seq)
            out = self.flush()
            self._next = pkt.seq
            self._held[pkt.seq] = pkt
            return out + self._release()
        self._held[pkt.seq] = pkt
        out = self._release()
        while len(self._held) > self.window:
            # Gap too old: skip to the oldest held packet.
            oldest = min(self._held, key=lambda s: seq_delta(self._next, s))  # type: ignore[arg-type]
            self.lost += seq_delta(self._next, oldest)  # type: ignore[arg-type]
            self._next = oldest
            out += self._release()
        return out

    def _earliest(self) -> int:
        first = next(iter(self._held))  # the first to arrive; the others are near it
        return min(self._held, key=lambda s: seq_delta(first, s))

    def _release(self) -> list[RtpPacket]:
        out = []
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next = (self._next + 1) & 0xFFFF
        return out

    def flush(self) -> list[RtpPacket]:
        """Release everything held, in order, counting the gaps as lost."""
        out: list[RtpPacket] = []
        if self._next is None:
            if not self._held:
                return out
            self._next = self._earliest()
        for s in sorted(self._held, key=lambda s: seq_delta(self._next, s)):  # type: ignore[arg-type]
            self.lost += seq_delta(self._next, s)  # type: ignore[arg-type]
            out.append(self._held.pop(s))
            self._next = (s + 1) & 0xFFFF
        return out
