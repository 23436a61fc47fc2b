"""The agent's inner supervisor: restarts stuck decode threads and inference workers, and feeds
systemd's watchdog only while everything makes progress.

Every decode thread (`StreamReader.beat`) and inference worker (`Agent.worker_beats`) moves a
heartbeat as it works. One that has not moved for `stuck_after_s` is stuck (a read or an invoke
blocked inside a library): it is abandoned and run again in a new thread, with back-off per thread
(`restart_min_s` doubling up to `restart_max_s`), and every restart is counted and logged. WATCHDOG=1
goes to systemd from the agent's main loop, and only on a pass that found nothing stuck: a supervisor
that hangs itself, or a thread restarted `give_up_after` times within `give_up_window_s` (restarting
it does not help), stops the pings, and systemd restarts the whole service.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

import structlog

from bk_common import sdnotify
from edge_agent.capture.stream_reader import StreamReader, backoff_delay

log = structlog.get_logger(__name__)


class Supervised(Protocol):
    """What the supervisor needs of the agent."""

    worker_beats: list[float]

    def readers(self) -> list[tuple[object, StreamReader]]: ...  # (camera worker, reader)
    def restart_worker(self, index: int, stop: threading.Event) -> None: ...


class Supervisor:
    def __init__(self, agent: Supervised, *, stuck_after_s: float, restart_min_s: float, restart_max_s: float,
                 give_up_after: int = 5, give_up_window_s: float = 600.0,
                 notify: Callable[..., bool] = sdnotify.notify) -> None:
        self.agent = agent
        self.stuck_after_s = stuck_after_s
        self.restart_min_s = restart_min_s
        self.restart_max_s = restart_max_s
        self.notify = notify
        self.restarts: Counter[str] = Counter()  # thread name -> restarts so far
        self._not_before: dict[str, float] = {}  # thread name -> earliest next restart (back-off)
        self._recent: dict[str, deque[float]] = {}  # thread name -> its restarts within the window
        self.give_up_after = give_up_after
        self.give_up_window_s = give_up_window_s
        self.gave_up: set[str] = set()  # threads restarted too often: the watchdog is left to expire
        self.passes = 0

    def check(self, stop: threading.Event) -> bool:
        """One pass: restart what is stuck (when its back-off allows); True when nothing was stuck."""
        now = time.monotonic()
        healthy = True
        for worker, reader in self.agent.readers():
            if now - reader.beat > self.stuck_after_s:
                healthy = False
                if self._may_restart(reader.name, now):
                    worker.restart(reader, stop)  # type: ignore[attr-defined]
        for index, beat in enumerate(self.agent.worker_beats):
            if now - beat > self.stuck_after_s:
                healthy = False
                if self._may_restart(f"inference-{index}", now):
                    self.agent.restart_worker(index, stop)
        return healthy and not self.gave_up

    def _may_restart(self, name: str, now: float) -> bool:
        if now < self._not_before.get(name, 0.0):
            return False
        recent = self._recent.setdefault(name, deque())
        while recent and now - recent[0] > self.give_up_window_s:
            recent.popleft()
        recent.append(now)
        if len(recent) >= self.give_up_after and name not in self.gave_up:
            self.gave_up.add(name)
            log.critical("thread_keeps_getting_stuck", thread=name, restarts=len(recent),
                         window_s=self.give_up_window_s, action="watchdog pings stop; systemd restarts the agent")
        n = self.restarts[name]
        self.restarts[name] += 1
        self._not_before[name] = now + backoff_delay(n, self.restart_min_s, self.restart_max_s)
        log.error("thread_stuck_restarted", thread=name, stuck_after_s=self.stuck_after_s, restarts=n + 1)
        return True

    def step(self, stop: threading.Event) -> bool:
        """One pass of the agent's main loop: check, then ping the watchdog if nothing was stuck."""
        healthy = self.check(stop)
        if healthy:
            self.notify("WATCHDOG=1")
        self.passes += 1
        return healthy
