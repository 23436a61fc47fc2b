"""Fill any model's input tensor from an RGB uint8 frame, as its manifest says.

The frame is scaled once with area averaging (libswscale) to its size inside the letterboxed (or
stretched) input, placed on black, and each channel goes through a 256-entry table that applies
the manifest's `(pixel - mean) / std` and the tensor's quantization. Layout NCHW or NHWC, colour
RGB or BGR. Only the content region is rewritten per frame; the bars are filled when the
placement changes.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from edge_agent.analysis.detector.manifest import InputSpec
from edge_agent.analysis.detector.postprocess import (
    InputMap,
    Quant,
    ResizeMode,
    content_size,
    exact_map,
    plan_resize,
)
from edge_agent.errors import ModelError


def channel_luts(spec: InputSpec, dtype: np.dtype, quant: Quant) -> np.ndarray:
    """(3, 256) table per input channel: pixel value -> tensor value (normalised, maybe quantized)."""
    pixel = np.arange(256, dtype=np.float64)
    real = (pixel[None, :] - np.asarray(spec.mean)[:, None]) / np.asarray(spec.std)[:, None]
    if np.dtype(dtype).kind == "f":
        return real.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(real / quant.scale + quant.zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


class AreaScaler:
    """Puts RGB frames at their size inside a model input, scaling with area averaging (keeps thin detail).

    A frame that already fits at scale 1 (what the pipeline's `FrameScaler.fit` produces) is used as is.
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def fit(self, frame: np.ndarray, input_map: Callable[[int, int], InputMap]) -> tuple[np.ndarray, InputMap]:
        """RGB uint8 HxWx3 frame -> (the frame at its content size, where `input_map(w, h)` places it)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
        m = input_map(frame.shape[1], frame.shape[0])
        cw, ch = content_size(m)
        if (cw, ch) != (frame.shape[1], frame.shape[0]):
            src = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            frame = self._reformatter.reformat(src, cw, ch, "rgb24", interpolation=Interpolation.AREA).to_ndarray()
        return frame, m


class FrameInput:
    """The input tensor of one model and how frames are put into it. Not thread-safe (reuses buffers)."""

    def __init__(self, spec: InputSpec, dtype: np.dtype, quant: Quant, resize: ResizeMode = "letterbox") -> None:
        if resize not in ("stretch", "letterbox"):
            raise ModelError(f"resize mode {resize!r} must be 'stretch' or 'letterbox'")
        self.spec = spec
        self.resize: ResizeMode = resize
        self.luts = channel_luts(spec, np.dtype(dtype), quant)
        w, h = spec.width, spec.height
        shape = (1, 3, h, w) if spec.layout == "NCHW" else (1, h, w, 3)
        self.tensor = np.empty(shape, self.luts.dtype)
        # tensor channel c takes frame channel src[c]: RGB frames, BGR models swap
        self._src = (2, 1, 0) if spec.color == "BGR" else (0, 1, 2)
        self._placed: tuple[int, int, int, int] | None = None
        self._scaler = AreaScaler()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.width, self.spec.height

    def input_map(self, frame_w: int, frame_h: int) -> InputMap:
        """Where a frame_w x frame_h frame lands in the input (scales exact for the rounded size)."""
        return exact_map(plan_resize(frame_w, frame_h, self.spec.width, self.spec.height, self.resize))

    def _plane(self, c: int) -> np.ndarray:
        return self.tensor[0, c] if self.spec.layout == "NCHW" else self.tensor[0, :, :, c]

    def fill(self, frame: np.ndarray) -> tuple[np.ndarray, InputMap]:
        """RGB uint8 HxWx3 frame -> the filled input tensor and the map back to frame pixels."""
        frame, m = self._scaler.fit(frame, self.input_map)
        ch, cw = frame.shape[:2]
        px, py = int(m.pad_x), int(m.pad_y)
        if self._placed != (px, py, cw, ch):
            for c in range(3):
                self._plane(c).fill(self.luts[c, 0])  # black bars
            self._placed = (px, py, cw, ch)
        for c, src in enumerate(self._src):
            np.take(self.luts[c], frame[:, :, src], out=self._plane(c)[py : py + ch, px : px + cw])
        return self.tensor, m
