"""The media types a box may upload, and how their bytes are recognised.

A chunk header names its content type (docs/mqtt.md); the receiver accepts only these types and
only media whose bytes look like the named type, so a box cannot store a web page or a script
that a browser would run when the media is downloaded.
"""

from __future__ import annotations

JPEG = "image/jpeg"
MP4 = "video/mp4"
MEDIA_TYPES = (JPEG, MP4)  # snapshots are JPEG, clips MP4 (ISO base media file, `ftyp` box first)


def sniff_media_type(data: bytes) -> str | None:
    """The media type the bytes are (JPEG: SOI marker FF D8 FF; MP4: an `ftyp` box at offset 4), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return MP4
    return None


def media_type_problem(content_type: str, data: bytes) -> str | None:
    """Why `data` may not be stored as `content_type` (None when it may)."""
    if content_type not in MEDIA_TYPES:
        return f"content type {content_type!r} is not one of {', '.join(MEDIA_TYPES)}"
    found = sniff_media_type(data)
    if found != content_type:
        what = {JPEG: "a JPEG SOI marker (ff d8 ff)", MP4: "an MP4 'ftyp' box at byte 4"}[content_type]
        return f"declared {content_type} but the bytes do not start with {what} (they look like {found or 'neither'})"
    return None
