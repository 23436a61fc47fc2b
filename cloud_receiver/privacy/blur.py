"""Box math and the obscuring of regions: pure functions on boxes and Pillow images.

A region is made unrecognisable in two steps: pixelated to about `CELLS` cells across its short
side (what identifies a face — eyes, mouth, outline — is gone), then Gaussian-blurred so the cell
edges do not form a face-like pattern a detector or a person could latch on to. Faces are padded
(`face_region`: hair, ears and chin lie outside a detector's box); for a person box only its top
third (the head, from a ceiling camera often missed by a face detector) is obscured. The obscuring itself is
`bk_common.obscure`, shared with the box's frame collector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image

from bk_common.obscure import clipped
from bk_common.obscure import head_of as region_of_head
from bk_common.obscure import obscure as obscure_regions

FACE_PAD = 0.35  # added left, right and below a face box, as a share of its width/height
FACE_TOP_PAD = 0.6  # added above it: the detector's box starts at the eyebrows, the hair goes on


@dataclass(frozen=True, slots=True)
class Box:
    """x1, y1, x2, y2 in pixels (x2, y2 exclusive)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def padded(self, share: float) -> Box:
        dx, dy = self.width * share, self.height * share
        return Box(self.x1 - dx, self.y1 - dy, self.x2 + dx, self.y2 + dy)

    def clipped(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """Whole pixels inside a `width` x `height` image (rounded outwards), or None when nothing is left."""
        return clipped((self.x1, self.y1, self.x2, self.y2), width, height)

    def overlaps(self, other: Box) -> bool:
        return self.x1 < other.x2 and other.x1 < self.x2 and self.y1 < other.y2 and other.y1 < self.y2


def face_region(face: Box) -> Box:
    """What is obscured for a detected face: the box with the hair above, the ears and the chin."""
    w, h = face.width, face.height
    return Box(face.x1 - w * FACE_PAD, face.y1 - h * FACE_TOP_PAD, face.x2 + w * FACE_PAD, face.y2 + h * FACE_PAD)


def head_of(person: Box) -> Box:
    """The head region of a person box: its top third, padded (`bk_common.obscure.head_of`)."""
    return Box(*region_of_head((person.x1, person.y1, person.x2, person.y2)))


def scaled(box: Box, sx: float, sy: float) -> Box:
    return Box(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy)


def person_heads(boxes: Iterable[dict], frame_size: Sequence[int] | None, image_size: tuple[int, int]) -> list[Box]:
    """Head regions (image pixels) of the `person` boxes of an alert (`boxes_json` items: label, box in
    pixels of `frame_size` [w, h]; the snapshot may be of another size). Malformed items are skipped."""
    sx = sy = 1.0
    if frame_size and len(frame_size) == 2 and all(isinstance(v, int | float) and v > 0 for v in frame_size):
        sx, sy = image_size[0] / frame_size[0], image_size[1] / frame_size[1]
    out = []
    for item in boxes:
        coords = item.get("box") if isinstance(item, dict) else None
        if item.get("label") != "person" or not isinstance(coords, list) or len(coords) != 4:
            continue
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in coords):
            continue
        x1, y1, x2, y2 = coords
        if x2 > x1 and y2 > y1:
            out.append(head_of(scaled(Box(x1, y1, x2, y2), sx, sy)))
    return out


def obscure(image: Image.Image, regions: Iterable[Box]) -> Image.Image:
    """A copy of `image` (RGB) with every region pixelated and blurred (`bk_common.obscure`, as on the box)."""
    return obscure_regions(image, ((r.x1, r.y1, r.x2, r.y2) for r in regions))
