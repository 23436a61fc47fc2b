"""Pick the frames sampled for detection (by pts) and scale/convert only those, with libswscale."""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter


class Sampler:
    """`due(t)` is True for frames at least 1/fps after the last sampled one (t = pts seconds).

    A timestamp going backwards (stream restarted, file looped) starts a new timeline.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.last: float | None = None

    def due(self, t: float) -> bool:
        # a little slack so 25 fps sampled at 5 fps takes every 5th frame, not every 6th
        if self.last is None or t < self.last or t - self.last >= self.period * 0.98:
            self.last = t
            return True
        return False


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) with w = min(target, width), the aspect kept, both even."""
    w = min(target_width, width)
    h = max(2, round(height * w / width))
    return w - (w % 2), h - (h % 2)


class FrameScaler:
    """Reused swscale contexts: RGB for the detector, grayscale for the motion gate."""

    def __init__(self, detect_width: int, motion_width: int) -> None:
        self.detect_width = detect_width
        self.motion_width = motion_width
        self._rgb = VideoReformatter()
        self._gray = VideoReformatter()

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        w, h = scaled_size(frame.width, frame.height, self.detect_width)
        return self._rgb.reformat(frame, w, h, "rgb24").to_ndarray()

    def gray(self, frame: av.VideoFrame) -> np.ndarray:
        w, h = scaled_size(frame.width, frame.height, self.motion_width)
        return self._gray.reformat(frame, w, h, "gray").to_ndarray()
