"""RTP over TCP framing: RFC 4571 (2-byte length) and `$`+channel+length (RTSP-style interleaved)."""

from __future__ import annotations

import struct

from edge_agent.errors import ParseError

MAX_BUFFER = 512 * 1024


def frame_4571(packet: bytes) -> bytes:
    if len(packet) > 0xFFFF:
        raise ParseError(f"RTP packet of {len(packet)} bytes does not fit RFC 4571 framing")
    return struct.pack("!H", len(packet)) + packet


def frame_interleaved(packet: bytes, channel: int = 0) -> bytes:
    if len(packet) > 0xFFFF:
        raise ParseError(f"RTP packet of {len(packet)} bytes does not fit $-interleaved framing")
    return struct.pack("!cBH", b"$", channel & 0xFF, len(packet)) + packet


class TcpRtpDeframer:
    """Cuts a TCP byte stream into RTP packets.

    `mode` is "4571", "interleaved" or "auto": auto looks at the first frame: a `$` followed,
    four bytes in, by an RTP version-2 byte means interleaved; otherwise RFC 4571.
    In interleaved mode a byte other than `$` where a frame should start is a ParseError
    (the stream is out of sync; the caller drops the connection).
    """

    def __init__(self, mode: str = "auto", max_buffer: int = MAX_BUFFER) -> None:
        if mode not in ("auto", "4571", "interleaved"):
            raise ValueError(f"unknown framing mode {mode!r}")
        self.mode = mode
        self._buf = bytearray()
        self._max = max_buffer
        self.channels: dict[int, int] = {}

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        if len(self._buf) > self._max:
            self._buf.clear()
            raise ParseError(f"TCP RTP framing buffer exceeded {self._max} bytes")
        out: list[bytes] = []
        while True:
            if self.mode == "auto":
                if len(self._buf) < 5:
                    return out
                is_int = self._buf[0] == 0x24 and (self._buf[4] >> 6) == 2
                self.mode = "interleaved" if is_int else "4571"
            if self.mode == "interleaved":
                if len(self._buf) < 4:
                    return out
                if self._buf[0] != 0x24:
                    bad = self._buf[0]
                    self._buf.clear()
                    raise ParseError(f"interleaved RTP frame starts with 0x{bad:02x}, expected '$'")
                channel, length = self._buf[1], struct.unpack_from("!H", self._buf, 2)[0]
                if len(self._buf) < 4 + length:
                    return out
                pkt = bytes(self._buf[4: 4 + length])
                del self._buf[: 4 + length]
                self.channels[channel] = self.channels.get(channel, 0) + 1
                if channel % 2 == 0 and pkt:  # odd channels carry RTCP
                    out.append(pkt)
            else:
                if len(self._buf) < 2:
                    return out
                length = struct.unpack_from("!H", self._buf, 0)[0]
                if len(self._buf) < 2 + length:
                    return out
                pkt = bytes(self._buf[2: 2 + length])
                del self._buf[: 2 + length]
                if pkt:
                    out.append(pkt)
