"""A deployment's own model: YOLO (v5, v8/11) or SSD outputs, on TFLite or ONNX Runtime, as its manifest says.

The detector types registered here choose the plugin from the manifest:
- "auto": the runtime the manifest names (`runtime`, from the file suffix by default);
- "tflite": the TFLite runtime (NanoDet goes to the tuned `TfliteDetector`, other families here);
- "onnx": ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.analysis.detector.base import Detector, register_detector
from edge_agent.analysis.detector.frame_input import FrameInput
from edge_agent.analysis.detector.manifest import ModelManifest, load_manifest
from edge_agent.analysis.detector.manifest_detector import ManifestDetector
from edge_agent.analysis.detector.postprocess import InputMap, ResizeMode
from edge_agent.analysis.detector.ssd import decode_ssd
from edge_agent.analysis.detector.tflite import TfliteDetector
from edge_agent.analysis.detector.yolo import decode_yolov5, decode_yolov8
from edge_agent.analysis.types import Detection
from edge_agent.errors import ModelError


def _runtime(model_path: Path, manifest: ModelManifest, num_threads: int) -> Any:
    if manifest.runtime == "onnx":
        from edge_agent.analysis.detector.onnx_runtime import OnnxModel

        return OnnxModel(model_path, manifest, num_threads)
    from edge_agent.analysis.detector.runtime import TfliteModel

    return TfliteModel(model_path, manifest, num_threads)


class FamilyDetector(ManifestDetector):
    """YOLO or SSD model on the runtime its manifest names; boxes in the pixels of the frame given.

    Thresholds and the class filter as `ManifestDetector`; frames go in through `FrameInput`.
    """

    def check_manifest(self, model_path: str | Path, manifest: ModelManifest) -> None:
        if manifest.family == "nanodet":
            raise ModelError(f"{model_path}: nanodet models run on the tflite detector (TfliteDetector)")

    def open_model(self, model_path: Path, num_threads: int, resize: ResizeMode) -> None:
        self.model = _runtime(model_path, self.manifest, num_threads)
        self.input = FrameInput(self.manifest.input, self.model.input_dtype, self.model.input_quant, resize)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input.input_size

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
        return self.detections(*self.decode(raw), m)


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
