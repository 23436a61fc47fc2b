"""In-process announcement of new and updated alerts (SSE, push). Lives on the app as `app[ALERT_HUB]`.

`subscribe`, `unsubscribe` and `publish` run on the event loop thread. The MQTT ingest thread hands
rows over with `publish_threadsafe(row)`: they go into an inbox (a deque under a lock) and the loop
is woken only when the inbox goes from empty to non-empty, so a burst of stored alerts costs one
wake-up of the loop, not one per alert. A slow subscriber loses its oldest queued rows (counted in
`dropped`) rather than growing without bound: the database stays the record.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from typing import Any


class AlertHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.published = 0
        self.dropped = 0
        self.wakeups = 0  # how often the ingest thread woke the loop (bursts, not rows)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._inbox_lock = threading.Lock()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A new queue that receives every alert row published from now on."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, alert_row: dict[str, Any]) -> None:
        """Hand a stored alert row (as in the `alerts` table) to every subscriber.

        Called for a new alert and for an update to a higher `rev` (e.g. state "end"); a repeat is
        never announced. Listeners that want only new events check `row["rev"]` or keep seen ids.
        """
        self.published += 1
        for queue in list(self._queues):
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(alert_row)

    # -- from another thread -------------------------------------------------------------------
    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that `publish_threadsafe` hands rows to (set by the app at startup)."""
        self._loop = loop

    def publish_threadsafe(self, alert_row: dict[str, Any]) -> None:
        """`publish` from any thread (after the row's commit); the loop drains the inbox in one go."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("AlertHub.bind_loop was not called")
        with self._inbox_lock:
            wake = not self._inbox
            self._inbox.append(alert_row)
        if wake:
            self.wakeups += 1
            with contextlib.suppress(RuntimeError):  # loop already closed during shutdown: the row is stored anyway
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._inbox_lock:
            rows = list(self._inbox)
            self._inbox.clear()
        for row in rows:
            self.publish(row)
