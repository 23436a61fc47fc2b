"""What every frame source offers the camera worker.

A source yields decoded `av.VideoFrame`s until `stop` is set. It translates library errors once:
`RetryLater` for anything that may heal by itself (unreachable, stalled, garbage stream),
`NeedsHuman` (e.g. `AuthFailed`) for what will not. The camera worker owns reconnect and back-off.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

import av


class FrameSource(Protocol):
    name: str

    def frames(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        """Open the stream and yield every decoded frame; close everything on exit."""
        ...
