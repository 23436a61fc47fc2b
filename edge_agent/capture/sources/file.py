"""A video file as a camera: optionally looping, optionally paced at real time by pts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av

from edge_agent.capture.sources.av_io import decode_video, open_input
from edge_agent.errors import RetryLater


@dataclass
class FileSource:
    """Frames of `path`; with `loop` pts keep increasing across loops; `realtime` sleeps to the pts."""

    path: str
    loop: bool = True
    realtime: bool = True
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.path

    def frames(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        offset = 0.0  # seconds added to pts so time keeps growing across loops
        t0_wall: float | None = None
        while not stop.is_set():
            container = open_input(self.path, options={}, open_timeout_s=self.open_timeout_s,
                                   read_timeout_s=self.read_timeout_s, what=self.name)
            last = None
            count = 0
            try:
                tb = container.streams.video[0].time_base
                rate = container.streams.video[0].average_rate or 25
                for frame in decode_video(container, stop, what=self.name):
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * tb) + offset
                    frame.pts = int(round(t / tb))
                    if self.realtime:
                        if t0_wall is None:
                            t0_wall = time.monotonic() - t
                        delay = t0_wall + t - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    last = t
                    count += 1
                    yield frame
            finally:
                container.close()
            if not self.loop or stop.is_set():
                return
            if count == 0:
                raise RetryLater(f"{self.name}: no decodable frame in the file")
            offset = (last or 0.0) + 1.0 / float(rate)
