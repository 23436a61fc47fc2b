"""Rule transitions become `bk_contract.Alert`s: one ULID per event, rev growing, snapshot attached.

Each alert goes to `outbox.add_event(alert, jpeg)` (stored and queued before anything else) and
then to `on_event` with the stored alert (its `snapshot` MediaRef filled by the outbox).

A transition's frame is a handle: an av.VideoFrame (or array) to draw on, or a `clips.Moment`
whose `picture()` decodes the main stream at that moment. When the handle can cut a clip
(`request_clip`) and the store takes media (`add_media`), an event start asks for one; when the
clip is ready (on the camera's clip thread) it is stored as media and the event is sent again
with the next rev and `clip` set: as `update`, or as `end` again when it has ended meanwhile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from ulid import ULID

from bk_contract import Alert, AlertBox, MediaRef
from edge_agent.events.snapshot import render_snapshot, scale_marks
from edge_agent.outbox.priority import Priority
from edge_agent.rules.engine import Transition

log = structlog.get_logger(__name__)


MAX_CLIPS_PENDING = 64  # events remembered for a clip still being recorded


class EventStore(Protocol):
    def add_event(self, alert: Alert, snapshot: bytes | None = None) -> Alert: ...


@dataclass
class _Open:
    id: str
    rev: int
    snapshot: MediaRef | None
    size: tuple[int, int] | None  # snapshot pixel size, the space of the alert boxes
    boxes: list[AlertBox]
    clip: MediaRef | None = None
    last: Alert | None = None  # the last alert stored, the base of a clip revision


def picture_of(handle: object) -> object:
    """The picture to draw a snapshot on: a Moment is resolved (decoded), anything else used as is."""
    picture = getattr(handle, "picture", None)
    return picture() if callable(picture) else handle


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class EventEmitter:
    """Turns one camera's transitions into stored alerts."""

    def __init__(self, device_id: str, camera_id: str, store: EventStore,
                 on_event: Callable[[Alert], None] | None = None,
                 snapshot_source: Callable[[object], object] | None = None, *, clips: bool = True) -> None:
        self.device_id = device_id
        self.camera_id = camera_id
        self.store = store
        self.on_event = on_event
        # maps a transition's frame handle to the picture to draw on (e.g. the main stream's frame)
        self.snapshot_source = snapshot_source or picture_of
        self.clips = clips and callable(getattr(store, "add_media", None))
        self.open: dict[str, _Open] = {}
        self.awaiting_clip: OrderedDict[str, _Open] = OrderedDict()
        self._lock = threading.Lock()  # the inference thread emits, a camera's clip thread attaches clips
        self.log = log.bind(camera=camera_id)

    def emit(self, tr: Transition) -> Alert | None:
        """Store and announce one transition; errors are logged, never raised (the pipeline goes on)."""
        try:
            with self._lock:
                alert, ev = self._emit(tr)
        except Exception:  # noqa: BLE001 - a failing store must not stop detection on this camera
            self.log.exception("event_store_failed", type=tr.rule, state=tr.state)
            return None
        self._announce(alert)
        if tr.state == "start" and self.clips:
            self._request_clip(tr.frame, ev)
        return alert

    def _request_clip(self, handle: object, ev: _Open) -> None:
        request = getattr(handle, "request_clip", None)
        if not callable(request):
            return
        with self._lock:
            self.awaiting_clip[ev.id] = ev
            while len(self.awaiting_clip) > MAX_CLIPS_PENDING:
                self.awaiting_clip.popitem(last=False)
        if not request(lambda data: self.attach_clip(ev.id, data)):
            with self._lock:
                self.awaiting_clip.pop(ev.id, None)

    def attach_clip(self, event_id: str, data: bytes) -> Alert | None:
        """Store a finished clip and send its event again (next rev, `clip` set, same state)."""
        try:
            with self._lock:
                ev = self.awaiting_clip.pop(event_id, None)
                if ev is None or ev.last is None:
                    self.log.warning("clip_without_event", id=event_id)
                    return None
                ref = self.store.add_media(data, "video/mp4", priority=Priority.CLIP)
                ev.rev += 1
                ev.clip = ref
                state = "end" if ev.last.state == "end" else "update"  # never reopen an ended event
                alert = ev.last.model_copy(update={"rev": ev.rev, "clip": ref, "snapshot": ev.snapshot,
                                                   "state": state})
                stored = self.store.add_event(alert, None)
                ev.last = stored
        except Exception:  # noqa: BLE001
            self.log.exception("clip_store_failed", id=event_id)
            return None
        self.log.info("event_clip", id=event_id, rev=stored.rev, state=stored.state, clip_bytes=ref.bytes)
        self._announce(stored)
        return stored

    def _announce(self, alert: Alert) -> None:
        if self.on_event is not None:
            try:
                self.on_event(alert)
            except Exception:  # noqa: BLE001
                self.log.exception("on_event_failed", id=alert.id)

    def _emit(self, tr: Transition) -> tuple[Alert, _Open]:
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
            snapshot=None if jpeg else ev.snapshot, clip=ev.clip, detail=tr.detail[:500],
        )
        stored = self.store.add_event(alert, jpeg)
        ev.snapshot = stored.snapshot or ev.snapshot
        ev.last = stored
        if tr.state == "end":
            self.open.pop(tr.key, None)
        else:
            self.open[tr.key] = ev
        self.log.info("event", id=ev.id, type=tr.rule, state=tr.state, rev=ev.rev, score=alert.score,
                      detail=tr.detail, snapshot_bytes=len(jpeg) if jpeg else 0)
        return stored, ev
