"""Camera worker: a thread per stream, reconnect with back-off, health, sampling + motion gate.

The detection stream (sub-stream when configured) is decoded and sampled at `sample_fps` by pts;
sampled frames pass the motion gate (small grayscale frame) and only those with motion, or due for
the periodic full check, are converted to RGB for the detector.

The main stream's encoded packets are kept in a ring (`CameraMedia`) for snapshots and clips. With
a sub-stream the main stream is only demuxed, never decoded: a snapshot decodes its one GOP on
demand. Sources that only give decoded frames (GB/T 28181) keep the old way: the main stream is
decoded and its latest frame kept; no clips.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np
import structlog

from bk_contract import CameraHealth
from edge_agent.analysis.motion import MotionDetector
from edge_agent.capture.clips import CLIP_POST_S, CLIP_PRE_S, CameraMedia
from edge_agent.capture.packet_ring import MediaClock, PacketFeed, packet_feed, packet_seconds
from edge_agent.capture.sampler import FrameScaler, Sampler
from edge_agent.capture.sources import FrameSource, open_source
from edge_agent.capture.sources.av_io import decode_packets, mask_url
from edge_agent.config import CameraConfig, DetectorConfig, MotionConfig
from edge_agent.errors import NeedsHuman, RetryLater

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class SampledFrame:
    camera_id: str
    t: float  # wall clock (epoch s) when sampled: the time rules see
    rgb: np.ndarray | None  # None: no motion, the detector is skipped and tracks are kept
    frame: object  # snapshot handle: a clips.Moment (main-stream picture + clip) or an av.VideoFrame
    motion: float = 0.0


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

    def run(self, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            opened = time.monotonic()
            first_frame: float | None = None
            self._wake.clear()  # a wake from before this attempt is answered by the attempt itself
            try:
                source = self.make_source()
                for frame in self.read(source, stop):
                    now = time.monotonic()
                    if first_frame is None:
                        first_frame = now
                        self._online()
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
                if self.on_close is not None:
                    self.on_close()
            self.log.info("reconnect_wait", delay_s=round(delay, 2), attempt=attempt,
                          ran_s=round(time.monotonic() - opened, 1))
            self.next_delay_s = delay
            waited = self._wait(stop, delay)
            if waited == "stop":
                break
            if waited == "wake":
                attempt = 0
                self.wakes += 1
                self.log.info("reconnect_woken", planned_s=round(delay, 2))
            self.reconnects += 1
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


class CameraWorker:
    """Stream thread(s) of one camera; sampled frames go to `submit` (the inference worker).

    `clip_pre_s` / `clip_post_s`: the clip cut around an event start (the ring keeps `clip_pre_s`
    plus up to one GOP of the main stream).
    """

    def __init__(self, cam: CameraConfig, detector_cfg: DetectorConfig, motion_cfg: MotionConfig, *,
                 submit: Callable[[SampledFrame], None],
                 source_factory: Callable[[CameraConfig, bool], FrameSource] | None = None,
                 wall: Callable[[], float] = time.time, healthy_after_s: float = 30.0,
                 clip_pre_s: float = CLIP_PRE_S, clip_post_s: float = CLIP_POST_S) -> None:
        self.cam = cam
        self.submit = submit
        self.wall = wall
        self.motion_cfg = motion_cfg
        self.factory = source_factory or (lambda c, sub: open_source(c, sub=sub))
        self.use_sub = bool(cam.source.sub_url)
        self.sampler = Sampler(detector_cfg.sample_fps)
        self.scaler = FrameScaler(detector_cfg.input_width, motion_cfg.width)
        self.motion = MotionDetector(threshold=motion_cfg.threshold, min_area=motion_cfg.min_area,
                                     alpha=motion_cfg.alpha, masks=motion_cfg.masks)
        self.last_full_check = float("-inf")
        self.latest_main: av.VideoFrame | None = None  # only for sources without packet access
        self.media = CameraMedia(cam.id, pre_s=clip_pre_s, post_s=clip_post_s)
        self.det_clock = MediaClock()
        self.main_clock = MediaClock()
        self.main_demuxed = False  # True while the main stream's packets feed the ring
        self.sampled = 0
        self.detect_frames = 0
        common = dict(reconnect_min_s=cam.reconnect_min_s, reconnect_max_s=cam.reconnect_max_s,
                      healthy_after_s=healthy_after_s, wall=wall)
        self.reader = StreamReader(f"{cam.id}/{'sub' if self.use_sub else 'main'}",
                                   lambda: self.factory(cam, self.use_sub), self._on_detect_frame,
                                   read=self._read_detect, on_close=None if self.use_sub else self.media.ring.reset,
                                   **common)
        self.main_reader = (StreamReader(f"{cam.id}/main", lambda: self.factory(cam, False), self._on_main_item,
                                         read=self._read_main, on_close=self.media.ring.reset, **common)
                            if self.use_sub else None)
        self.threads: list[threading.Thread] = []

    def start(self, stop: threading.Event) -> None:
        readers = [self.reader] + ([self.main_reader] if self.main_reader else [])
        for r in readers:
            t = threading.Thread(target=r.run, args=(stop,), name=f"decode-{r.name}", daemon=True)
            t.start()
            self.threads.append(t)
        self.media.start(stop)

    def wake(self) -> None:
        """Retry this camera's stream(s) now, back-off restarted (see `StreamReader.wake`)."""
        self.reader.wake()
        if self.main_reader is not None:
            self.main_reader.wake()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        media_done = self.media.join(max(0.0, deadline - time.monotonic()))
        return media_done and not any(t.is_alive() for t in self.threads)

    # --- reading -------------------------------------------------------------------------
    def _read_detect(self, source: FrameSource, stop: threading.Event) -> Iterator[av.VideoFrame]:
        """Decoded frames of the detection stream; its packets also feed the ring when it is the main stream."""
        feed = packet_feed(source, decode=True)
        if feed is None:
            return source.frames(stop)
        return decode_packets(self._clocked(feed, stop, self.det_clock, keep=not self.use_sub), what=source.name)

    def _read_main(self, source: FrameSource, stop: threading.Event) -> Iterator[object]:
        """The main stream of a sub-stream camera: packets only, or decoded frames if nothing else is offered."""
        feed = packet_feed(source, decode=False)
        self.main_demuxed = feed is not None
        if feed is None:
            return source.frames(stop)
        return self._clocked(feed, stop, self.main_clock, keep=True)

    def _clocked(self, feed: PacketFeed, stop: threading.Event, clock: MediaClock, *,
                 keep: bool) -> Iterator[av.Packet]:
        for packet in feed(stop):
            media_t = packet_seconds(packet)
            t = clock.observe(media_t, time.monotonic()) if media_t is not None else time.monotonic()
            if keep:
                self.media.ring.push(packet, t)
            yield packet

    def _on_main_item(self, item: object) -> None:
        if isinstance(item, av.VideoFrame):
            self.latest_main = item

    def _snapshot_handle(self, frame: av.VideoFrame) -> object:
        """What the rules keep for a snapshot of this sampled frame."""
        t = self.det_clock.to_mono(frame.time) if frame.time is not None else None
        if t is None:
            t = time.monotonic()
        if not self.use_sub:
            if self.media.ring.template is None:
                return frame  # a frames-only source: no ring, no clip
            return self.media.moment(t, frame=frame)
        if self.main_demuxed:
            return self.media.moment(t, fallback=frame)
        return self.latest_main if self.latest_main is not None else frame

    def _on_detect_frame(self, frame: av.VideoFrame) -> None:
        t_media = frame.time if frame.time is not None else time.monotonic()
        if not self.sampler.due(t_media):
            return
        self.sampled += 1
        now_mono = time.monotonic()
        fraction, moving = 0.0, True
        if self.motion_cfg.enabled:
            result = self.motion.update(self.scaler.gray(frame))
            fraction, moving = result.fraction, result.motion
        full_check = now_mono - self.last_full_check >= self.motion_cfg.full_check_s
        rgb = None
        if moving or full_check:
            if full_check:
                self.last_full_check = now_mono
            rgb = self.scaler.rgb(frame)
            self.detect_frames += 1
        self.submit(SampledFrame(self.cam.id, self.wall(), rgb, self._snapshot_handle(frame), fraction))

    def online(self) -> tuple[bool, float | None]:
        """(detection stream delivering frames, wall time it went offline or None)."""
        return self.reader.connected, self.reader.offline_since

    def health(self) -> CameraHealth:
        r = self.reader
        state = r.state()
        error = r.error if state != "online" else ""
        if self.main_reader is not None and not self.main_reader.connected and state == "online":
            state, error = "degraded", f"main stream: {self.main_reader.error}"
        return CameraHealth(id=self.cam.id, name=self.cam.name[:128], state=state, fps=round(r.fps(), 2),
                            reconnects=r.reconnects + (self.main_reader.reconnects if self.main_reader else 0),
                            error=error[:500])
