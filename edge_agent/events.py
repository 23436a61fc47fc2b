"""Rule transitions become `bk_contract.Alert`s: one ULID per event, rev growing, snapshot attached.

Each alert goes to `outbox.add_event(alert, jpeg)` (stored and queued before anything else) and
then to `on_event` with the stored alert (its `snapshot` MediaRef filled by the outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from ulid import ULID

from bk_contract import Alert, AlertBox, MediaRef
from edge_agent.rules import Transition
from edge_agent.snapshot import render_snapshot, scale_marks

log = structlog.get_logger(__name__)


class EventStore(Protocol):
    def add_event(self, alert: Alert, snapshot: bytes | None = None) -> Alert: ...


@dataclass
class _Open:
    id: str
    rev: int
    snapshot: MediaRef | None
    size: tuple[int, int] | None  # snapshot pixel size, the space of the alert boxes
    boxes: list[AlertBox]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class EventEmitter:
    """Turns one camera's transitions into stored alerts."""

    def __init__(self, device_id: str, camera_id: str, store: EventStore,
                 on_event: Callable[[Alert], None] | None = None,
                 snapshot_source: Callable[[object], object] | None = None) -> None:
        self.device_id = device_id
        self.camera_id = camera_id
        self.store = store
        self.on_event = on_event
        # maps a transition's frame handle to the picture to draw on (e.g. the main stream's frame)
        self.snapshot_source = snapshot_source or (lambda f: f)
        self.open: dict[str, _Open] = {}
        self.log = log.bind(camera=camera_id)

    def emit(self, tr: Transition) -> Alert | None:
        """Store and announce one transition; errors are logged, never raised (the pipeline goes on)."""
        try:
            return self._emit(tr)
        except Exception:  # noqa: BLE001 - a failing store must not stop detection on this camera
            self.log.exception("event_store_failed", type=tr.rule, state=tr.state)
            return None

    def _emit(self, tr: Transition) -> Alert:
        ev = self.open.get(tr.key)
        if tr.state == "start" or ev is None:
            ev = _Open(str(ULID()), 0, None, None, [])
        else:
            ev.rev += 1
        jpeg = None
        picture = self.snapshot_source(tr.frame) if tr.frame is not None else None
        if picture is not None:
            snap = render_snapshot(picture, tr.marks, tr.frame_size)
            jpeg, ev.size, ev.boxes = snap.jpeg, snap.size, snap.boxes
        elif tr.marks and tr.frame_size and ev.size:
            ev.boxes = scale_marks(tr.marks, tr.frame_size, ev.size)
        alert = Alert(
            id=ev.id, device_id=self.device_id, camera_id=self.camera_id, type=tr.rule, level=tr.level,
            state=tr.state, rev=ev.rev, started_at=_dt(tr.started_at),
            ended_at=_dt(tr.ended_at) if tr.ended_at is not None else None,
            score=round(max(0.0, min(1.0, tr.score)), 3), boxes=ev.boxes,
            frame_size=list(ev.size) if ev.size else None,
            zone=[list(p) for p in tr.zone] if tr.zone else None,
            snapshot=None if jpeg else ev.snapshot, detail=tr.detail[:500],
        )
        stored = self.store.add_event(alert, jpeg)
        ev.snapshot = stored.snapshot or ev.snapshot
        if tr.state == "end":
            self.open.pop(tr.key, None)
        else:
            self.open[tr.key] = ev
        self.log.info("event", id=ev.id, type=tr.rule, state=tr.state, rev=ev.rev, score=alert.score,
                      detail=tr.detail, snapshot_bytes=len(jpeg) if jpeg else 0)
        if self.on_event is not None:
            try:
                self.on_event(stored)
            except Exception:  # noqa: BLE001
                self.log.exception("on_event_failed", id=ev.id)
        return stored
