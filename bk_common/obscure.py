"""Making regions of a picture unrecognisable, for the box and the receiver alike (pure Pillow).

A region is pixelated to about `CELLS` cells across its short side (what identifies a face — eyes,
mouth, outline — is gone), then Gaussian-blurred so the cell edges do not form a face-like pattern.
`head_of` gives the head of a person box (from a ceiling camera a face detector often misses it).
The receiver's public copies (`cloud_receiver/privacy/blur.py`) obscure through it too; the box's
frame collector (`edge_agent/collect`) uses this module because the box may not import the receiver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from PIL import Image, ImageFilter

CELLS = 5  # pixelation cells across a region's short side
BLUR_SHARE = 0.25  # Gaussian radius as a share of the region's short side
HEAD_SHARE = 1 / 3  # the part of a person box, from its top, that holds the head
HEAD_PAD = 0.1  # added on each side of that part

Region = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def head_of(person: Region) -> Region:
    """The head region of a person box: its top `HEAD_SHARE`, padded by `HEAD_PAD` on each side."""
    x1, y1, x2, y2 = person
    w, h = x2 - x1, (y2 - y1) * HEAD_SHARE
    return x1 - w * HEAD_PAD, y1 - h * HEAD_PAD, x2 + w * HEAD_PAD, y1 + h + h * HEAD_PAD


def clipped(region: Region, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Whole pixels of `region` inside a width x height image (rounded outwards), None when nothing is left."""
    x1, y1 = max(0, math.floor(region[0])), max(0, math.floor(region[1]))
    x2, y2 = min(width, math.ceil(region[2])), min(height, math.ceil(region[3]))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def obscure(image: Image.Image, regions: Iterable[Region]) -> Image.Image:
    """A copy of `image` with every region pixelated and blurred; pixels elsewhere are untouched."""
    out = image.copy()
    for region in regions:
        px = clipped(region, *out.size)
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
