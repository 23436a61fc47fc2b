"""Obscuring people before a collected frame reaches the disk.

"heads": the head region of every person box of the example (those the detector was sure of and
the low-confidence ones alike); "heads_and_faces" also the frontal faces scikit-image's LBP cascade
finds (its model ships in the scikit-image wheel; from a ceiling camera it finds few, hence the
heads). The obscuring itself is `bk_common.obscure`, the same as the receiver's public copies.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image

from bk_common.obscure import Region, head_of, obscure
from edge_agent.collect.store import LabelledBox

FACE_WORK_LONG_SIDE = 960  # the face search runs on a copy at most this long (cost grows with pixels)
FACE_MIN = 20  # smallest face searched, working pixels
FACE_PAD = 0.35  # added around a found face: hair, ears and chin lie outside the cascade's box
_face_lock = threading.Lock()


@cache
def _cascade():  # noqa: ANN202 - skimage.feature.Cascade, loaded once when first needed (it imports scipy)
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    return Cascade(lbp_frontal_face_cascade_filename())


def frontal_faces(image: Image.Image) -> list[Region]:
    """Padded frontal-face regions in `image` pixels."""
    gray = image.convert("L")
    w, h = gray.size
    factor = min(1.0, FACE_WORK_LONG_SIDE / max(w, h))
    if factor < 1.0:
        gray = gray.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    side = min(pixels.shape)
    if side < FACE_MIN:
        return []
    with _face_lock:  # one cascade, not shared between threads at once
        found = _cascade().detect_multi_scale(img=pixels, scale_factor=1.15, step_ratio=1.0,
                                              min_size=(FACE_MIN, FACE_MIN), max_size=(side, side),
                                              min_neighbor_number=2)
    out = []
    for d in found:
        x1, y1, fw, fh = d["c"] / factor, d["r"] / factor, d["width"] / factor, d["height"] / factor
        out.append((x1 - fw * FACE_PAD, y1 - fh * FACE_PAD, x1 + fw * (1 + FACE_PAD), y1 + fh * (1 + FACE_PAD)))
    return out


def obscure_people(image: Image.Image, boxes: Sequence[LabelledBox], mode: str) -> Image.Image:
    """`image` with the heads of its person boxes (and frontal faces for "heads_and_faces") obscured."""
    if mode == "none":
        return image
    regions = [head_of(b.box) for b in boxes if b.label == "person"]
    if mode == "heads_and_faces":
        regions += frontal_faces(image)
    return obscure(image, regions) if regions else image
