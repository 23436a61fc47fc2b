"""The `ingest summary` log line: what ingest did, at most once per interval (per-alert lines are debug)."""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger(__name__)


class IngestSummary:
    """An info line with what ingest did, at most once per interval (the per-alert lines are debug)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._since = time.monotonic()
        self._counts: dict[str, int] = {}
        self._batches = 0

    def log(self, counts: dict[str, int], batches: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._since < self.interval_s:
            return
        delta = {k: v - self._counts.get(k, 0) for k, v in counts.items()}
        n = batches - self._batches
        if any(delta.values()) or n:
            log.info("ingest summary", interval_s=round(now - self._since, 1), batches=n,
                     messages_per_batch=round(sum(delta.values()) / n, 1) if n else None, **delta)
        self._since, self._counts, self._batches = now, dict(counts), batches
