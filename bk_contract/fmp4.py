"""Live video pieces (`bk/v1/{device_id}/live/{camera_id}`): fragmented MP4, read with pure functions.

A piece is a whole number of top-level MP4 boxes: the init segment (`ftyp` + `moov`) or one
fragment (`moof` + `mdat`, one video frame). The box sends the init segment first and again every
few seconds (a viewer may join at any time; QoS 0 may lose one); the receiver keeps it and the
fragments since the last keyframe, so a new viewer starts decoding at once. These functions split a
muxer's output into pieces, tell an init from a fragment, find whether a fragment starts with a
keyframe (its first sample's flags), and give the RFC 6381 codec string Media Source Extensions
need (`avc1.42C01E`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex"}
NON_SYNC = 0x00010000  # sample_is_non_sync_sample in ISO/IEC 14496-12 sample flags


class Fmp4Error(ValueError):
    """Bytes that are not the fragmented MP4 this contract expects."""


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in data[start:end]; raises Fmp4Error on a bad size."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise Fmp4Error(f"truncated box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise Fmp4Error(f"truncated large box header at byte {pos}")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise Fmp4Error(f"box {kind!r} at byte {pos} claims {size} bytes, {end - pos} left")
        yield kind, pos + header, pos + size
        pos += size


def split_pieces(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Cut complete pieces off the front of a muxer's output: (init segments and fragments, rest)."""
    pieces: list[bytes] = []
    pos = 0
    piece_start = 0
    while len(buffer) - pos >= 8:
        size, kind = struct.unpack_from(">I4s", buffer, pos)
        if size == 1:
            if len(buffer) - pos < 16:
                break
            size = struct.unpack_from(">Q", buffer, pos + 8)[0]
        if size < 8:
            raise Fmp4Error(f"box {kind!r} with size {size}")
        if pos + size > len(buffer):
            break
        pos += size
        if kind in (b"moov", b"mdat"):  # the last box of an init segment / of a fragment
            pieces.append(buffer[piece_start:pos])
            piece_start = pos
    return pieces, buffer[piece_start:]


def is_init(piece: bytes) -> bool:
    return piece[4:8] == b"ftyp"


def _find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    for kind, body, stop in boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                return body, stop
            return _find(data, path[1:], body, stop)
    return None


def default_sample_flags(init: bytes) -> int:
    """The movie's default sample flags (`moov/mvex/trex`), 0 when it has none."""
    found = _find(init, [b"moov", b"mvex", b"trex"])
    if found is None:
        return 0
    body, stop = found
    if stop - body < 24:
        raise Fmp4Error("trex box too short")
    return struct.unpack_from(">I", init, body + 20)[0]  # version/flags, track id, desc index, duration, size, flags


def starts_with_keyframe(fragment: bytes, trex_flags: int = 0) -> bool:
    """Whether the fragment's first sample is a sync sample (a keyframe a decoder can start from)."""
    tfhd = _find(fragment, [b"moof", b"traf", b"tfhd"])
    trun = _find(fragment, [b"moof", b"traf", b"trun"])
    if tfhd is None or trun is None:
        raise Fmp4Error("fragment without moof/traf/tfhd and trun")
    flags = trex_flags
    body, _ = tfhd
    tf_flags = struct.unpack_from(">I", fragment, body)[0] & 0xFFFFFF
    offset = body + 8  # version/flags, track id
    for bit, size in ((0x01, 8), (0x02, 4), (0x08, 4), (0x10, 4)):
        if tf_flags & bit:
            offset += size
    if tf_flags & 0x20:
        flags = struct.unpack_from(">I", fragment, offset)[0]
    body, _ = trun
    tr_flags = struct.unpack_from(">I", fragment, body)[0] & 0xFFFFFF
    offset = body + 8  # version/flags, sample count
    if tr_flags & 0x01:
        offset += 4  # data offset
    if tr_flags & 0x04:
        return not struct.unpack_from(">I", fragment, offset)[0] & NON_SYNC
    if tr_flags & 0x400:  # per-sample flags: the first sample's
        offset += (4 if tr_flags & 0x100 else 0) + (4 if tr_flags & 0x200 else 0)
        flags = struct.unpack_from(">I", fragment, offset)[0]
    return not flags & NON_SYNC


def codec_string(init: bytes) -> str:
    """The RFC 6381 codec of an H.264 init segment, from its avcC box: `avc1.PPCCLL`."""
    found = _find(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    if found is None:
        raise Fmp4Error("init segment without moov/trak/mdia/minf/stbl/stsd")
    body, stop = found
    at = init.find(b"avcC", body, stop)
    if at < 0 or at + 8 > stop:
        raise Fmp4Error("init segment without an H.264 avcC configuration")
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02X}{compat:02X}{level:02X}"
