"""Topic names under `bk/v1/{device_id}/...` and their parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "bk/v1"
DEVICE_ID = re.compile(r"^[0-9]{20}$")  # ASCII digits: \d would take "١" or "²"
CHUNK_INDEX = re.compile(r"^[0-9]{1,6}$")
MEDIA_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
CAMERA_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KINDS = ("status", "alert", "telemetry", "media", "live", "cmd", "cmd/result")


class TopicError(ValueError):
    """A topic outside the contract; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class Topic:
    device_id: str
    kind: str  # one of KINDS
    media_id: str | None = None
    seq: int | None = None
    camera_id: str | None = None


def topic(device_id: str, kind: str, *, media_id: str | None = None, seq: int | None = None,
          camera_id: str | None = None) -> str:
    """Build a contract topic, e.g. topic(dev, "media", media_id=m, seq=0)."""
    base = f"{PREFIX}/{device_id}/{kind}"
    if kind == "media":
        return f"{base}/{media_id}/{seq}"
    if kind == "live":
        return f"{base}/{camera_id}"
    return base


def parse_topic(name: str) -> Topic:
    """Parse a received topic; raises TopicError naming the offending part."""
    parts = name.split("/")
    if len(parts) < 4 or parts[0] != "bk" or parts[1] != "v1":
        raise TopicError(f"topic {name!r} is not under {PREFIX}/")
    device_id, rest = parts[2], parts[3:]
    if not DEVICE_ID.match(device_id):
        raise TopicError(f"topic {name!r}: device id {device_id!r} is not 20 digits")
    kind = rest[0]
    if kind in ("status", "alert", "telemetry", "cmd") and len(rest) == 1:
        return Topic(device_id, kind)
    if kind == "cmd" and rest[1:] == ["result"]:
        return Topic(device_id, "cmd/result")
    if kind == "media" and len(rest) == 3:
        media_id, seq = rest[1], rest[2]
        if not MEDIA_ID.match(media_id):
            raise TopicError(f"topic {name!r}: bad media id {media_id!r}")
        if not CHUNK_INDEX.match(seq):
            raise TopicError(f"topic {name!r}: chunk index {seq!r} is not a number")
        return Topic(device_id, "media", media_id=media_id, seq=int(seq))
    if kind == "live" and len(rest) == 2 and CAMERA_ID.match(rest[1]):
        return Topic(device_id, "live", camera_id=rest[1])
    raise TopicError(f"topic {name!r}: unknown kind {'/'.join(rest)!r}")
