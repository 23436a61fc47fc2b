"""One stream of a camera: open it, hand every decoded frame (or demuxed packet) on, reconnect with
exponential back-off, keep the health the agent reports.

A heartbeat (`beat`, monotonic) moves on every frame, every slice of a back-off wait and every
connection attempt; the agent's supervisor treats a reader whose heartbeat stopped as stuck (a read
blocked inside a library) and restarts it in a new thread (`restart`): the stuck thread is
abandoned and exits at its next chance, because it no longer holds the current generation.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import av
import structlog

from edge_agent.capture.sources import FrameSource
from edge_agent.capture.sources.av_io import mask_url
from edge_agent.errors import NeedsHuman, RetryLater

log = structlog.get_logger(__name__)


def backoff_delay(attempt: int, min_s: float, max_s: float) -> float:
    """min_s * 2**attempt, capped at max_s."""
    return min(max_s, min_s * (2 ** min(attempt, 30)))


def source_frames(source: FrameSource, stop: threading.Event) -> Iterator[av.VideoFrame]:
    return source.frames(stop)


class StreamReader:
    """One stream: open it, hand every item (a decoded frame, or a packet when only demuxed) to
    `on_frame`; reconnect with exponential back-off; `on_close` after each connection ends."""

    def __init__(self, name: str, make_source: Callable[[], FrameSource], on_frame: Callable[[object], None],
                 *, reconnect_min_s: float, reconnect_max_s: float, healthy_after_s: float = 30.0,
                 stall_s: float = 2.0, wall: Callable[[], float] = time.time,
                 read: Callable[[FrameSource, threading.Event], Iterator[object]] = source_frames,
                 on_close: Callable[[], None] | None = None) -> None:
        self.name = name
        self.make_source = make_source
        self.on_frame = on_frame
        self.read = read
        self.on_close = on_close
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.healthy_after_s = healthy_after_s
        self.stall_s = stall_s
        self.wall = wall
        self.connected = False
        self.ever_online = False
        self.reconnects = 0
        self.frames = 0
        self.error = ""
        self.offline_since: float | None = wall()
        self.last_frame = 0.0  # monotonic
        self._stamps: deque[float] = deque(maxlen=64)
        self.next_delay_s = 0.0  # the back-off wait planned after the last failed attempt
        self._wake = threading.Event()
        self.wakes = 0  # back-off waits cut short by `wake()`
        self.beat = time.monotonic()  # heartbeat: moves while this reader makes progress
        self.generation = 0  # the thread running the current generation is the reader; older ones exit
        self.attempted = threading.Event()  # set once the first connection attempt is over (or streams)
        self.log = log.bind(stream=name)

    def wake(self) -> None:
        """Retry now: end the current back-off wait and restart the back-off from `reconnect_min_s`.

        Thread-safe (the GB/T 28181 bridge calls it from the SIP loop thread when the camera's device
        comes online). A wake that arrives while a connection attempt is running makes the wait after
        that attempt, if it fails, end at once; each new attempt clears it."""
        self._wake.set()

    def _wait(self, stop: threading.Event, delay: float, slice_s: float = 0.1) -> str:
        """Wait `delay` s: "stop" once `stop` is set (within `slice_s`), "wake" on `wake()`, else "timeout"."""
        deadline = time.monotonic() + delay
        while True:
            if stop.is_set():
                return "stop"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if self._wake.wait(min(slice_s, left)):
                return "stop" if stop.is_set() else "wake"
            self.beat = time.monotonic()

    def restart(self) -> int:
        """Make a new generation current: the thread of the old one exits when it next gets control
        (it may be blocked in a read). Run `run` again in a new thread. Returns the new generation."""
        self.generation += 1
        self.beat = time.monotonic()
        return self.generation

    def run(self, stop: threading.Event) -> None:
        generation = self.generation
        attempt = 0
        while not stop.is_set() and generation == self.generation:
            opened = self.beat = time.monotonic()
            first_frame: float | None = None
            self._wake.clear()  # a wake from before this attempt is answered by the attempt itself
            try:
                source = self.make_source()
                for frame in self.read(source, stop):
                    if generation != self.generation:
                        return  # abandoned as stuck: a newer thread owns the reader now
                    now = self.beat = time.monotonic()
                    if first_frame is None:
                        first_frame = now
                        self._online()
                        self.attempted.set()
                    self.last_frame = now
                    self._stamps.append(now)
                    self.frames += 1
                    self.on_frame(frame)
                if stop.is_set():
                    break
                raise RetryLater(f"{self.name}: stream ended")
            except NeedsHuman as err:
                self._offline(f"needs human: {err}")
                delay = self.reconnect_max_s
            except RetryLater as err:
                self._offline(str(err))
                if first_frame is not None and time.monotonic() - first_frame >= self.healthy_after_s:
                    attempt = 0
                delay = backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s)
                attempt += 1
            except Exception as err:  # noqa: BLE001 - a camera's garbage never kills its thread
                self.log.exception("stream_crashed")
                self._offline(f"{err.__class__.__name__}: {mask_url(str(err))[:200]}")
                delay = backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s)
                attempt += 1
            finally:
                self.attempted.set()
                if self.on_close is not None and generation == self.generation:
                    self.on_close()
            self.log.info("reconnect_wait", delay_s=round(delay, 2), attempt=attempt,
                          ran_s=round(time.monotonic() - opened, 1))
            self.next_delay_s = delay
            waited = self._wait(stop, delay)
            if waited == "stop" or generation != self.generation:
                break
            if waited == "wake":
                attempt = 0
                self.wakes += 1
                self.log.info("reconnect_woken", planned_s=round(delay, 2))
            self.reconnects += 1
        if generation == self.generation:
            self.connected = False

    def _online(self) -> None:
        self.connected = True
        self.ever_online = True
        self.offline_since = None
        self.log.info("stream_online", reconnects=self.reconnects)

    def _offline(self, error: str) -> None:
        if self.connected or self.offline_since is None:
            self.offline_since = self.wall()
        self.connected = False
        self.error = error[:500]
        self._stamps.clear()
        self.log.warning("stream_offline", error=self.error)

    def fps(self) -> float:
        st = list(self._stamps)
        if len(st) < 2 or time.monotonic() - st[-1] > self.stall_s:
            return 0.0
        return (len(st) - 1) / (st[-1] - st[0]) if st[-1] > st[0] else 0.0

    def state(self) -> str:
        if not self.connected:
            return "offline" if self.ever_online or self.error else "starting"
        if time.monotonic() - self.last_frame > self.stall_s:
            return "degraded"
        return "online"
