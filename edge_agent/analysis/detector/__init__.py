"""Object detection for the edge agent: NanoDet COCO on TFLite, or a deployment's own YOLO / SSD model
on TFLite or ONNX Runtime (chosen by its manifest), behind a tiny interface.

det = create_detector("tflite", default_model_path("int8"), score_threshold=0.4)
for d in det.detect(rgb_frame):   # RGB uint8 HxWx3, any size
    print(d.label, d.score, d.box)  # box in rgb_frame pixels
"""

from edge_agent.analysis.detector.base import (
    Detector,
    DetectTiming,
    available_detectors,
    create_detector,
    default_model_path,
    register_detector,
)
from edge_agent.analysis.detector.family_detector import FamilyDetector, open_detector
from edge_agent.analysis.detector.manifest import ModelManifest, load_manifest
from edge_agent.analysis.detector.manifest_detector import DEFAULT_IOU_THRESHOLD, DEFAULT_SCORE_THRESHOLD
from edge_agent.analysis.detector.tflite import TfliteDetector

__all__ = [
    "DEFAULT_IOU_THRESHOLD",
    "DEFAULT_SCORE_THRESHOLD",
    "DetectTiming",
    "Detector",
    "FamilyDetector",
    "ModelManifest",
    "TfliteDetector",
    "available_detectors",
    "create_detector",
    "default_model_path",
    "load_manifest",
    "open_detector",
    "register_detector",
]
