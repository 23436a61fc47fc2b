"""Failed-REGISTER throttle: bursts of wrong-password REGISTERs per (source address, device id).

A device with a wrong password (or a guesser) may send REGISTERs as fast as it likes. Failures of
one key less than `window_s` apart form a burst: only the first failure of a burst is reported
(one `registration_rejected` event, one camera wake), and after `limit` failures the key is
refused at once until `window_s` after its last counted failure. Refusals while locked out do not
extend the lock, so a device whose password was fixed gets in at most `window_s` later.
Pure and clock-injected; the server calls it on its loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Key = tuple[str, str]  # (source IP address, device id)


@dataclass
class Burst:
    first: float
    last: float
    failures: int = 0
    refused: int = 0  # REGISTERs refused at once while locked out


class RegisterThrottle:
    """Counts failed REGISTERs per key; says when to report and when to refuse at once."""

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._bursts: dict[Key, Burst] = {}

    def _current(self, key: Key) -> Burst | None:
        burst = self._bursts.get(key)
        if burst is not None and self.clock() - burst.last >= self.window_s:
            del self._bursts[key]
            return None
        return burst

    def locked(self, key: Key) -> bool:
        """True while `key` has reached the limit within the current burst; counts the refusal."""
        burst = self._current(key)
        if burst is None or burst.failures < self.limit:
            return False
        burst.refused += 1
        return True

    def failed(self, key: Key) -> Burst:
        """Count a failure of `key`; the returned burst has failures == 1 when this one starts it."""
        now = self.clock()
        burst = self._current(key)
        if burst is None:
            self._prune(now)
            burst = self._bursts[key] = Burst(first=now, last=now)
        burst.failures += 1
        burst.last = now
        return burst

    def succeeded(self, key: Key) -> Burst | None:
        """A REGISTER of `key` passed authentication: its burst is over (returned, if any)."""
        return self._bursts.pop(key, None)

    def retry_in(self, key: Key) -> float:
        """Seconds until `key` may try again (0 when it is not locked out)."""
        burst = self._current(key)
        if burst is None or burst.failures < self.limit:
            return 0.0
        return max(0.0, burst.last + self.window_s - self.clock())

    def _prune(self, now: float) -> None:
        if len(self._bursts) < self.max_keys:
            return
        self._bursts = {k: b for k, b in self._bursts.items() if now - b.last < self.window_s}
        if len(self._bursts) >= self.max_keys:  # a flood of keys: forget the oldest quarter at once
            for k in list(self._bursts)[: max(1, self.max_keys // 4)]:
                del self._bursts[k]

    def __len__(self) -> int:
        return len(self._bursts)
