"""In-process announcement of new and updated alerts (SSE, push). Lives on the app as `app[ALERT_HUB]`.

All methods run on the event loop thread; the MQTT thread reaches it through
`loop.call_soon_threadsafe(hub.publish, row)`. A slow subscriber loses its oldest queued rows
(counted in `dropped`) rather than growing without bound: the database stays the record.
"""

from __future__ import annotations

import asyncio
from typing import Any


class AlertHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.published = 0
        self.dropped = 0

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
