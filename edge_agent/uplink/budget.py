"""Upload budget: a token bucket over bytes written to the broker socket, with priorities.

Pure (no I/O, no threads): the clock is injected so tests drive time by hand. The uplink asks
`try_take(nbytes, priority)` *before* it hands a packet to the socket; a grant deducts the tokens,
a refusal leaves them and `delay_for` says how long until the same request would be granted.

Priorities: a lower-priority class may only spend tokens above its reserve, so an alert that
arrives during a snapshot flood finds tokens waiting for it instead of queueing behind the flood's
refill. Which message goes next is the outbox's order (priority, then age); the reserves only
decide how much headroom the lower classes leave behind.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_agent.outbox.priority import Priority

# Fraction of the bucket each class must leave untouched (alerts may empty it).
DEFAULT_RESERVE: dict[Priority, float] = {
    Priority.ALERT: 0.0,
    Priority.SNAPSHOT: 1 / 16,
    Priority.CLIP: 1 / 8,
    Priority.LIVE: 1 / 4,
    Priority.TELEMETRY: 1 / 4,
}


WINDOW_S = 60.0  # the limit holds over every window this long (0.5 Mbit/s per camera over 60 s)
# bytes on the socket per byte the bucket charges: TLS record headers and tags and MQTT keepalives, measured
# 1.003-1.011 over 60 s windows with live view on (docs/performance.md, scripts/bench_live.py)
WIRE_FRAMING = 1.015


def budget_bytes_per_s(kbps_per_camera: float, n_cameras: int) -> float:
    """Configured budget in bytes per second (kbit = 1000 bit); at least one camera's worth."""
    return kbps_per_camera * 1000.0 / 8.0 * max(1, n_cameras)


@dataclass
class UploadBudget:
    """Token bucket of `rate` bytes/s holding at most `burst` bytes."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    reserve: dict[Priority, float] = field(default_factory=lambda: dict(DEFAULT_RESERVE))
    history_s: float = 10.0
    limit: float = 0.0  # the configured bytes/s the refill `rate` keeps under (0: the rate itself)
    tokens: float = field(init=False)
    spent: dict[int, int] = field(init=False)
    _last: float = field(init=False)
    _recent: deque[tuple[float, int, int]] = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError(f"budget rate {self.rate} and burst {self.burst} must be positive")
        self.tokens = float(self.burst)
        self.spent = {int(p): 0 for p in Priority}
        self._last = self.clock()
        self._recent = deque()

    @classmethod
    def for_cameras(cls, kbps_per_camera: float, n_cameras: int, *, max_packet: int,
                    burst_s: float = 1.0, window_s: float = WINDOW_S, framing: float = WIRE_FRAMING,
                    clock: Callable[[], float] = time.monotonic) -> UploadBudget:
        """A budget whose bytes on the socket stay within `kbps_per_camera` per camera over every `window_s`.

        The bucket holds `burst_s` of budget, but always at least one largest packet above the biggest
        reserve, so no class can starve. A full bucket at a window's start lets the window carry its
        burst on top of `rate` x `window_s`, and the socket carries TLS records and keepalives the
        bucket does not see (`framing`): the refill rate is set below the limit by both, so the limit
        holds for the worst window, not only on average."""
        limit = budget_bytes_per_s(kbps_per_camera, n_cameras)
        max_reserve = max(DEFAULT_RESERVE.values())
        rate = limit * window_s / (framing * (window_s + burst_s))
        burst = max(rate * burst_s, max_packet / (1.0 - max_reserve))
        if framing * (rate * window_s + burst) > limit * window_s:  # a bucket of one large packet
            rate = (limit * window_s / framing - burst) / window_s
            if rate <= 0:  # one packet is more than a window's budget: keep the average, the window cannot hold
                rate = limit / framing
        return cls(rate=rate, burst=burst, clock=clock, limit=limit)

    @property
    def limit_bps(self) -> float:
        """The configured budget in bits/s (what telemetry and logs report; the refill runs a little below)."""
        return (self.limit or self.rate) * 8.0

    def _refill(self) -> float:
        now = self.clock()
        if now > self._last:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
            self._last = now
        return now

    def _floor(self, nbytes: int, priority: Priority) -> float:
        # A packet larger than burst-minus-reserve would wait forever; let it go on a full bucket.
        want = self.reserve.get(Priority(priority), 0.0) * self.burst
        return max(0.0, min(want, self.burst - nbytes))

    def try_take(self, nbytes: int, priority: Priority = Priority.ALERT) -> bool:
        """Deduct `nbytes` if the class may spend them now; False leaves the bucket unchanged."""
        now = self._refill()
        need = min(float(nbytes), self.burst) + self._floor(nbytes, priority)
        if self.tokens < need:
            return False
        self._spend(now, nbytes, priority)
        return True

    def charge(self, nbytes: int, priority: Priority = Priority.ALERT) -> None:
        """Deduct unconditionally (control messages that must go now); the bucket may go into debt."""
        self._spend(self._refill(), nbytes, priority)

    def _spend(self, now: float, nbytes: int, priority: Priority) -> None:
        self.tokens -= nbytes
        self.spent[int(priority)] += nbytes
        self._recent.append((now, int(priority), nbytes))
        while self._recent and self._recent[0][0] < now - self.history_s:
            self._recent.popleft()

    def delay_for(self, nbytes: int, priority: Priority = Priority.ALERT) -> float:
        """Seconds until `try_take(nbytes, priority)` would succeed (0 if it would now)."""
        self._refill()
        need = min(float(nbytes), self.burst) + self._floor(nbytes, priority)
        return max(0.0, (need - self.tokens) / self.rate)

    def recent_bps(self, below: Priority | None = None) -> float:
        """Bits/s spent over the last `history_s`, optionally only by classes more urgent than `below`."""
        now = self._refill()
        total = sum(n for t, p, n in self._recent if t >= now - self.history_s and (below is None or p < below))
        return total * 8.0 / self.history_s

    def spare_bps(self, for_priority: Priority = Priority.LIVE) -> float:
        """What the more urgent classes leave of the budget, in bits/s (live video adapts to this)."""
        return max(0.0, self.rate * 8.0 - self.recent_bps(below=for_priority))

    @property
    def total_spent(self) -> int:
        return sum(self.spent.values())
