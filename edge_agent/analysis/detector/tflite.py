"""NanoDet (COCO) on a TFLite interpreter, behind the `Detector` interface (type "tflite", family_detector.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.analysis.detector.frame_input import AreaScaler
from edge_agent.analysis.detector.manifest import ModelManifest
from edge_agent.analysis.detector.manifest_detector import ManifestDetector
from edge_agent.analysis.detector.postprocess import InputMap, ResizeMode, decode_level, exact_map, plan_resize
from edge_agent.analysis.detector.runtime import TfliteModel
from edge_agent.analysis.types import Detection
from edge_agent.errors import ModelError


class TfliteDetector(ManifestDetector):
    """NanoDet COCO detector; frames are scaled with area interpolation (libswscale) into the input.

    resize="letterbox" (default) keeps the aspect ratio and pads with black; "stretch" fills
    the whole input but distorts 16:9 frames, and NanoDet then misses most people (see
    docs/models.md). A frame that already fits the input at scale 1 (what the pipeline's
    `FrameScaler.fit` produces, e.g. 416x234 for 16:9) is copied in without scaling again.

    Thresholds and the class filter as `ManifestDetector`.
    """

    def check_manifest(self, model_path: str | Path, manifest: ModelManifest) -> None:
        if manifest.input.layout != "NCHW" or manifest.input.color != "RGB":
            raise ModelError(f"{model_path}: only NCHW RGB NanoDet inputs are supported")

    def open_model(self, model_path: Path, num_threads: int, resize: ResizeMode) -> None:
        self.model = TfliteModel(model_path, self.manifest, num_threads)
        self.resize: ResizeMode = resize
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
        self._scaler = AreaScaler()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input.width, self.manifest.input.height

    def input_map(self, frame_w: int, frame_h: int) -> InputMap:
        """Where a frame_w x frame_h frame lands in the model input (scales exact for the rounded size)."""
        w, h = self.input_size
        return exact_map(plan_resize(frame_w, frame_h, w, h, self.resize))

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, InputMap]:
        """RGB uint8 HxWx3 frame -> filled input tensor and the map back to frame pixels."""
        frame, m = self._scaler.fit(frame, self.input_map)
        ch, cw = frame.shape[:2]
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
        return self.detections(boxes, scores, classes, m)
