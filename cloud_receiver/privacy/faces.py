"""Frontal faces in an RGB image: scikit-image's multi-block LBP cascade, trained by OpenCV.

The model (`lbpcascade_frontalface_opencv.xml`, OpenCV's BSD/Apache licence) ships inside the
scikit-image wheel (`skimage.data.lbp_frontal_face_cascade_filename()`), so it comes with
`pip install` and is never fetched at run time. It finds upright frontal faces of about 24 px and up
in the working image; faces in profile, from above, or smaller are missed (docs/public.md gives the
measured recall), which is why the public copy also blurs the heads of the people the box detected.

The image is scaled so its long side is at most `FaceSearch.work_long_side` before the search (the
search is dense: its cost grows with the pixels); boxes are returned in the input's pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from cloud_receiver.privacy.blur import Box


@dataclass(frozen=True, slots=True)
class FaceSearch:
    """How hard to look: the working size, the smallest face (working pixels) and the cascade's steps."""

    work_long_side: int = 960  # a 1280x720 snapshot is searched at 960x540
    min_face: int = 20  # the cascade's window is 24 px; a little smaller still fires on most faces
    scale_factor: float = 1.15  # window growth per scale
    step_ratio: float = 1.0  # 1 = every position (exhaustive); 1.5 is ~2x faster and misses more
    min_neighbours: int = 3  # overlapping hits a face needs: the detector of record (tests, the check of a copy)
    sensitive_neighbours: int = 2  # what is blurred: more hits, some of them walls, because a missed face costs more


class FaceFinder:
    """Frontal faces of RGB images; one cascade, used by one thread at a time."""

    def __init__(self, search: FaceSearch | None = None) -> None:
        self.search = search or FaceSearch()
        self._lock = threading.Lock()

    @cached_property
    def _cascade(self):  # noqa: ANN202 - skimage.feature.Cascade, imported late (it loads scipy)
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        return Cascade(lbp_frontal_face_cascade_filename())

    def find(self, image: Image.Image, *, sensitive: bool = False) -> list[Box]:
        """Boxes (input pixels) of the frontal faces in `image`; `sensitive`: with fewer overlapping hits
        (finds a few faces more, and more things that are not faces)."""
        s = self.search
        gray = image.convert("L")
        w, h = gray.size
        factor = min(1.0, s.work_long_side / max(w, h))
        if factor < 1.0:
            gray = gray.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
        pixels = np.asarray(gray, dtype=np.float32) / 255.0
        side = min(pixels.shape)
        if side < s.min_face:
            return []
        with self._lock:
            found = self._cascade.detect_multi_scale(
                img=pixels, scale_factor=s.scale_factor, step_ratio=s.step_ratio, min_size=(s.min_face, s.min_face),
                max_size=(side, side),
                min_neighbor_number=s.sensitive_neighbours if sensitive else s.min_neighbours)
        return [Box(d["c"] / factor, d["r"] / factor, (d["c"] + d["width"]) / factor, (d["r"] + d["height"]) / factor)
                for d in found]
