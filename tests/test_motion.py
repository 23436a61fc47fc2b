"""Motion gate on tiny synthetic arrays."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.analysis.motion import MotionDetector, dilate, points_in_polygon, polygon_mask, region_boxes

pytestmark = pytest.mark.unit


def _still(h: int = 40, w: int = 64, value: int = 50) -> np.ndarray:
    return np.full((h, w), value, dtype=np.uint8)


def test_still_frames_have_no_motion() -> None:
    """The same frame again and again is not motion."""
    md = MotionDetector(threshold=20, min_area=0.001)
    results = [md.update(_still()) for _ in range(5)]
    assert all(not r.motion for r in results)
    assert results[-1].fraction == 0.0


def test_bright_square_is_motion_with_a_box_around_it() -> None:
    """A square appearing is motion, and the box covers it (normalised coordinates)."""
    md = MotionDetector(threshold=20, min_area=0.001, dilate_px=0)
    md.update(_still())
    frame = _still()
    frame[10:20, 32:48] = 200
    r = md.update(frame)
    assert r.motion
    assert abs(r.fraction - 160 / (40 * 64)) < 1e-6
    assert len(r.boxes) == 1
    b = r.boxes[0]
    assert b.x1 <= 32 / 64 and b.x2 >= 48 / 64 and b.y1 <= 10 / 40 and b.y2 >= 20 / 40
    assert b.x1 >= 24 / 64 and b.x2 <= 56 / 64  # coarse cells, but near the square


def test_small_change_below_min_area_is_not_motion() -> None:
    """A single changed pixel stays under min_area."""
    md = MotionDetector(threshold=20, min_area=0.01)
    md.update(_still())
    frame = _still()
    frame[5, 5] = 255
    r = md.update(frame)
    assert not r.motion and r.fraction > 0


def test_masked_region_is_ignored() -> None:
    """Change inside a mask polygon (e.g. a TV) does not count."""
    md = MotionDetector(threshold=20, min_area=0.001, masks=[[(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]])
    md.update(_still())
    frame = _still()
    frame[:, 40:] = 255
    assert not md.update(frame).motion
    frame[:, 10:20] = 255
    assert md.update(frame).motion


def test_running_average_absorbs_a_lasting_change() -> None:
    """A change that stays becomes background after enough frames."""
    md = MotionDetector(threshold=20, min_area=0.001, alpha=0.5)
    md.update(_still(value=50))
    changed = _still(value=120)
    flags = [md.update(changed).motion for _ in range(8)]
    assert flags[0] and not flags[-1]


def test_polygon_mask_and_points_in_polygon() -> None:
    """Even-odd point-in-polygon on pixel centres."""
    m = polygon_mask([[(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]], 4, 4)
    assert m.sum() == 4 and m[0, 0] and m[1, 1] and not m[2, 2]
    tri = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    inside = points_in_polygon(np.array([0.1, 0.9]), np.array([0.1, 0.9]), tri)
    assert inside.tolist() == [True, False]


def test_dilate_and_region_boxes() -> None:
    """Dilation grows a pixel to a square; separate blobs give separate boxes."""
    m = np.zeros((16, 16), dtype=bool)
    m[8, 8] = True
    assert dilate(m, 1).sum() == 9
    m[0, 0] = True
    assert len(region_boxes(m, cell=4)) == 2
