"""Media reassembly: chunks in the database until all arrived, then one verified file by content hash.

Only the contract's media types are accepted (`bk_contract.MEDIA_TYPES`: JPEG snapshots, MP4 clips),
and a reassembled file must look like its declared type (`media_type_problem`), so what the API
later serves with that type is that type. Files live at `media_dir/ab/cdef…` (the first two hex digits of the sha256 as a folder), written
to a temporary name, fsynced and renamed, so a file that exists is complete. The `media` row
stores the path relative to `media_dir`. Identical content from two devices shares one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bk_contract import MEDIA_TYPES, ChunkHeader, media_type_problem
from cloud_receiver.errors import Rejected, StorageError
from cloud_receiver.storage.sqlite import Storage

CONTENT_TYPE = re.compile(r"^[a-z]+/[a-z0-9.+-]{1,60}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    state: Literal["stored", "duplicate", "complete"]
    have: int = 0
    total: int = 0
    path: str | None = None


def relative_media_path(sha256: str) -> str:
    """`ab/cdef…` for a sha256 hex digest."""
    if not HEX64.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:]}"


def write_media_file(media_dir: Path, data: bytes, sha256: str) -> str:
    """Write `data` under its content hash (atomically, once); returns the relative path."""
    rel = relative_media_path(sha256)
    target = media_dir / rel
    if target.is_file() and target.stat().st_size == len(data):
        return rel
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return rel


def check_header(header: ChunkHeader, data: bytes, seq: int, *, chunk_data_bytes: int, media_max_bytes: int) -> None:
    """Validate one chunk against the topic and the limits; raises Rejected."""
    if header.index != seq:
        raise Rejected(f"chunk index {header.index} differs from topic sequence {seq}")
    if header.size > media_max_bytes:
        raise Rejected(f"media of {header.size} bytes exceeds the limit of {media_max_bytes}")
    if len(data) > chunk_data_bytes:
        raise Rejected(f"chunk data of {len(data)} bytes exceeds the limit of {chunk_data_bytes}")
    if len(data) > header.size:
        raise Rejected(f"chunk data of {len(data)} bytes is larger than the whole media ({header.size})")
    if header.total > max(1, header.size) or header.total * chunk_data_bytes < header.size:
        raise Rejected(f"{header.total} chunks cannot carry {header.size} bytes within the chunk limit")
    if not CONTENT_TYPE.match(header.content_type):
        raise Rejected(f"content type {header.content_type!r} is not a media type")
    if header.content_type not in MEDIA_TYPES:
        raise Rejected(f"content type {header.content_type!r} is not accepted; the contract allows "
                       f"{', '.join(MEDIA_TYPES)}")


class MediaAssembler:
    """Stores chunks idempotently and turns a complete, verified set into a file + `media` row."""

    def __init__(self, storage: Storage, media_dir: Path, *, chunk_data_bytes: int, media_max_bytes: int) -> None:
        self.storage = storage
        self.media_dir = media_dir
        self.chunk_data_bytes = chunk_data_bytes
        self.media_max_bytes = media_max_bytes

    def accept(self, device_id: str, media_id: str, seq: int, header: ChunkHeader, data: bytes,
               received_at: str) -> ChunkOutcome:
        """Store one chunk; raises Rejected for a bad chunk or a set whose sha256 does not match."""
        check_header(header, data, seq, chunk_data_bytes=self.chunk_data_bytes, media_max_bytes=self.media_max_bytes)
        done = self.storage.get_media(device_id, media_id)
        if done is not None:
            if done["sha256"] != header.sha256:
                raise Rejected(f"media {media_id} is already stored with another sha256")
            return ChunkOutcome("duplicate", header.total, header.total, done["path"])
        known = self.storage.chunk_headers(device_id, media_id)
        if known:
            first = known[0]
            mine = (header.total, header.size, header.sha256, header.content_type)
            theirs = (first["total"], first["size"], first["sha256"], first["content_type"])
            if mine != theirs:
                raise Rejected(f"chunk {seq} of media {media_id} disagrees with earlier chunks "
                               f"(total/size/sha256/type {mine} vs {theirs})")
            if any(k["idx"] == seq for k in known):
                return ChunkOutcome("duplicate", len(known), header.total)
        have = self.storage.add_chunk(device_id, media_id, header, data, received_at)
        if have < header.total:
            return ChunkOutcome("stored", have, header.total)
        return self._assemble(device_id, media_id, header, received_at)

    def _assemble(self, device_id: str, media_id: str, header: ChunkHeader, received_at: str) -> ChunkOutcome:
        blob = b"".join(self.storage.chunk_data(device_id, media_id))
        digest = hashlib.sha256(blob).hexdigest()
        if len(blob) != header.size or digest != header.sha256:
            self.storage.discard_chunks(device_id, media_id)
            raise Rejected(f"media {media_id}: reassembled {len(blob)} bytes with sha256 {digest}, "
                           f"expected {header.size} bytes with sha256 {header.sha256}; chunks discarded")
        problem = media_type_problem(header.content_type, blob)
        if problem is not None:
            self.storage.discard_chunks(device_id, media_id)
            raise Rejected(f"media {media_id}: {problem}; chunks discarded")
        try:
            rel = write_media_file(self.media_dir, blob, digest)
        except OSError as err:  # disk full, permissions: retryable, the message stays unacknowledged
            raise StorageError(f"cannot write media file for {media_id}: {err}") from err
        self.storage.finish_media(device_id, media_id, header, rel, received_at)
        return ChunkOutcome("complete", header.total, header.total, rel)
