"""Message priorities: the outbox sends in this order, the upload budget reserves by it."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """Message priority; lower value goes first and is dropped last."""

    ALERT = 0
    SNAPSHOT = 1
    CLIP = 2
    LIVE = 3
    TELEMETRY = 4


PRIORITY_NAMES: dict[int, str] = {int(p): p.name.lower() for p in Priority}
