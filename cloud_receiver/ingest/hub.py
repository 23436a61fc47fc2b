"""In-process announcement of new and updated alerts (SSE, push). Lives on the app as `app[ALERT_HUB]`.

`subscribe`, `unsubscribe` and `publish` run on the event loop thread. The MQTT ingest thread hands
rows over with `publish_threadsafe(row)`: they go into an inbox (a deque under a lock) and the loop
is woken only when the inbox goes from empty to non-empty, so a burst of stored alerts costs one
wake-up of the loop, not one per alert.

Every published row gets a sequence number (`seq`, counting from 1 in this run, whose `epoch` is
random per start) and the last `history` rows are kept, so a stream that reconnects can be given
what it missed (`since`). A slow subscriber loses its oldest queued rows rather than growing
without bound; each subscription counts them in `lost` (and the hub in `dropped`), so the SSE
stream can tell its client to reload. The database stays the record.

On PostgreSQL several receivers share the database, and each one's hub is also fed by its listener
(`cloud_receiver/ingest/pg_notify.py`) with what the other receivers store. Rows from the ingest
thread, and those the listener reads, are published with `once=True`: a row whose (id, rev) the hub
announced recently (the last `remember` announcements) is not announced again, so a row that reaches
the hub both ways (or a catch-up after a lost connection) reaches a stream once. The ingest thread
also says, before its commit, which (id, rev) it is about to announce (`expect`): the listener skips
those, and the ones announced, without reading their rows (`owned`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

Announced = tuple[int, dict[str, Any]]  # (seq, alert row)


@dataclass(eq=False)
class Subscription:
    """What one listener receives: `queue` of (seq, row), and how many rows it `lost` by falling behind."""

    queue: asyncio.Queue[Announced]
    lost: int = 0


@dataclass(eq=False)
class AlertHub:
    queue_size: int = 1000
    history: int = 10_000
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    seq: int = 0  # of the last published row
    published: int = 0
    dropped: int = 0
    wakeups: int = 0  # how often the ingest thread woke the loop (bursts, not rows)
    remember: int = 100_000  # (id, rev) of this many recent announcements, for `publish(once=True)`
    repeats: int = 0  # rows not announced again by `publish(once=True)`
    drain_slice: int = 100  # rows of the ingest thread's inbox published before the loop gets a turn

    def __post_init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._recent: collections.deque[Announced] = collections.deque(maxlen=self.history)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._inbox_lock = threading.Lock()
        self._announced: collections.OrderedDict[tuple[Any, Any], None] = collections.OrderedDict()
        self._expected: collections.OrderedDict[tuple[Any, Any], None] = collections.OrderedDict()  # under _inbox_lock

    @property
    def streams(self) -> int:
        """Open subscriptions (one per SSE stream)."""
        return len(self._subs)

    def subscribe(self) -> Subscription:
        """A new subscription that receives every alert row published from now on."""
        sub = Subscription(asyncio.Queue(self.queue_size))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, alert_row: dict[str, Any], *, once: bool = False) -> bool:
        """Hand a stored alert row (as in the `alerts` table) to every subscriber; whether it was announced.

        Called for a new alert and for an update to a higher `rev` (e.g. state "end"); a repeat is
        never announced. Listeners that want only new events check `row["rev"]` or keep seen ids.
        With `once`, a row whose (id, rev) was announced among the last `remember` is skipped.
        """
        key = (alert_row.get("id"), alert_row.get("rev"))
        if key in self._announced:
            if once:
                self.repeats += 1
                return False
            self._announced.move_to_end(key)
        else:
            self._announced[key] = None
            if len(self._announced) > self.remember:
                self._announced.popitem(last=False)
        self.seq += 1
        self.published += 1
        item = (self.seq, alert_row)
        self._recent.append(item)
        for sub in list(self._subs):
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.lost += 1
                self.dropped += 1
            sub.queue.put_nowait(item)
        return True

    def owned(self, alert_id: Any, rev: Any) -> bool:
        """Whether (id, rev) is among the last `remember` announcements, or this receiver's ingest said it will
        announce it (`expect`)."""
        key = (alert_id, rev)
        if key in self._announced:
            return True
        with self._inbox_lock:
            return key in self._expected

    def since(self, seq: int) -> list[Announced] | None:
        """The rows published after `seq`, or None when they are not all held any more (or `seq` is unknown)."""
        if seq > self.seq or seq < 0:
            return None
        first = self._recent[0][0] if self._recent else self.seq + 1
        if seq < first - 1:
            return None
        return [item for item in self._recent if item[0] > seq]

    # -- from another thread -------------------------------------------------------------------
    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that `publish_threadsafe` hands rows to (set by the app at startup)."""
        self._loop = loop

    def publish_threadsafe(self, alert_row: dict[str, Any]) -> None:
        """`publish(once=True)` from any thread (after the row's commit); the loop drains the inbox in one go."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("AlertHub.bind_loop was not called")
        with self._inbox_lock:
            wake = not self._inbox
            self._inbox.append(alert_row)
        if wake:
            self.wakeups += 1
            with contextlib.suppress(RuntimeError):  # loop already closed during shutdown: the row is stored anyway
                loop.call_soon_threadsafe(self.drain)

    def expect(self, keys: list[tuple[Any, Any]]) -> None:
        """From the ingest thread, before its commit: these (id, rev) will be announced by `publish_threadsafe`
        if the commit succeeds (the last `remember` are kept; one that never commits only takes a place)."""
        with self._inbox_lock:
            self._expected.update(dict.fromkeys(keys))
            while len(self._expected) > self.remember:
                self._expected.popitem(last=False)

    def drain(self) -> None:
        """Publish what the ingest thread handed over (on the loop), `drain_slice` rows at a time: the streams
        empty their queues in between (a burst larger than a queue would make every stream resync)."""
        with self._inbox_lock:
            rows = [self._inbox.popleft() for _ in range(min(self.drain_slice, len(self._inbox)))]
            more = bool(self._inbox)
        for row in rows:
            self.publish(row, once=True)
        if more and self._loop is not None:  # after the streams this slice woke: publish_threadsafe will not wake it
            self._loop.call_soon(self.drain)
