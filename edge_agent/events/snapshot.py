"""JPEG snapshot of a frame with the event's boxes and labels drawn (Pillow)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bk_contract import AlertBox
from edge_agent.rules.engine import Mark

COLORS = {"person": (255, 64, 64), "cell phone": (255, 200, 0)}
DEFAULT_COLOR = (0, 200, 255)


@dataclass(frozen=True, slots=True)
class Snapshot:
    jpeg: bytes
    size: tuple[int, int]  # width, height of the JPEG; `boxes` are in these pixels
    boxes: list[AlertBox]


def to_image(frame: object) -> Image.Image:
    """An av.VideoFrame (converted by libswscale), an HxWx3 uint8 array or a PIL image, as RGB."""
    if isinstance(frame, av.VideoFrame):
        return frame.to_image()
    if isinstance(frame, np.ndarray):
        return Image.fromarray(frame, "RGB")
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    raise TypeError(f"cannot snapshot a {type(frame).__name__}")


def scale_marks(marks: Sequence[Mark], src_size: tuple[int, int], dst_size: tuple[int, int]) -> list[AlertBox]:
    """Boxes from detection-frame pixels to snapshot pixels, clipped to the image."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    out = []
    for m in marks:
        b = m.box.scaled(sx, sy)
        box = [max(0.0, min(dst_size[0], b.x1)), max(0.0, min(dst_size[1], b.y1)),
               max(0.0, min(dst_size[0], b.x2)), max(0.0, min(dst_size[1], b.y2))]
        out.append(AlertBox(label=m.label, score=max(0.0, min(1.0, m.score)),
                            box=[round(v, 1) for v in box], track_id=m.track_id))
    return out


def render_snapshot(frame: object, marks: Sequence[Mark], det_size: tuple[int, int] | None,
                    *, quality: int = 80) -> Snapshot:
    """Draw `marks` (in `det_size` pixels) on `frame` and encode it as JPEG."""
    img = to_image(frame)
    boxes = scale_marks(marks, det_size or img.size, img.size)
    draw = ImageDraw.Draw(img)
    line = max(2, img.width // 400)
    font = ImageFont.load_default(size=max(12, img.width // 60))
    for ab in boxes:
        color = COLORS.get(ab.label, DEFAULT_COLOR)
        x1, y1, x2, y2 = ab.box
        draw.rectangle((x1, y1, x2, y2), outline=color, width=line)
        text = f"{ab.label} {ab.score:.2f}" + (f" #{ab.track_id}" if ab.track_id is not None else "")
        tx1, ty1, tx2, ty2 = draw.textbbox((x1, y1), text, font=font)
        ty = y1 - (ty2 - ty1) - 4 if y1 - (ty2 - ty1) - 4 >= 0 else y1
        draw.rectangle((tx1, ty, tx2 + 4, ty + (ty2 - ty1) + 4), fill=color)
        draw.text((x1 + 2, ty + 2 - (ty1 - y1)), text, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Snapshot(buf.getvalue(), img.size, boxes)
