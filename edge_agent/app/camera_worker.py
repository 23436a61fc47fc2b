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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np
import structlog

from bk_contract import CameraHealth
from edge_agent.analysis.motion import MotionDetector
from edge_agent.capture.clips import CLIP_POST_S, CLIP_PRE_S, CameraMedia
from edge_agent.capture.packet_ring import MediaClock, PacketFeed, packet_feed, packet_seconds
from edge_agent.capture.recording import SegmentRecorder
from edge_agent.capture.sampler import FrameScaler, Sampler
from edge_agent.capture.sources import FrameSource, open_source
from edge_agent.capture.sources.av_io import decode_packets
from edge_agent.capture.stream_reader import StreamReader
from edge_agent.config import CameraConfig, DetectorConfig, MotionConfig

log = structlog.get_logger(__name__)

DEFAULT_DETECT_WIDTH = 640  # a detector that does not tell its input size gets frames this wide


@dataclass(slots=True)
class SampledFrame:
    camera_id: str
    t: float  # wall clock (epoch s) when sampled: the time rules see
    rgb: np.ndarray | None  # None: no motion, the detector is skipped and tracks are kept
    frame: object  # snapshot handle: a clips.Moment (main-stream picture + clip) or an av.VideoFrame
    motion: float = 0.0


class CameraWorker:
    """Stream thread(s) of one camera; sampled frames go to `submit` (the inference worker).

    `clip_pre_s` / `clip_post_s`: the clip cut around an event start (the ring keeps `clip_pre_s`
    plus up to one GOP of the main stream).
    """

    def __init__(self, cam: CameraConfig, detector_cfg: DetectorConfig, motion_cfg: MotionConfig, *,
                 submit: Callable[[SampledFrame], None],
                 source_factory: Callable[[CameraConfig, bool], FrameSource] | None = None,
                 wall: Callable[[], float] = time.time, healthy_after_s: float = 30.0,
                 clip_pre_s: float = CLIP_PRE_S, clip_post_s: float = CLIP_POST_S,
                 detect_fit: tuple[int, int] | None = None) -> None:
        self.cam = cam
        self.submit = submit
        self.wall = wall
        self.motion_cfg = motion_cfg
        self.factory = source_factory or (lambda c, sub: open_source(c, sub=sub))
        self.use_sub = bool(cam.source.sub_url)
        self.sampler = Sampler(detector_cfg.sample_fps)
        # detect_fit (the model input's w, h): one area scaling straight to the letterboxed size
        width = detector_cfg.input_width or (None if detect_fit else DEFAULT_DETECT_WIDTH)
        self.scaler = FrameScaler(width, motion_cfg.width, detect_fit=detect_fit)
        self.motion = MotionDetector(threshold=motion_cfg.threshold, min_area=motion_cfg.min_area,
                                     alpha=motion_cfg.alpha, masks=motion_cfg.masks)
        self.last_full_check = float("-inf")
        self.latest_main: av.VideoFrame | None = None  # only for sources without packet access
        self.latest_detect: av.VideoFrame | None = None  # the last frame decoded for detection
        self.live_offer: Callable[[str, av.VideoFrame, float], None] | None = None  # LiveManager.offer
        self.recorder: SegmentRecorder | None = None  # 回放 on disk (set by the Agent when recording is on)
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
        self.threads: dict[str, threading.Thread] = {}  # reader name -> the thread of its current generation

    @property
    def readers(self) -> list[StreamReader]:
        return [self.reader] + ([self.main_reader] if self.main_reader else [])

    def start(self, stop: threading.Event) -> None:
        for r in self.readers:
            self._run_reader(r, stop)
        self.media.start(stop)

    def restart(self, reader: StreamReader, stop: threading.Event) -> None:
        """Abandon `reader`'s stuck thread and run the reader in a new one (the supervisor's call)."""
        reader.restart()
        self._run_reader(reader, stop)

    def _run_reader(self, reader: StreamReader, stop: threading.Event) -> None:
        t = threading.Thread(target=reader.run, args=(stop,), name=f"decode-{reader.name}-{reader.generation}",
                             daemon=True)
        t.start()
        self.threads[reader.name] = t

    def wake(self) -> None:
        """Retry this camera's stream(s) now, back-off restarted (see `StreamReader.wake`)."""
        self.reader.wake()
        if self.main_reader is not None:
            self.main_reader.wake()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self.threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        media_done = self.media.join(max(0.0, deadline - time.monotonic()))
        if self.recorder is not None:
            self.recorder.close()
        return media_done and not any(t.is_alive() for t in self.threads.values())

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
                if self.recorder is not None and self.media.ring.template is not None:
                    self.recorder.push(packet, self.media.ring.template, time.time() - (time.monotonic() - t))
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
        self.latest_detect = frame  # what `snapshot_now` shows (edge_agent/app/command_handlers.py)
        t_media = frame.time if frame.time is not None else time.monotonic()
        if self.live_offer is not None:
            self.live_offer(self.cam.id, frame, t_media)
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
