"""The detector interface and the registry that builds a detector from its config `type`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge_agent.analysis.types import Detection
from edge_agent.assets import MODELS_DIR
from edge_agent.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DetectTiming:
    """Where the time of one detect() call went, in milliseconds."""

    preprocess_ms: float
    invoke_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.invoke_ms + self.postprocess_ms


class Detector(ABC):
    """Finds objects in one RGB uint8 HxWx3 frame of any size; boxes in that frame's pixels.

    Not thread-safe: the pipeline owns one detector per inference worker.
    """

    last_timing: DetectTiming | None = None

    @property
    @abstractmethod
    def labels(self) -> tuple[str, ...]:
        """Class names the model can output, in model order."""

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input; frames of exactly this size skip resizing."""

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Detections in `frame`, highest score first."""


D = TypeVar("D", bound=type[Detector])
_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register_detector(kind: str) -> Callable[[D], D]:
    """Class decorator: make a Detector subclass buildable by `create_detector(kind, ...)`."""

    def wrap(cls: D) -> D:
        _REGISTRY[kind] = cls
        return cls

    return wrap


def available_detectors() -> list[str]:
    return sorted(_REGISTRY)


def create_detector(kind: str, model_path: str | Path | None = None, **opts: Any) -> Detector:
    """Build the detector registered under `kind` (e.g. "tflite") with its options."""
    try:
        factory = _REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"detector type {kind!r} is unknown; available: {', '.join(available_detectors())}") from None
    return factory(model_path if model_path is not None else default_model_path(), **opts)


def default_model_path(precision: str = "int8") -> Path:
    """The NanoDet COCO model shipped in the package (edge_agent/assets/models/)."""
    if precision not in ("int8", "fp32"):
        raise ConfigError(f"model precision {precision!r} must be 'int8' or 'fp32'")
    return MODELS_DIR / f"nanodet-coco-{precision}.tflite"
