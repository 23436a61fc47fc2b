"""The examples on disk: a JPEG and a JSON sidecar each, under a byte quota, and the clean frames of
recent alerts that an operator may still mark as false alarms.

Layout of the store's folder:
- `examples/{id}.jpg` + `{id}.json` — what is kept (an `Example`); ids sort by time;
- `pending/{alert_id}.jpg` + `.json` — the last `pending_alerts` alerts' frames, until marked or pushed out.

Files are written to a temporary name and renamed, so a crash leaves no half example. When the
examples pass the quota, the oldest of the least valuable kind go first (`REASONS` order). One lock:
the inference workers keep examples while the command thread marks alerts.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image
from ulid import ULID

REASONS = ("low_score_person", "near_miss", "false_alarm")  # the first goes first when over quota
JPEG_QUALITY = 90  # examples are for training: less loss than the alerts' snapshots
ALERT_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")  # the contract's id pattern: safe as a file name


class NotPending(LookupError):
    """No frame of that alert is kept on this box (unknown, or pushed out by newer alerts)."""


@dataclass(frozen=True, slots=True)
class LabelledBox:
    """A box of the model's (a pre-annotation to review): label, score, x1, y1, x2, y2 in image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    camera_id: str
    reason: str  # one of REASONS
    t: float  # epoch seconds the frame was seen
    width: int
    height: int
    boxes: tuple[LabelledBox, ...]
    detail: str = ""  # e.g. the rule and kind of a near miss, the alert id of a false alarm
    consent: str = ""  # the camera's consent note when the frame was kept
    blurred: str = "none"  # what was obscured before writing (collect blur mode)

    def to_json(self) -> dict:
        return {**asdict(self), "boxes": [asdict(b) for b in self.boxes]}

    @classmethod
    def from_json(cls, raw: dict) -> Example:
        boxes = tuple(LabelledBox(str(b["label"]), float(b["score"]), tuple(float(v) for v in b["box"]))
                      for b in raw.get("boxes", ()))
        return cls(**{**raw, "boxes": boxes})


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class ExampleStore:
    """Kept examples and pending alert frames under `root`; `quota_bytes` bounds the examples."""

    def __init__(self, root: Path, *, quota_bytes: int, pending_alerts: int = 200) -> None:
        self.root = Path(root)
        self.examples_dir = self.root / "examples"
        self.pending_dir = self.root / "pending"
        self.examples_dir.mkdir(parents=True, exist_ok=True)
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self.pending_alerts = pending_alerts
        self.evicted = 0
        self._lock = threading.Lock()
        self._index: dict[str, tuple[Example, int]] = {}  # id -> (example, bytes on disk)
        for meta in sorted(self.examples_dir.glob("*.json")):
            try:
                ex = Example.from_json(json.loads(meta.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged sidecar is left alone, never exported
            self._index[ex.id] = (ex, self._size(ex.id, self.examples_dir))

    # --- keeping ---------------------------------------------------------------------------
    def keep(self, image: Image.Image, example: Example) -> Example:
        """Write one example (its `id` is given here) and apply the quota; returns it as stored."""
        with self._lock:
            ex = self._with_id(example)
            self._write(self.examples_dir, ex.id, image, ex)
            self._index[ex.id] = (ex, self._size(ex.id, self.examples_dir))
            self._apply_quota()
            return ex

    def hold_alert(self, alert_id: str, image: Image.Image, example: Example) -> None:
        """Keep the clean frame of an alert until it is marked or `pending_alerts` newer ones push it out."""
        if self.pending_alerts <= 0 or not ALERT_ID.fullmatch(alert_id):
            return
        with self._lock:
            self._write(self.pending_dir, alert_id, image, example)
            held = sorted(self.pending_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
            for meta in held[:-self.pending_alerts]:
                meta.unlink(missing_ok=True)
                meta.with_suffix(".jpg").unlink(missing_ok=True)

    def mark(self, alert_id: str, reason: str = "false_alarm") -> Example:
        """Keep a held alert frame as an example of `reason`; NotPending when the box no longer has it."""
        if not ALERT_ID.fullmatch(alert_id):
            raise NotPending(alert_id)
        meta = self.pending_dir / f"{alert_id}.json"
        with self._lock:
            try:
                held = Example.from_json(json.loads(meta.read_text(encoding="utf-8")))
            except FileNotFoundError:
                raise NotPending(alert_id) from None
            ex = self._with_id(Example(**{**held.to_json(), "boxes": held.boxes, "reason": reason,
                                          "detail": f"alert={alert_id}" + (f" {held.detail}" if held.detail else "")}))
            (self.pending_dir / f"{alert_id}.jpg").replace(self.examples_dir / f"{ex.id}.jpg")
            _write_atomic(self.examples_dir / f"{ex.id}.json", json.dumps(ex.to_json(), ensure_ascii=False).encode())
            meta.unlink(missing_ok=True)
            self._index[ex.id] = (ex, self._size(ex.id, self.examples_dir))
            self._apply_quota()
            return ex

    # --- reading ---------------------------------------------------------------------------
    def examples(self, *, cameras: Iterable[str] | None = None, reasons: Iterable[str] | None = None) -> list[Example]:
        """Kept examples, oldest first, optionally of some cameras or reasons only."""
        cams, why = set(cameras or ()), set(reasons or ())
        with self._lock:
            found = [ex for ex, _ in self._index.values()
                     if (not cams or ex.camera_id in cams) and (not why or ex.reason in why)]
        return sorted(found, key=lambda e: (e.t, e.id))

    def image_path(self, ex: Example) -> Path:
        return self.examples_dir / f"{ex.id}.jpg"

    def bytes_used(self) -> int:
        with self._lock:
            return sum(n for _, n in self._index.values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {r: sum(1 for ex, _ in self._index.values() if ex.reason == r) for r in REASONS}

    # --- inside the lock -------------------------------------------------------------------
    def _with_id(self, ex: Example) -> Example:
        new_id = str(ULID.from_timestamp(ex.t))  # sorts by the time the frame was seen, unique
        return Example(**{**ex.to_json(), "boxes": ex.boxes, "id": new_id})

    def _write(self, folder: Path, name: str, image: Image.Image, ex: Example) -> None:
        _write_atomic(folder / f"{name}.jpg", _jpeg(image))
        _write_atomic(folder / f"{name}.json", json.dumps(ex.to_json(), ensure_ascii=False).encode())

    @staticmethod
    def _size(name: str, folder: Path) -> int:
        return sum((folder / f"{name}{suffix}").stat().st_size for suffix in (".jpg", ".json")
                   if (folder / f"{name}{suffix}").exists())

    def _apply_quota(self) -> None:
        used = sum(n for _, n in self._index.values())
        if used <= self.quota_bytes:
            return
        rank = {r: i for i, r in enumerate(REASONS)}
        for ex, n in sorted(self._index.values(), key=lambda v: (rank.get(v[0].reason, -1), v[0].t, v[0].id)):
            if used <= self.quota_bytes:
                break
            for suffix in (".jpg", ".json"):
                (self.examples_dir / f"{ex.id}{suffix}").unlink(missing_ok=True)
            del self._index[ex.id]
            used -= n
            self.evicted += 1


def scale_boxes(boxes: Sequence[LabelledBox], src: tuple[int, int], dst: tuple[int, int]) -> tuple[LabelledBox, ...]:
    """Boxes from `src` (w, h) pixels to `dst` pixels, clipped to the image; empty boxes dropped."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    out = []
    for b in boxes:
        x1, y1 = max(0.0, min(dst[0], b.box[0] * sx)), max(0.0, min(dst[1], b.box[1] * sy))
        x2, y2 = max(0.0, min(dst[0], b.box[2] * sx)), max(0.0, min(dst[1], b.box[3] * sy))
        if x2 > x1 and y2 > y1:
            out.append(LabelledBox(b.label, round(b.score, 3), (round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1))))
    return tuple(out)
