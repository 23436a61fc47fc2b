"""Live sessions of a box: started and renewed by the cloud's `live_start`, ended by `live_stop` or by
nobody renewing within `idle_timeout_s` (a viewer that went away costs no upload for long).

The camera's decode thread offers each decoded frame (`offer`: a dictionary lookup when nobody
watches); a session keeps only the newest frame waiting and encodes on its own thread, so a slow
encoder drops frames instead of slowing decoding. Pieces go to the outbox as QoS 0 at live priority
(after alerts, snapshots and clips in the upload budget) on `bk/v1/{device_id}/live/{camera_id}`; each
new GOP drops what of the camera's older GOPs is still queued (while an alert clip takes the budget a
viewer gets the start of every GOP, never video minutes old).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

import bk_contract
from bk_contract import fmp4
from edge_agent.live.encoder import LiveEncoder, LiveProfile
from edge_agent.outbox.priority import Priority

log = structlog.get_logger(__name__)

ADAPT_EVERY_S = 2.0  # how often a session compares its rate with what the budget leaves
ADAPT_TOLERANCE = 0.25  # a new encoder only when the rate is this far off (each costs an init and a keyframe)
LIVE_SHARE = 0.9  # of what the budget leaves live: the pieces' own variation stays inside it
MIN_BPS = 64_000  # below this a 640x360 picture is mush; the stale-GOP drop takes over instead


class LiveSession:
    def __init__(self, manager: LiveManager, camera_id: str, until: float) -> None:
        self.manager, self.camera_id, self.until = manager, camera_id, until
        self.started = manager.clock()
        self._frame: tuple[Any, float] | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self.encoder: LiveEncoder | None = None
        self.frames_before = self.bytes_before = 0  # of the encoders replaced when the rate changed
        self.error = ""
        self.thread = threading.Thread(target=self._run, name=f"bk-live-{camera_id}", daemon=True)

    def offer(self, frame: Any, t: float) -> None:
        with self._cond:
            self._frame = (frame, t)  # the newest wins: a frame the encoder did not take in time is dropped
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def totals(self) -> tuple[int, int]:
        """Frames and bytes encoded so far, over every encoder of the session."""
        enc = self.encoder
        return self.frames_before + (enc.frames if enc else 0), self.bytes_before + (enc.bytes_out if enc else 0)

    def _adapt(self) -> None:
        """Follow what the upload budget leaves live: a new encoder (its init segment and a keyframe first) when
        the rate it should have is a quarter off the one it has. The browser plays on (its buffer is in
        sequence mode), and the new GOP supersedes what of the old encoder's pieces is still queued."""
        enc, target = self.encoder, self.manager.target_bps()
        if enc is None or target is None:
            return
        now = enc.profile.bitrate_bps
        if abs(target - now) <= ADAPT_TOLERANCE * now:
            return
        log.info("live_rate", camera=self.camera_id, bitrate_bps=target, was=now)
        self.frames_before += enc.frames
        self.bytes_before += enc.bytes_out
        enc.close()
        self.encoder = LiveEncoder(replace(self.manager.profile, bitrate_bps=target))

    def _run(self) -> None:
        m = self.manager
        topic = bk_contract.topic(m.device_id, "live", camera_id=self.camera_id)
        try:
            self.encoder = LiveEncoder(m.profile)
            checked = m.clock()
            while True:
                if m.clock() - checked >= ADAPT_EVERY_S:
                    checked = m.clock()
                    self._adapt()
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped or self._frame is not None, timeout=0.5)
                    if self._stopped or m.clock() > self.until:
                        break
                    item, self._frame = self._frame, None
                if item is None:
                    continue
                for piece in self.encoder.feed(*item):
                    # a new GOP (its init segment first) supersedes what of the older ones is still queued
                    m.outbox.add_message(topic, piece, qos=0, priority=Priority.LIVE, group=f"live:{self.camera_id}",
                                         supersede=fmp4.is_init(piece))
        except Exception as err:  # noqa: BLE001 - a broken encoder ends the session, not the box
            self.error = repr(err)
            log.exception("live_session_failed", camera=self.camera_id)
        finally:
            if self.encoder is not None:
                self.encoder.close()
            m.ended(self)


class LiveManager:
    def __init__(self, device_id: str, outbox: Any, profile: LiveProfile | None = None, *,
                 idle_timeout_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 uplink: Callable[[], Any] | None = None) -> None:
        self.device_id, self.outbox = device_id, outbox
        self.profile = profile or LiveProfile()
        self.uplink = uplink  # the box's uplink (its `budget`), asked for what live may spend
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()
        self.sessions_started = 0

    def start(self, camera_id: str) -> dict[str, Any]:
        """Start live for a camera, or renew it: it runs until `idle_timeout_s` after the last call."""
        until = self.clock() + self.idle_timeout_s
        with self._lock:
            session = self._sessions.get(camera_id)
            if session is not None and session.thread.is_alive():
                session.until = until
                return {"camera_id": camera_id, "renewed": True, "bitrate_bps": self.profile.bitrate_bps}
            session = LiveSession(self, camera_id, until)
            self._sessions[camera_id] = session
            self.sessions_started += 1
        session.thread.start()
        log.info("live_started", camera=camera_id, width=self.profile.width, height=self.profile.height,
                 fps=self.profile.fps, bitrate_bps=self.profile.bitrate_bps)
        return {"camera_id": camera_id, "renewed": False, "bitrate_bps": self.profile.bitrate_bps}

    def target_bps(self) -> int | None:
        """The rate each live camera should encode at: its share of what the upload budget leaves live
        (`UploadBudget.spare_bps`), at most the profile's, at least `MIN_BPS`; None without a budget."""
        budget = getattr(self.uplink() if self.uplink else None, "budget", None)
        if budget is None:
            return None
        share = budget.spare_bps(Priority.LIVE) * LIVE_SHARE / max(1, len(self._sessions))
        return int(max(MIN_BPS, min(self.profile.bitrate_bps, share)))

    def stop(self, camera_id: str) -> bool:
        with self._lock:
            session = self._sessions.pop(camera_id, None)
        if session is None:
            return False
        session.stop()
        return True

    def offer(self, camera_id: str, frame: Any, t: float) -> None:
        """From a decode thread: the frame, if someone watches this camera."""
        session = self._sessions.get(camera_id)
        if session is not None:
            session.offer(frame, t)

    def ended(self, session: LiveSession) -> None:
        with self._lock:
            if self._sessions.get(session.camera_id) is session:
                del self._sessions[session.camera_id]
        frames, sent = session.totals()
        log.info("live_stopped", camera=session.camera_id, frames=frames, bytes=sent, error=session.error or None)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per watched camera: seconds live, frames and bytes sent, the mean bitrate."""
        now = self.clock()
        out = {}
        for cam, s in list(self._sessions.items()):
            age = max(1e-3, now - s.started)
            frames, sent = s.totals()
            out[cam] = {"live_s": round(age, 1), "frames": frames, "bitrate_bps": round(sent * 8 / age)}
        return out

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.stop()
        for s in sessions:
            s.thread.join(2)
