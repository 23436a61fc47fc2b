"""NanoDet (COCO) on a TFLite interpreter, behind the `Detector` interface (type "tflite", family_detector.py)."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from edge_agent.analysis.detector.base import Detector, DetectTiming
from edge_agent.analysis.detector.manifest import ModelManifest, load_manifest
from edge_agent.analysis.detector.postprocess import (
    InputMap,
    ResizeMode,
    boxes_to_frame,
    class_nms,
    content_size,
    decode_level,
    exact_map,
    plan_resize,
)
from edge_agent.analysis.detector.runtime import TfliteModel
from edge_agent.analysis.types import Box, Detection
from edge_agent.errors import ModelError

DEFAULT_SCORE_THRESHOLD = 0.35
DEFAULT_IOU_THRESHOLD = 0.5


class TfliteDetector(Detector):
    """NanoDet COCO detector; frames are scaled with area interpolation (libswscale) into the input.

    resize="letterbox" (default) keeps the aspect ratio and pads with black; "stretch" fills
    the whole input but distorts 16:9 frames, and NanoDet then misses most people (see
    docs/models.md). A frame that already fits the input at scale 1 (what the pipeline's
    `FrameScaler.fit` produces, e.g. 416x234 for 16:9) is copied in without scaling again.

    score_threshold=None uses the manifest's per-class thresholds (`score_thresholds`); a number
    applies to every class instead.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        manifest_path: str | Path | None = None,
        score_threshold: float | None = None,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        num_threads: int = 1,
        resize: ResizeMode = "letterbox",
        max_detections: int = 100,
        classes: Collection[str] | None = None,
    ) -> None:
        self.manifest = load_manifest(model_path, manifest_path)
        if self.manifest.input.layout != "NCHW" or self.manifest.input.color != "RGB":
            raise ModelError(f"{model_path}: only NCHW RGB NanoDet inputs are supported")
        if resize not in ("stretch", "letterbox"):
            raise ModelError(f"resize mode {resize!r} must be 'stretch' or 'letterbox'")
        self.model = TfliteModel(Path(model_path), self.manifest, num_threads)
        self.num_threads = num_threads
        self.iou_threshold = iou_threshold
        self.resize: ResizeMode = resize
        self.max_detections = max_detections
        self._labels = tuple(self.manifest.reported_labels)
        self.score_threshold = score_threshold
        unknown = set(classes or ()) - set(self._labels)
        if unknown:
            raise ModelError(f"{model_path}: model has no labels {sorted(unknown)}")
        self._class_mask = np.isin(np.asarray(self._labels), list(classes)) if classes is not None else None
        lut = self.model.input_lut()
        # int8 with scale 1/255 and zero point -128 is "pixel - 128": one xor, no table.
        self._xor_input = lut.dtype == np.int8 and np.array_equal(
            lut.view(np.uint8), (np.arange(256) ^ 0x80).astype(np.uint8)
        )
        self._lut = lut
        w, h = self.input_size
        self._tensor = np.empty((1, 3, h, w), lut.dtype)
        # pixels are written straight into the tensor's bytes when the xor trick applies
        self._planes = self._tensor[0].view(np.uint8) if self._xor_input else np.empty((3, h, w), np.uint8)
        self._placed: tuple[int, int, int, int] | None = None  # (x, y, w, h) of the content last written
        self._scaler = VideoReformatter()

    @property
    def score_threshold(self) -> float | None:
        """The one threshold for all classes, or None when the manifest's per-class ones apply."""
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float | None) -> None:
        self._score_threshold = value
        self.thresholds = class_thresholds(self.manifest, value)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input.width, self.manifest.input.height

    @property
    def backend(self) -> str:
        return self.model.backend

    def input_map(self, frame_w: int, frame_h: int) -> InputMap:
        """Where a frame_w x frame_h frame lands in the model input (scales exact for the rounded size)."""
        w, h = self.input_size
        return exact_map(plan_resize(frame_w, frame_h, w, h, self.resize))

    def _scaled(self, frame: np.ndarray, w: int, h: int) -> np.ndarray:
        """The frame scaled to w x h by libswscale with area averaging (keeps thin detail)."""
        src = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        return self._scaler.reformat(src, w, h, "rgb24", interpolation=Interpolation.AREA).to_ndarray()

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, InputMap]:
        """RGB uint8 HxWx3 frame -> filled input tensor and the map back to frame pixels."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
        m = self.input_map(frame.shape[1], frame.shape[0])
        cw, ch = content_size(m)
        if (cw, ch) != (frame.shape[1], frame.shape[0]):
            frame = self._scaled(frame, cw, ch)
        px, py = int(m.pad_x), int(m.pad_y)
        pad = 0x80 if self._xor_input else 0  # black: "0 - 128" after the xor, or lut[0]
        if self._placed != (px, py, cw, ch):
            self._planes.fill(pad)
            self._placed = (px, py, cw, ch)
        content = self._planes[:, py : py + ch, px : px + cw]
        np.copyto(content, frame.transpose(2, 0, 1))  # HWC -> CHW
        if self._xor_input:
            np.bitwise_xor(content, 0x80, out=content)  # in place: pixel - 128
        else:
            np.take(self._lut, self._planes, out=self._tensor[0])
        return self._tensor, m

    def postprocess(self, raw: list[np.ndarray], m: InputMap) -> list[Detection]:
        """Raw per-level outputs -> thresholded, NMS-ed detections in frame pixels."""
        spec = self.manifest
        w = spec.input.width
        by_stride = {(o.kind, o.stride): (r, o.quant) for o, r in zip(self.model.outputs, raw, strict=True)}
        parts = []
        for stride in spec.decode.strides:
            scores, squant = by_stride[("scores", stride)]
            dists, dquant = by_stride[("box_distribution", stride)]
            parts.append(
                decode_level(
                    scores,
                    dists,
                    stride=stride,
                    grid_w=w // stride,
                    bins=spec.decode.bins,
                    score_threshold=self.thresholds,
                    score_quant=squant,
                    dist_quant=dquant,
                    center_offset=spec.decode.center_offset,
                    class_mask=self._class_mask,
                )
            )
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        classes = np.concatenate([p[2] for p in parts])
        keep = class_nms(boxes, scores, classes, self.iou_threshold, self.max_detections)
        if keep.size == 0:
            return []
        mapped = boxes_to_frame(boxes[keep], m)
        return [
            Detection(self._labels[int(c)], float(s), Box(*(float(v) for v in b)))
            for b, s, c in zip(mapped, scores[keep], classes[keep], strict=True)
            if b[2] > b[0] and b[3] > b[1]
        ]

    def detect(self, frame: np.ndarray) -> list[Detection]:
        t0 = time.perf_counter()
        tensor, m = self.preprocess(frame)
        t1 = time.perf_counter()
        raw = self.model.invoke(tensor)
        t2 = time.perf_counter()
        found = self.postprocess(raw, m)
        t3 = time.perf_counter()
        self.last_timing = DetectTiming((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return found


def class_thresholds(manifest: ModelManifest, override: float | None = None) -> np.ndarray:
    """(C,) score threshold per label: `override` for all, else the manifest's per-class table."""
    n = len(manifest.labels)
    if override is not None:
        return np.full(n, override, np.float64)
    table = manifest.score_thresholds
    if table is None:
        return np.full(n, DEFAULT_SCORE_THRESHOLD, np.float64)
    return np.array([table.per_class.get(label, table.default) for label in manifest.labels], np.float64)
