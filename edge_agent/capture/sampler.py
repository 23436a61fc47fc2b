"""Pick the frames sampled for detection (by pts) and scale/convert only those, with libswscale."""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter


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


def fit_size(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """(w, h) of a width x height frame scaled to fit inside box_w x box_h, the aspect kept.

    Rounded like the detector's letterbox plan, so a frame of this size goes into the model
    input at scale 1 (no second resize).
    """
    scale = min(box_w / width, box_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class FrameScaler:
    """Reused swscale contexts: RGB for the detector, grayscale for the motion gate.

    With `detect_fit` (the model input's w, h) a sampled frame is scaled once, with area
    averaging, straight to the size it takes inside the letterboxed model input (416x234 for a
    16:9 frame into 416x416); otherwise to `detect_width` (bilinear) and the detector scales again.
    """

    def __init__(self, detect_width: int | None, motion_width: int,
                 detect_fit: tuple[int, int] | None = None) -> None:
        if detect_width is None and detect_fit is None:
            raise ValueError("FrameScaler needs detect_width or detect_fit")
        self.detect_width = detect_width
        self.detect_fit = detect_fit
        self.motion_width = motion_width
        self._rgb = VideoReformatter()
        self._gray = VideoReformatter()

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if self.detect_width is None and self.detect_fit is not None:
            w, h = fit_size(frame.width, frame.height, *self.detect_fit)
            return self._rgb.reformat(frame, w, h, "rgb24", interpolation=Interpolation.AREA).to_ndarray()
        assert self.detect_width is not None
        w, h = scaled_size(frame.width, frame.height, self.detect_width)
        return self._rgb.reformat(frame, w, h, "rgb24").to_ndarray()

    def gray(self, frame: av.VideoFrame) -> np.ndarray:
        w, h = scaled_size(frame.width, frame.height, self.motion_width)
        return self._gray.reformat(frame, w, h, "gray").to_ndarray()
