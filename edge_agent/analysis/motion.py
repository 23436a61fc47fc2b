"""Motion gate: running-average background on a small grayscale frame (pure numpy).

The caller scales the frame with libswscale (`frame.reformat(width, height, format="gray")`);
this module only does array math, so it is tested on tiny synthetic arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_agent.analysis.types import Box

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class MotionResult:
    fraction: float  # share of unmasked pixels that changed
    boxes: list[Box] = field(default_factory=list)  # normalised 0..1 boxes of changed regions
    motion: bool = False


def polygon_mask(polygons: Sequence[Sequence[Point]], width: int, height: int) -> np.ndarray:
    """Boolean (height, width) array, True inside any of the normalised polygons (pixel centres)."""
    mask = np.zeros((height, width), dtype=bool)
    if not polygons:
        return mask
    ys, xs = np.mgrid[0:height, 0:width]
    px = (xs + 0.5) / width
    py = (ys + 0.5) / height
    for poly in polygons:
        mask |= points_in_polygon(px, py, poly)
    return mask


def points_in_polygon(px: np.ndarray, py: np.ndarray, poly: Sequence[Point]) -> np.ndarray:
    """Even-odd rule, vectorised over point arrays."""
    inside = np.zeros(np.broadcast(px, py).shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (py >= min(y1, y2)) & (py < max(y1, y2))
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square, with shifted ORs."""
    if radius <= 0:
        return mask
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            out[yd, xd] |= mask[ys, xs]
    return out


def region_boxes(mask: np.ndarray, cell: int = 8) -> list[Box]:
    """Coarse boxes of changed regions: cells with change, merged into connected groups (normalised)."""
    h, w = mask.shape
    gh, gw = (h + cell - 1) // cell, (w + cell - 1) // cell
    padded = np.zeros((gh * cell, gw * cell), dtype=bool)
    padded[:h, :w] = mask
    grid = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    seen = np.zeros_like(grid)
    boxes: list[Box] = []
    for gy, gx in zip(*np.nonzero(grid), strict=True):
        if seen[gy, gx]:
            continue
        stack = [(gy, gx)]
        seen[gy, gx] = True
        y1, x1, y2, x2 = gy, gx, gy, gx
        while stack:
            cy, cx = stack.pop()
            y1, x1, y2, x2 = min(y1, cy), min(x1, cx), max(y2, cy), max(x2, cx)
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < gh and 0 <= nx < gw and grid[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        boxes.append(Box(x1 * cell / w, y1 * cell / h, min(1.0, (x2 + 1) * cell / w), min(1.0, (y2 + 1) * cell / h)))
    return boxes


class MotionDetector:
    """Running average of grayscale frames; a frame has motion when enough pixels differ from it."""

    def __init__(self, *, threshold: int = 25, min_area: float = 0.002, alpha: float = 0.1,
                 masks: Sequence[Sequence[Point]] = (), dilate_px: int = 1) -> None:
        self.threshold = threshold
        self.min_area = min_area
        self.alpha = alpha
        self.masks = [list(p) for p in masks]
        self.dilate_px = dilate_px
        self._avg: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def update(self, gray: np.ndarray) -> MotionResult:
        """Compare `gray` (H, W uint8) with the background, then blend it in."""
        frame = gray.astype(np.float32)
        if self._avg is None or self._avg.shape != frame.shape:
            self._avg = frame
            self._mask = polygon_mask(self.masks, frame.shape[1], frame.shape[0]) if self.masks else None
            return MotionResult(0.0, [], False)
        changed = np.abs(frame - self._avg) >= self.threshold
        if self._mask is not None:
            changed &= ~self._mask
        self._avg += self.alpha * (frame - self._avg)
        valid = changed.size - (int(self._mask.sum()) if self._mask is not None else 0)
        fraction = float(changed.sum()) / valid if valid > 0 else 0.0
        if fraction < self.min_area or fraction == 0.0:
            return MotionResult(fraction, [], False)
        changed = dilate(changed, self.dilate_px)
        return MotionResult(fraction, region_boxes(changed), True)
