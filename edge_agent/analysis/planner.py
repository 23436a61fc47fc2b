"""How many detections per second each camera gets, from the measured time of one detection.

Pure arithmetic, so it is tested on made-up numbers. The box can afford
`parallel * 1000 / ms * headroom` detections per second (the headroom leaves CPU for decoding,
motion and rules). Motion-gated cameras are served first, up to the rate they ask for: they
only spend it while something moves. The rest share what is left fairly (water-filling: a
camera asking less than the equal share gets what it asks, the remainder is split again).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CameraDemand:
    camera_id: str
    want_fps: float
    motion_gated: bool


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    ms_per_detection: float
    parallel: int
    capacity_dps: float  # detections per second the box can afford
    per_camera: dict[str, float] = field(default_factory=dict)  # granted detections/s
    wanted: dict[str, float] = field(default_factory=dict)

    @property
    def sustained(self) -> bool:
        """Every camera gets the rate it asked for."""
        return all(self.per_camera[c] >= w - 1e-9 for c, w in self.wanted.items())

    def channels_at(self, fps: float) -> int:
        """How many cameras the box sustains at `fps` detections per second each."""
        return math.floor(self.capacity_dps / fps + 1e-9)

    def as_dict(self) -> dict:
        return {
            "ms_per_detection": round(self.ms_per_detection, 1),
            "parallel": self.parallel,
            "capacity_dps": round(self.capacity_dps, 2),
            "sustained": self.sustained,
            "per_camera_fps": {c: round(v, 2) for c, v in self.per_camera.items()},
        }


def _water_fill(wants: dict[str, float], budget: float) -> dict[str, float]:
    """Split `budget` fairly: nobody gets more than it wants, the rest share equally."""
    granted: dict[str, float] = {}
    left = dict(wants)
    while left:
        share = budget / len(left)
        small = {c: w for c, w in left.items() if w <= share}
        if not small:
            granted.update({c: share for c in left})
            return granted
        for c, w in small.items():
            granted[c] = w
            budget -= w
            del left[c]
    return granted


def plan_channels(
    ms_per_detection: float,
    cameras: Sequence[CameraDemand],
    parallel: int = 1,
    headroom: float = 0.8,
    min_fps: float = 0.2,
) -> ChannelPlan:
    """Granted detections/s per camera (never below `min_fps`, so no camera goes blind)."""
    if ms_per_detection <= 0 or parallel < 1:
        raise ValueError("ms_per_detection must be > 0 and parallel >= 1")
    capacity = parallel * 1000.0 / ms_per_detection * headroom
    gated = {c.camera_id: c.want_fps for c in cameras if c.motion_gated}
    rest = {c.camera_id: c.want_fps for c in cameras if not c.motion_gated}
    granted = _water_fill(gated, capacity)
    left = max(0.0, capacity - sum(granted.values()))
    granted.update(_water_fill(rest, left) if rest else {})
    granted = {c.camera_id: max(min_fps, min(granted[c.camera_id], c.want_fps)) for c in cameras}
    return ChannelPlan(ms_per_detection, parallel, capacity, granted, {c.camera_id: c.want_fps for c in cameras})
