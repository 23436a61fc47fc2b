"""Box math and the obscuring of regions: pure functions on boxes and Pillow images.

A region is made unrecognisable in two steps: pixelated to about `CELLS` cells across its short
side (what identifies a face — eyes, mouth, outline — is gone), then Gaussian-blurred so the cell
edges do not form a face-like pattern a detector or a person could latch on to. Faces are padded
(`face_region`: hair, ears and chin lie outside a detector's box); for a person box only its top
`HEAD_SHARE` (the head, from a ceiling camera often missed by a face detector) is obscured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageFilter

CELLS = 5  # pixelation cells across a region's short side
BLUR_SHARE = 0.25  # Gaussian radius as a share of the region's short side
FACE_PAD = 0.35  # added left, right and below a face box, as a share of its width/height
FACE_TOP_PAD = 0.6  # added above it: the detector's box starts at the eyebrows, the hair goes on
HEAD_SHARE = 1 / 3  # the part of a person box, from its top, that holds the head
HEAD_PAD = 0.1  # added on each side of that part


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
        x1, y1 = max(0, math.floor(self.x1)), max(0, math.floor(self.y1))
        x2, y2 = min(width, math.ceil(self.x2)), min(height, math.ceil(self.y2))
        return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None

    def overlaps(self, other: Box) -> bool:
        return self.x1 < other.x2 and other.x1 < self.x2 and self.y1 < other.y2 and other.y1 < self.y2


def face_region(face: Box) -> Box:
    """What is obscured for a detected face: the box with the hair above, the ears and the chin."""
    w, h = face.width, face.height
    return Box(face.x1 - w * FACE_PAD, face.y1 - h * FACE_TOP_PAD, face.x2 + w * FACE_PAD, face.y2 + h * FACE_PAD)


def head_of(person: Box) -> Box:
    """The head region of a person box: its top `HEAD_SHARE`, padded."""
    top = Box(person.x1, person.y1, person.x2, person.y1 + person.height * HEAD_SHARE)
    return top.padded(HEAD_PAD)


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
    """A copy of `image` (RGB) with every region pixelated and blurred; pixels elsewhere are untouched."""
    out = image.copy()
    for region in regions:
        px = region.clipped(*out.size)
        if px is None:
            continue
        x1, y1, x2, y2 = px
        w, h = x2 - x1, y2 - y1
        short = min(w, h)
        cells = (max(1, round(w * CELLS / short)), max(1, round(h * CELLS / short)))
        patch = out.crop(px).resize(cells, Image.Resampling.BOX).resize((w, h), Image.Resampling.NEAREST)
        patch = patch.filter(ImageFilter.GaussianBlur(max(2.0, short * BLUR_SHARE)))
        out.paste(patch, (x1, y1))
    return out
