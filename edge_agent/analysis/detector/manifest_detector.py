"""What every manifest-driven detector shares: labels, per-class thresholds, class filter, NMS and timing.

`TfliteDetector` (NanoDet) and `FamilyDetector` (YOLO, SSD) differ only in how they fill the input
tensor and decode the raw outputs; they subclass `ManifestDetector` for the rest.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.analysis.detector.base import Detector, DetectTiming
from edge_agent.analysis.detector.manifest import ModelManifest, load_manifest
from edge_agent.analysis.detector.postprocess import InputMap, ResizeMode, boxes_to_frame, class_nms
from edge_agent.analysis.types import Box, Detection
from edge_agent.errors import ModelError

DEFAULT_SCORE_THRESHOLD = 0.35
DEFAULT_IOU_THRESHOLD = 0.5


def class_thresholds(manifest: ModelManifest, override: float | None = None) -> np.ndarray:
    """(C,) score threshold per label: `override` for all, else the manifest's per-class table."""
    n = len(manifest.labels)
    if override is not None:
        return np.full(n, override, np.float64)
    table = manifest.score_thresholds
    if table is None:
        return np.full(n, DEFAULT_SCORE_THRESHOLD, np.float64)
    return np.array([table.per_class.get(label, table.default) for label in manifest.labels], np.float64)


class ManifestDetector(Detector):
    """A model described by its manifest, on a runtime model with `invoke`, `outputs` and `backend`.

    The options are every manifest plugin's: score_threshold None uses the manifest's per-class
    thresholds (`score_thresholds`), a number applies to every class; `classes` keeps only those labels
    (labels after the manifest's `rule_labels`); resize "letterbox" keeps the aspect ratio, "stretch"
    fills the input. Subclasses say which manifests they run (`check_manifest`), open the model
    (`open_model`, which sets `self.model`) and implement `preprocess` and `postprocess`.
    """

    model: Any

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
        self.manifest = manifest = load_manifest(model_path, manifest_path)
        self.check_manifest(model_path, manifest)
        if resize not in ("stretch", "letterbox"):
            raise ModelError(f"resize mode {resize!r} must be 'stretch' or 'letterbox'")
        self.num_threads = num_threads
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self._labels = tuple(manifest.reported_labels)
        unknown = set(classes or ()) - set(self._labels)
        if unknown:
            raise ModelError(f"{model_path}: model has no labels {sorted(unknown)}")
        self._class_mask = np.isin(np.asarray(self._labels), list(classes)) if classes is not None else None
        self.score_threshold = score_threshold
        self.open_model(Path(model_path), num_threads, resize)

    @abstractmethod
    def check_manifest(self, model_path: str | Path, manifest: ModelManifest) -> None:
        """Raise ModelError when this plugin cannot run the model the manifest describes."""

    @abstractmethod
    def open_model(self, model_path: Path, num_threads: int, resize: ResizeMode) -> None:
        """Load the model (set `self.model`) and get ready to fill its input."""

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
    def backend(self) -> str:
        return self.model.backend

    @abstractmethod
    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, InputMap]:
        """RGB uint8 HxWx3 frame -> filled input tensor and the map back to frame pixels."""

    @abstractmethod
    def postprocess(self, raw: list[np.ndarray], m: InputMap) -> list[Detection]:
        """Raw outputs -> thresholded, NMS-ed detections in frame pixels."""

    def detections(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, m: InputMap) -> list[Detection]:
        """Decoded candidates (boxes in input pixels) -> NMS-ed detections in frame pixels, empty boxes dropped."""
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
