"""A deployment's own model: YOLO (v5, v8/11) or SSD outputs, on TFLite or ONNX Runtime, as its manifest says.

The detector types registered here choose the plugin from the manifest:
- "auto": the runtime the manifest names (`runtime`, from the file suffix by default);
- "tflite": the TFLite runtime (NanoDet goes to the tuned `TfliteDetector`, other families here);
- "onnx": ONNX Runtime.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.analysis.detector.base import Detector, DetectTiming, register_detector
from edge_agent.analysis.detector.frame_input import FrameInput
from edge_agent.analysis.detector.manifest import ModelManifest, load_manifest
from edge_agent.analysis.detector.postprocess import InputMap, ResizeMode, boxes_to_frame, class_nms
from edge_agent.analysis.detector.ssd import decode_ssd
from edge_agent.analysis.detector.tflite import DEFAULT_IOU_THRESHOLD, TfliteDetector, class_thresholds
from edge_agent.analysis.detector.yolo import decode_yolov5, decode_yolov8
from edge_agent.analysis.types import Box, Detection
from edge_agent.errors import ModelError


def _runtime(model_path: Path, manifest: ModelManifest, num_threads: int) -> Any:
    if manifest.runtime == "onnx":
        from edge_agent.analysis.detector.onnx_runtime import OnnxModel

        return OnnxModel(model_path, manifest, num_threads)
    from edge_agent.analysis.detector.runtime import TfliteModel

    return TfliteModel(model_path, manifest, num_threads)


class FamilyDetector(Detector):
    """YOLO or SSD model on the runtime its manifest names; boxes in the pixels of the frame given.

    Options as `TfliteDetector`: score_threshold None uses the manifest's per-class thresholds,
    `classes` keeps only those labels (labels after the manifest's `rule_labels`).
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
        if self.manifest.family == "nanodet":
            raise ModelError(f"{model_path}: nanodet models run on the tflite detector (TfliteDetector)")
        self.model = _runtime(Path(model_path), self.manifest, num_threads)
        self.input = FrameInput(self.manifest.input, self.model.input_dtype, self.model.input_quant, resize)
        self.num_threads = num_threads
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self._labels = tuple(self.manifest.reported_labels)
        unknown = set(classes or ()) - set(self._labels)
        if unknown:
            raise ModelError(f"{model_path}: model has no labels {sorted(unknown)}")
        self._class_mask = np.isin(np.asarray(self._labels), list(classes)) if classes is not None else None
        self.score_threshold = score_threshold

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
        return self.input.input_size

    @property
    def backend(self) -> str:
        return self.model.backend

    @property
    def resize(self) -> ResizeMode:
        return self.input.resize

    def input_map(self, frame_w: int, frame_h: int) -> InputMap:
        return self.input.input_map(frame_w, frame_h)

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, InputMap]:
        """RGB uint8 HxWx3 frame -> filled input tensor and the map back to frame pixels."""
        return self.input.fill(frame)

    def decode(self, raw: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs (manifest order, batch dropped) -> boxes in input pixels, scores, class ids."""
        spec = self.manifest
        w, h = self.input_size
        if spec.family in ("yolov5", "yolov8"):
            decoder = decode_yolov5 if spec.family == "yolov5" else decode_yolov8
            scale = (float(w), float(h)) if spec.decode.box_units == "normalised" else (1.0, 1.0)
            return decoder(raw[0], score_threshold=self.thresholds, box_scale=scale,
                           quant=self.model.outputs[0].quant, class_mask=self._class_mask)
        out = {o.kind: o.quant.dequantize(r) for o, r in zip(self.model.outputs, raw, strict=True)}
        return decode_ssd(out["boxes"], out["classes"], out["scores"], out["count"], input_size=(w, h),
                          num_classes=len(self._labels), score_threshold=self.thresholds,
                          class_offset=spec.decode.class_offset, class_mask=self._class_mask)

    def postprocess(self, raw: list[np.ndarray], m: InputMap) -> list[Detection]:
        """Raw outputs -> thresholded, NMS-ed detections in frame pixels."""
        boxes, scores, classes = self.decode(raw)
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


def open_detector(model_path: str | Path, *, runtime: str | None = None, **opts: Any) -> Detector:
    """The plugin the manifest of `model_path` calls for; `runtime` ("tflite"/"onnx") must then match it."""
    manifest = load_manifest(model_path, opts.get("manifest_path"))
    if runtime is not None and manifest.runtime != runtime:
        raise ModelError(f"{model_path}: the manifest says runtime {manifest.runtime!r}, not {runtime!r}; "
                         f"set detector.type to {manifest.runtime!r} or 'auto'")
    if manifest.family == "nanodet":
        if manifest.runtime != "tflite":
            raise ModelError(f"{model_path}: nanodet models are supported on TFLite only")
        return TfliteDetector(model_path, **opts)
    return FamilyDetector(model_path, **opts)


register_detector("auto")(open_detector)


@register_detector("tflite")
def open_tflite(model_path: str | Path, **opts: Any) -> Detector:
    """A detector on the TFLite runtime (NanoDet: `TfliteDetector`; YOLO, SSD: `FamilyDetector`)."""
    return open_detector(model_path, runtime="tflite", **opts)


@register_detector("onnx")
def open_onnx(model_path: str | Path, **opts: Any) -> Detector:
    """A detector on ONNX Runtime."""
    return open_detector(model_path, runtime="onnx", **opts)
