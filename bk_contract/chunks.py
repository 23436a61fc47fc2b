"""Binary media chunks: snapshots and clips travel as QoS 1 messages of at most `chunk_bytes` data.

Layout of one chunk (big-endian):
    magic  b"BKM1"           4 bytes
    index  uint32            position of this chunk, 0-based
    total  uint32            number of chunks
    size   uint64            bytes of the whole media
    sha256 32 bytes          of the whole media
    ctype  uint8 length + ASCII content type, e.g. "image/jpeg"
    data   the rest
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MAGIC = b"BKM1"
_FIXED = struct.Struct(">4sIIQ32sB")
MAX_CHUNKS = 100_000


class ChunkError(ValueError):
    """A malformed media chunk; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    index: int
    total: int
    size: int
    sha256: str
    content_type: str


def encode_chunk(header: ChunkHeader, data: bytes) -> bytes:
    ctype = header.content_type.encode("ascii")
    return _FIXED.pack(MAGIC, header.index, header.total, header.size, bytes.fromhex(header.sha256), len(ctype)) + ctype + data


def decode_chunk(payload: bytes) -> tuple[ChunkHeader, bytes]:
    """Parse one chunk; raises ChunkError for anything malformed."""
    if len(payload) < _FIXED.size:
        raise ChunkError(f"chunk of {len(payload)} bytes is shorter than its {_FIXED.size}-byte header")
    magic, index, total, size, digest, clen = _FIXED.unpack_from(payload)
    if magic != MAGIC:
        raise ChunkError(f"chunk magic {magic!r} is not {MAGIC!r}")
    if total == 0 or total > MAX_CHUNKS or index >= total:
        raise ChunkError(f"chunk index {index} / total {total} out of range")
    start = _FIXED.size + clen
    if len(payload) < start:
        raise ChunkError("chunk ends inside its content type")
    try:
        ctype = payload[_FIXED.size:start].decode("ascii")
    except UnicodeDecodeError as err:
        raise ChunkError("chunk content type is not ASCII") from err
    return ChunkHeader(index, total, size, digest.hex(), ctype), payload[start:]


def split_media(data: bytes, content_type: str, chunk_bytes: int) -> tuple[str, list[bytes]]:
    """Split media into encoded chunks; returns (sha256 hex, payloads)."""
    digest = hashlib.sha256(data).hexdigest()
    pieces = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    total = len(pieces)
    return digest, [encode_chunk(ChunkHeader(i, total, len(data), digest, content_type), p) for i, p in enumerate(pieces)]
