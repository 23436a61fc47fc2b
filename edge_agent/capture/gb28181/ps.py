"""MPEG-2 program stream demux (ISO/IEC 13818-1 2.5): pack header, system header, PSM, PES.

`PsDemuxer` takes RTP payload bytes as they arrive and returns elementary-stream access units
(one video frame each). Malformed structures are counted and skipped by resyncing to the next
pack header, so one bad packet costs one frame, not the session. The pure `parse_*` helpers raise
ParseError naming the structure and offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import structlog

from edge_agent.errors import ParseError

log = structlog.get_logger(__name__)

STREAM_TYPES = {0x1B: "h264", 0x24: "hevc", 0x10: "mpeg4", 0x02: "mpeg2video"}
PACK = 0xBA
SYSTEM = 0xBB
PSM = 0xBC
END = 0xB9
# Stream ids whose PES has no optional header (13818-1 table 2-18 semantics).
NO_PES_HEADER = {0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF}
MAX_AU = 8 * 1024 * 1024


@dataclass
class AccessUnit:
    stream_type: int
    pts: int | None
    data: bytes

    @property
    def codec(self) -> str | None:
        return STREAM_TYPES.get(self.stream_type)


def pack_header_length(data: bytes | bytearray, off: int = 0) -> int | None:
    """Length of the pack header at `off` (MPEG-2 or MPEG-1), None if more bytes are needed."""
    if len(data) < off + 5:
        return None
    b4 = data[off + 4]
    if b4 >> 6 == 1:  # MPEG-2: '01' marker
        if len(data) < off + 14:
            return None
        return 14 + (data[off + 13] & 0x07)
    if b4 >> 4 == 2:  # MPEG-1: '0010'
        return 12
    raise ParseError(f"PS pack header at offset {off}: byte 0x{b4:02x} is neither MPEG-2 nor MPEG-1")


def parse_psm(unit: bytes | bytearray) -> dict[int, int]:
    """Program stream map unit (start code included) -> {elementary_stream_id: stream_type}."""
    if len(unit) < 16:
        raise ParseError(f"PS PSM of {len(unit)} bytes is shorter than 16")
    info_len = struct.unpack_from("!H", unit, 8)[0]
    off = 10 + info_len
    if len(unit) < off + 2:
        raise ParseError(f"PS PSM program_stream_info_length {info_len} exceeds the map")
    map_len = struct.unpack_from("!H", unit, off)[0]
    off += 2
    end = off + map_len
    if end > len(unit) - 4:
        raise ParseError(f"PS PSM elementary_stream_map_length {map_len} exceeds the map")
    out: dict[int, int] = {}
    while off + 4 <= end:
        stype, sid, es_info = unit[off], unit[off + 1], struct.unpack_from("!H", unit, off + 2)[0]
        out[sid] = stype
        off += 4 + es_info
    if off != end:
        raise ParseError("PS PSM entries do not add up to elementary_stream_map_length")
    return out


def parse_pes(unit: bytes | bytearray) -> tuple[int, int | None, bytes]:
    """PES packet (start code included) -> (stream_id, pts or None, payload)."""
    if len(unit) < 6:
        raise ParseError(f"PES of {len(unit)} bytes is shorter than 6")
    sid = unit[3]
    if sid in NO_PES_HEADER:
        return sid, None, bytes(unit[6:])
    if len(unit) < 9:
        raise ParseError(f"PES stream 0x{sid:02x}: header truncated")
    if unit[6] >> 6 != 2:
        raise ParseError(f"PES stream 0x{sid:02x}: byte 6 is 0x{unit[6]:02x}, not the MPEG-2 '10' marker")
    flags, hlen = unit[7], unit[8]
    if 9 + hlen > len(unit):
        raise ParseError(f"PES stream 0x{sid:02x}: header_data_length {hlen} exceeds the packet")
    pts = None
    if flags & 0x80:
        if hlen < 5:
            raise ParseError(f"PES stream 0x{sid:02x}: PTS flag set but header_data_length is {hlen}")
        p = unit[9:14]
        pts = ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
    return sid, pts, bytes(unit[9 + hlen:])


class PsDemuxer:
    """Streaming PS demuxer. `feed()` bytes; get finished access units back.

    An access unit ends at the next pack header, at a video PES with a new PTS, or when the caller
    calls `end_of_frame()` (the RTP marker bit). With `strict=True` errors raise instead of resyncing.
    """

    def __init__(self, strict: bool = False, max_buffer: int = 1024 * 1024) -> None:
        self.strict = strict
        self.max_buffer = max_buffer
        self.stream_types: dict[int, int] = {}
        self.errors = 0
        self._buf = bytearray()
        self._au = bytearray()
        self._au_pts: int | None = None
        self._au_type = 0x1B
        self._synced = False

    def feed(self, data: bytes) -> list[AccessUnit]:
        self._buf += data
        out: list[AccessUnit] = []
        pos = 0
        buf = self._buf
        while True:
            if len(buf) - pos < 4:
                break
            if not self._synced or buf[pos: pos + 3] != b"\x00\x00\x01" or buf[pos + 3] < END:
                if self._synced:
                    self._error(f"PS: no start code at stream offset {pos} (0x{bytes(buf[pos:pos + 4]).hex()})")
                nxt = buf.find(b"\x00\x00\x01\xba", pos + (1 if self._synced else 0))
                if nxt < 0:
                    pos = max(pos, len(buf) - 3)
                    break
                pos, self._synced = nxt, True
                continue
            code = buf[pos + 3]
            try:
                if code == PACK:
                    n = pack_header_length(buf, pos)
                    if n is None or len(buf) - pos < n:
                        break
                    out += self._finish()
                    pos += n
                    continue
                if code == END:
                    pos += 4
                    continue
                if len(buf) - pos < 6:
                    break
                n = 6 + struct.unpack_from("!H", buf, pos + 4)[0]
                # 00 00 01 BA cannot occur inside H.264/H.265 data (0xBA sets the forbidden bit), so a
                # pack header inside the claimed span means this unit's length field is corrupt.
                nxt = buf.find(b"\x00\x00\x01\xba", pos + 6, pos + n)
                if nxt >= 0:
                    raise ParseError(f"PS unit 0x{code:02x} at offset {pos}: length {n} overruns the pack "
                                     f"header at offset {nxt}")
                if len(buf) - pos < n:
                    break
                unit = buf[pos: pos + n]
                pos += n
                out += self._unit(code, unit)
            except ParseError as err:
                self._error(str(err))
                self._synced = False
                pos += 1
        del buf[:pos]
        if len(buf) > self.max_buffer:
            self._error(f"PS: {len(buf)} bytes buffered without a complete unit")
            buf.clear()
            self._synced = False
        return out

    def _unit(self, code: int, unit: bytearray) -> list[AccessUnit]:
        if code == PSM:
            self.stream_types.update(parse_psm(unit))
            return []
        if 0xE0 <= code <= 0xEF:
            _, pts, payload = parse_pes(unit)
            out: list[AccessUnit] = []
            if pts is not None and self._au and self._au_pts is not None and pts != self._au_pts:
                out = self._finish()
            if pts is not None:
                self._au_pts = pts
            self._au_type = self.stream_types.get(code, self._au_type)
            if len(self._au) + len(payload) > MAX_AU:
                self._au.clear()
                raise ParseError(f"PS: access unit exceeds {MAX_AU} bytes")
            self._au += payload
            return out
        if code == SYSTEM or code >= 0xBD:
            return []  # system header, audio, private and padding streams are skipped
        raise ParseError(f"PS: unexpected start code 0x000001{code:02x}")

    def _error(self, msg: str) -> None:
        self.errors += 1
        if self.strict:
            raise ParseError(msg)
        log.debug("ps_resync", error=msg, errors=self.errors)

    def _finish(self) -> list[AccessUnit]:
        if not self._au:
            return []
        au = AccessUnit(self._au_type, self._au_pts, bytes(self._au))
        self._au.clear()
        self._au_pts = None
        return [au]

    def end_of_frame(self) -> list[AccessUnit]:
        """The RTP marker bit: complete units already buffered, then close the access unit."""
        return self.feed(b"") + self._finish()


def demux_ps(data: bytes) -> list[AccessUnit]:
    """Strict one-shot demux of a complete PS byte string (raises ParseError on anything wrong)."""
    d = PsDemuxer(strict=True)
    out = d.feed(data) + d.end_of_frame()
    if d._buf:
        raise ParseError(f"PS: {len(d._buf)} trailing bytes do not form a complete unit")
    return out
