"""IoU tracker: stable ids, per-label matching, misses, median score."""

from __future__ import annotations

import pytest

from edge_agent.analysis.tracker import IouTracker, median_score
from edge_agent.analysis.types import Box, Detection, Track

pytestmark = pytest.mark.unit


def _det(x: float, label: str = "person", score: float = 0.8, w: float = 100) -> Detection:
    return Detection(label, score, Box(x, 100, x + w, 300))


def test_ids_stay_stable_while_objects_move() -> None:
    """Two people walking slowly keep their ids frame after frame."""
    tr = IouTracker(iou_threshold=0.3)
    first = tr.update([_det(0), _det(500)], 0.0)
    ids = {t.box.x1: t.track_id for t in first}
    for i in range(1, 20):
        tracks = tr.update([_det(500 + 5 * i), _det(5 * i)], i * 0.2)
        by_x = sorted(tracks, key=lambda t: t.box.x1)
        assert [t.track_id for t in by_x] == [ids[0], ids[500]]
        assert all(t.hits == i + 1 for t in tracks)


def test_labels_do_not_match_across_classes() -> None:
    """A phone where a person was is a new track, not the person's."""
    tr = IouTracker()
    (p,) = tr.update([_det(0)], 0.0)
    tracks = tr.update([_det(0, label="cell phone")], 0.2)
    assert {t.label for t in tracks} == {"person", "cell phone"}
    assert next(t for t in tracks if t.label == "cell phone").track_id != p.track_id


def test_track_survives_a_few_misses_then_dies() -> None:
    """A track is kept through max_misses missing frames and removed after."""
    tr = IouTracker(max_misses=2, max_age_s=100)
    (t,) = tr.update([_det(0)], 0.0)
    assert tr.update([], 0.2) and tr.update([], 0.4)
    assert tr.update([_det(2)], 0.6)[0].track_id == t.track_id
    tr.update([], 0.8)
    tr.update([], 1.0)
    assert tr.update([], 1.2) == []


def test_track_dies_of_age() -> None:
    """A track not seen for max_age_s is dropped even within the miss budget."""
    tr = IouTracker(max_misses=100, max_age_s=1.0)
    tr.update([_det(0)], 0.0)
    assert tr.update([], 0.5)
    assert tr.update([], 1.5) == []


def test_median_score_ignores_one_lucky_frame() -> None:
    """One high score among low ones leaves the median low; history is bounded."""
    tr = IouTracker(history=5)
    for i, s in enumerate([0.3, 0.3, 0.95, 0.3, 0.3, 0.3]):
        (t,) = tr.update([_det(0, score=s)], i * 0.2)
    assert median_score(t) == 0.3
    assert len(t.scores) == 5
    assert median_score(Track(1, "person", Box(0, 0, 1, 1), 0, 0, scores=[])) == 0.0
