"""A detector that also hands over what it nearly found: low-confidence detections for the collector.

`LowScoreTap` wraps a manifest detector and lowers its per-class thresholds (`thresholds`) for the
tapped labels to a floor. `detect` returns exactly what the detector returns without the tap — NMS
is greedy by score, so a candidate below the threshold never suppresses one above it — and keeps
the detections between the floor and the real threshold for the thread that called it
(`take_below`): the inference worker hands them to the camera whose frame it just detected.
A detector without per-class thresholds is passed through untouched (nothing below is seen).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from edge_agent.analysis.detector.base import Detector
from edge_agent.analysis.types import Detection

_below = threading.local()


def take_below() -> list[Detection]:
    """The low-confidence detections of this thread's last `detect` (once; empty afterwards)."""
    found = getattr(_below, "found", [])
    _below.found = []
    return found


class LowScoreTap(Detector):
    """`inner` with the thresholds of `floors` (label -> lowest score kept for the collector) lowered."""

    def __init__(self, inner: Detector, floors: Mapping[str, float]) -> None:
        self.inner = inner
        thresholds = getattr(inner, "thresholds", None)
        self.real: np.ndarray | None = None
        if isinstance(thresholds, np.ndarray) and len(thresholds) == len(inner.labels):
            self.real = thresholds.copy()
            for label, floor in floors.items():
                if label in inner.labels:
                    i = inner.labels.index(label)
                    thresholds[i] = min(thresholds[i], floor)
            self._index = {label: i for i, label in enumerate(inner.labels)}

    @property
    def labels(self) -> tuple[str, ...]:
        return self.inner.labels

    @property
    def input_size(self) -> tuple[int, int]:
        return self.inner.input_size

    @property
    def last_timing(self):  # noqa: ANN201 - DetectTiming of the inner detector
        return self.inner.last_timing

    def __getattr__(self, name: str) -> object:  # backend, manifest, ... of the wrapped detector
        return getattr(self.inner, name)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        found = self.inner.detect(frame)
        if self.real is None:
            _below.found = []
            return found
        kept, below = [], []
        for d in found:
            (kept if d.score >= self.real[self._index[d.label]] else below).append(d)
        _below.found = below
        return kept
