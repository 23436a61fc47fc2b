"""IoU tracker: stable ids per label, a miss budget, and a median of recent scores (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from edge_agent.analysis.types import Detection, Track


def median_score(track: Track) -> float:
    """Median of the track's recent scores (0 for none): one lucky frame does not make a track."""
    return statistics.median(track.scores) if track.scores else 0.0


class IouTracker:
    """Greedy IoU matching of detections to tracks of the same label."""

    def __init__(self, *, iou_threshold: float = 0.3, max_misses: int = 5, max_age_s: float = 3.0,
                 history: int = 9) -> None:
        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.max_age_s = max_age_s
        self.history = history
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: Sequence[Detection], now: float) -> list[Track]:
        """Match, update and age tracks; returns the live tracks (seen this frame or recently)."""
        pairs: list[tuple[float, int, int]] = []
        for ti, tr in enumerate(self.tracks):
            for di, det in enumerate(detections):
                if det.label == tr.label:
                    iou = tr.box.iou(det.box)
                    if iou >= self.iou_threshold:
                        pairs.append((iou, ti, di))
        pairs.sort(key=lambda p: -p[0])
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._hit(self.tracks[ti], detections[di], now)
        for ti, tr in enumerate(self.tracks):
            if ti not in used_t:
                tr.misses += 1
        for di, det in enumerate(detections):
            if di not in used_d:
                self.tracks.append(Track(self._next_id, det.label, det.box, now, now, scores=[det.score]))
                self._next_id += 1
        self.tracks = [t for t in self.tracks
                       if t.misses <= self.max_misses and now - t.last_seen <= self.max_age_s]
        return list(self.tracks)

    def _hit(self, tr: Track, det: Detection, now: float) -> None:
        tr.box = det.box
        tr.last_seen = now
        tr.hits += 1
        tr.misses = 0
        tr.scores.append(det.score)
        del tr.scores[:-self.history]

