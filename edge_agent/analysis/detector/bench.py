"""Side-by-side timing of detect() (with pre/post-processing) and the bare interpreter invoke()."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np

from edge_agent.analysis.detector.tflite import TfliteDetector


def time_detect(
    detector: TfliteDetector, frames: Sequence[np.ndarray], n: int = 50, warmup: int = 3
) -> dict[str, float]:
    """Median ms of detect() and of invoke() alone, interleaved in one run, over n calls.

    Frames are cycled; each round runs detect() on a frame, then invoke() again on the tensor
    that detect() prepared, so both see the same machine state.
    """
    if not frames:
        raise ValueError("time_detect needs at least one frame")
    detect_ms: list[float] = []
    invoke_ms: list[float] = []
    pre_ms: list[float] = []
    post_ms: list[float] = []
    for i in range(warmup + n):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        detector.detect(frame)
        t1 = time.perf_counter()
        tensor, _ = detector.preprocess(frame)
        t2 = time.perf_counter()
        detector.model.invoke(tensor)
        t3 = time.perf_counter()
        if i >= warmup:
            detect_ms.append((t1 - t0) * 1e3)
            invoke_ms.append((t3 - t2) * 1e3)
            timing = detector.last_timing
            if timing is not None:
                pre_ms.append(timing.preprocess_ms)
                post_ms.append(timing.postprocess_ms)
    detect = statistics.median(detect_ms)
    invoke = statistics.median(invoke_ms)
    return {
        "detect_ms": detect,
        "invoke_ms": invoke,
        "ratio": detect / invoke,
        "preprocess_ms": statistics.median(pre_ms),
        "postprocess_ms": statistics.median(post_ms),
        "n": float(n),
    }
