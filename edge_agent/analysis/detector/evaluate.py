"""Frame-level precision and recall of a detector against labelled boxes (pure; `edge-agent model check`).

A detection matches a labelled box of the same label at IoU >= `iou`, one to one, highest score
first. Only labels that the labelled set contains are scored: a set that labels persons only says
nothing about the model's cups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.analysis.types import Box, Detection


@dataclass(slots=True)
class LabelCounts:
    """True positives, false positives and false negatives of one label over a set."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def labelled(self) -> int:
        return self.tp + self.fn

    @property
    def found(self) -> int:
        return self.tp + self.fp

    @property
    def recall(self) -> float | None:
        return self.tp / self.labelled if self.labelled else None

    @property
    def precision(self) -> float | None:
        return self.tp / self.found if self.found else None


def match_boxes(dets: Sequence[Detection], truth: Sequence[Box], iou: float = 0.5) -> tuple[int, int, int]:
    """(tp, fp, fn) of one label in one image, greedy by score."""
    free = list(truth)
    tp = 0
    for det in sorted(dets, key=lambda d: -d.score):
        best = max(free, key=det.box.iou, default=None)
        if best is not None and det.box.iou(best) >= iou:
            free.remove(best)
            tp += 1
    return tp, len(dets) - tp, len(free)


def evaluate_set(
    images: Iterable[tuple[Sequence[Detection], Sequence[tuple[str, Box]]]], iou: float = 0.5
) -> dict[str, LabelCounts]:
    """Per labelled label, the counts over (detections, labelled (label, box)) pairs of every image."""
    pairs = [(list(d), list(t)) for d, t in images]
    labels = sorted({label for _, truth in pairs for label, _ in truth})
    counts = {label: LabelCounts() for label in labels}
    for dets, truth in pairs:
        for label in labels:
            tp, fp, fn = match_boxes([d for d in dets if d.label == label],
                                     [b for name, b in truth if name == label], iou)
            c = counts[label]
            c.tp, c.fp, c.fn = c.tp + tp, c.fp + fp, c.fn + fn
    return counts
