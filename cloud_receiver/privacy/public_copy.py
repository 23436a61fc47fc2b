"""The public copy of a kitchen snapshot: faces and heads obscured, re-encoded, cached by content hash.

`make_public_copy(original, finder, people)`:
1. decode the JPEG (anything else is refused: a file that is not a picture is never passed on) and
   scale it so its long side is at most `MAX_LONG_SIDE` (a phone needs no more);
2. find the frontal faces in it (`faces.FaceFinder`, its sensitive search: a wall blurred by mistake
   costs nothing, a face missed costs a child's or a cook's privacy);
3. obscure every face (padded) and the head of every person box of the snapshot's alerts
   (`blur.person_heads`), and re-encode as JPEG without the original's metadata (EXIF: camera, time,
   place);
4. when anything was obscured, look again (the detector's normal search) in the copy as it will be
   served, decoded from the new JPEG, and obscure what is found there too, up to `MAX_PASSES`
   searches; a copy in which faces are still found then is refused (`StillFaces`), never served.

`PublicCopies` keeps each copy as `media_dir/public/<POLICY>/ab/<sha256>.jpg`, written atomically, so
it is made once; a change of the policy gets a new `POLICY` folder and the copies are made anew.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from PIL import Image, UnidentifiedImageError

from cloud_receiver.privacy.blur import face_region, obscure, person_heads, scaled
from cloud_receiver.privacy.faces import FaceFinder

log = structlog.get_logger(__name__)

POLICY = "v1"
MAX_LONG_SIDE = 1280
MAX_PIXELS = 40_000_000  # larger than any camera's frame: refuse before decoding (a decompression bomb)
JPEG_QUALITY = 85
MAX_PASSES = 3  # searches of the copy before it is given up on
PersonBoxes = tuple[list[dict], list[int] | None]  # an alert's boxes_json items and its frame_size [w, h]


class NotAPicture(ValueError):
    """The original cannot be decoded as a JPEG picture."""


class StillFaces(RuntimeError):
    """Faces are still found after `MAX_PASSES`: the copy is not served."""


@dataclass(frozen=True, slots=True)
class PublicCopy:
    jpeg: bytes
    size: tuple[int, int]
    faces: int  # face regions obscured (all passes)
    heads: int  # head regions (from person boxes) obscured
    passes: int  # detector runs
    ms: float


def decode(data: bytes) -> Image.Image:
    """A JPEG as RGB; NotAPicture for anything else (or a picture too large to be a camera's frame)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                raise NotAPicture(f"not a JPEG but {img.format}")
            if img.width * img.height > MAX_PIXELS:
                raise NotAPicture(f"{img.width}x{img.height} is larger than any camera's frame")
            img.draft("RGB", (MAX_LONG_SIDE, MAX_LONG_SIDE))  # DCT scaling: a large JPEG decodes at a fraction
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise NotAPicture(str(err)) from err


def encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)  # no exif= : the metadata is left behind
    return out.getvalue()


def make_public_copy(original: bytes, finder: FaceFinder, people: Sequence[PersonBoxes] = ()) -> PublicCopy:
    """The blurred copy of `original`; `people` are the alerts' boxes for this snapshot (`boxes_json` items
    and the `frame_size` they are in), whose `person` heads are obscured too."""
    started = time.perf_counter()
    image = decode(original)
    with Image.open(io.BytesIO(original)) as probe:
        stored = probe.size
    factor = min(1.0, MAX_LONG_SIDE / max(stored))
    target = (max(1, round(stored[0] * factor)), max(1, round(stored[1] * factor)))
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    regions = [scaled(h, factor, factor) for items, frame in people for h in person_heads(items, frame, stored)]
    faces = [face_region(f) for f in finder.find(image, sensitive=True)]
    runs, total = 1, len(faces)
    image = obscure(image, regions + faces)
    data = encode(image)
    while faces or (runs == 1 and regions):  # look again at what will be served
        faces = [face_region(f) for f in finder.find(decode(data))]
        runs += 1
        if faces and runs > MAX_PASSES:
            raise StillFaces(f"{len(faces)} face(s) still found after {runs} searches")
        if faces:
            total += len(faces)
            image = obscure(image, faces)
            data = encode(image)
    return PublicCopy(data, image.size, total, len(regions), runs, (time.perf_counter() - started) * 1000)


class PublicCopies:
    """The cache of public copies under `media_dir/public/<POLICY>/`."""

    def __init__(self, media_dir: Path, finder: FaceFinder | None = None) -> None:
        self.root = media_dir / "public" / POLICY
        self.finder = finder or FaceFinder()

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.jpg"

    def cached(self, sha256: str) -> Path | None:
        path = self.path(sha256)
        return path if path.is_file() else None

    def make(self, sha256: str, original: Path, people: Sequence[PersonBoxes] = ()) -> Path:
        """The cached copy of the snapshot `sha256` (stored at `original`), made now if missing."""
        path = self.path(sha256)
        if path.is_file():
            return path
        copy = make_public_copy(original.read_bytes(), self.finder, people)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(copy.jpeg)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        log.info("public_copy_made", sha256=sha256, size=f"{copy.size[0]}x{copy.size[1]}", faces=copy.faces,
                 heads=copy.heads, passes=copy.passes, ms=round(copy.ms))
        return path
