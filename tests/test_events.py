"""Events: ULID kept across start/update/end, rev grows, snapshot JPEG with boxes, stored in the real Outbox."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from ulid import ULID

from bk_contract import Alert
from edge_agent.analysis.types import Box
from edge_agent.events.emitter import EventEmitter
from edge_agent.outbox.store import Outbox
from edge_agent.rules.engine import Mark, Transition

pytestmark = pytest.mark.unit

DEVICE = "64050200001180000001"


def _frame() -> av.VideoFrame:
    rgb = np.full((1080, 1920, 3), 128, dtype=np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def _tr(state: str, frame: object = None, ended_at: float | None = None) -> Transition:
    marks = (Mark("person", 0.8, Box(64, 36, 320, 324), 3), Mark("cell phone", 0.6, Box(200, 100, 240, 160), 4))
    return Transition("phone_use", state, 1_764_468_000.0, ended_at, 0.6, marks, "persons_with_phone=1",
                      "warning", None, frame, (640, 360), key="rule0")


def test_lifecycle_keeps_the_id_and_grows_rev(tmp_path: Path) -> None:
    """start/update/end share one ULID, rev 0/1/2; the snapshot ref is carried to later revs."""
    outbox = Outbox(tmp_path / "agent.db", device_id=DEVICE)
    seen: list[Alert] = []
    em = EventEmitter(DEVICE, "cam1", outbox, seen.append)
    a0 = em.emit(_tr("start", _frame()))
    a1 = em.emit(_tr("update"))
    a2 = em.emit(_tr("end", ended_at=1_764_468_060.0))
    assert [a.state for a in seen] == ["start", "update", "end"]
    assert a0.id == a1.id == a2.id and ULID.from_str(a0.id)
    assert [a.rev for a in seen] == [0, 1, 2]
    assert a0.snapshot is not None and a0.snapshot.bytes > 1000
    assert a1.snapshot == a0.snapshot == a2.snapshot
    assert a2.ended_at is not None and a2.ended_at.timestamp() == 1_764_468_060.0
    stored = outbox.recent_events(10)
    assert [(e.id, e.rev, e.state) for e in stored] == [(a0.id, 2, "end")]
    a3 = em.emit(_tr("start", _frame()))
    assert a3.id != a0.id and a3.rev == 0
    outbox.close()


class Recorder:
    def __init__(self) -> None:
        self.items: list[tuple[Alert, bytes | None]] = []

    def add_event(self, alert: Alert, snapshot: bytes | None = None) -> Alert:
        self.items.append((alert, snapshot))
        return alert


def test_snapshot_is_the_full_frame_with_boxes_in_its_pixels() -> None:
    """Boxes found at 640x360 are reported and drawn in the 1920x1080 snapshot's pixels."""
    rec = Recorder()
    alert = EventEmitter(DEVICE, "cam1", rec).emit(_tr("start", _frame()))
    assert alert is not None
    jpeg = rec.items[0][1]
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (1920, 1080)
    assert alert.frame_size == [1920, 1080]
    person = next(b for b in alert.boxes if b.label == "person")
    assert person.box == [192.0, 108.0, 960.0, 972.0] and person.track_id == 3
    # the box outline is drawn in red on the grey frame
    r, g, b = img.convert("RGB").getpixel((960, 600))
    assert r > 200 and g < 120 and b < 120
    r, g, b = img.convert("RGB").getpixel((1500, 600))
    assert abs(r - 128) < 20 and abs(g - 128) < 20


def test_a_failing_store_is_logged_not_raised() -> None:
    """A store that raises does not break the caller (the pipeline keeps going)."""

    class Broken:
        def add_event(self, alert: Alert, snapshot: bytes | None = None) -> Alert:
            raise OSError("disk full")

    assert EventEmitter(DEVICE, "cam1", Broken()).emit(_tr("start", _frame())) is None


def test_camera_offline_event_has_no_snapshot() -> None:
    """camera_offline transitions become alerts without snapshot or boxes."""
    rec = Recorder()
    tr = Transition("camera_offline", "start", 1_764_468_000.0, None, 0.0, (), "offline_for=30s", "critical",
                    None, key="offline")
    alert = EventEmitter(DEVICE, "cam1", rec).emit(tr)
    assert alert is not None and alert.type == "camera_offline" and alert.snapshot is None
    assert rec.items[0][1] is None and alert.boxes == []
