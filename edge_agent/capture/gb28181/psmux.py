"""MPEG-2 PS muxing of one video access unit (what GB/T 28181 devices send); used by the device
emulator in tests and as a seed generator for the fuzzer."""

from __future__ import annotations

import struct

MAX_PES_PAYLOAD = 65000


def _ts5(prefix: int, ts: int) -> bytes:
    ts &= (1 << 33) - 1
    return bytes([
        (prefix << 4) | (((ts >> 30) & 0x07) << 1) | 1,
        (ts >> 22) & 0xFF, (((ts >> 15) & 0x7F) << 1) | 1,
        (ts >> 7) & 0xFF, ((ts & 0x7F) << 1) | 1,
    ])


def pack_header(scr: int, mux_rate: int = 6106) -> bytes:
    scr &= (1 << 33) - 1
    b = bytearray(b"\x00\x00\x01\xba")
    b.append(0x40 | (((scr >> 30) & 0x07) << 3) | 0x04 | ((scr >> 28) & 0x03))
    b.append((scr >> 20) & 0xFF)
    b.append((((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 0x03))
    b.append((scr >> 5) & 0xFF)
    b.append(((scr & 0x1F) << 3) | 0x04)  # SCR extension 0
    b.append(0x01)
    b += bytes([(mux_rate >> 14) & 0xFF, (mux_rate >> 6) & 0xFF, ((mux_rate & 0x3F) << 2) | 0x03])
    b.append(0xF8)  # reserved + stuffing length 0
    return bytes(b)


def system_header() -> bytes:
    body = bytes([0x80, 0x00, 0x01, 0x04, 0xE1, 0xFF, 0xE0, 0xE0, 0x80])
    return b"\x00\x00\x01\xbb" + struct.pack("!H", len(body)) + body


def psm(stream_type: int) -> bytes:
    entries = bytes([stream_type, 0xE0]) + struct.pack("!H", 0)
    body = bytes([0xE0, 0xFF]) + struct.pack("!H", 0) + struct.pack("!H", len(entries)) + entries
    crc = b"\x00\x00\x00\x00"  # receivers here do not check it; most devices' CRCs are not checked either
    return b"\x00\x00\x01\xbc" + struct.pack("!H", len(body) + 4) + body + crc


def pes(payload: bytes, pts: int | None, stream_id: int = 0xE0) -> bytes:
    hdr = bytes([0x80, 0x80 if pts is not None else 0x00, 5 if pts is not None else 0])
    if pts is not None:
        hdr += _ts5(0x2, pts)
    return b"\x00\x00\x01" + bytes([stream_id]) + struct.pack("!H", len(hdr) + len(payload)) + hdr + payload


def mux_access_unit(au: bytes, pts: int, *, keyframe: bool, stream_type: int = 0x1B) -> bytes:
    """One PS pack carrying one video frame; system header and PSM precede key frames."""
    out = bytearray(pack_header(pts))
    if keyframe:
        out += system_header() + psm(stream_type)
    for i in range(0, max(len(au), 1), MAX_PES_PAYLOAD):
        out += pes(au[i: i + MAX_PES_PAYLOAD], pts if i == 0 else None)
    return bytes(out)
