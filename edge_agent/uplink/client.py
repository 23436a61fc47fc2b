"""The uplink: drains the outbox to the MQTT broker within the upload budget.

One thread owns the paho client (see mqtt_session.py), so no MQTT state is shared across threads.
Each round of the thread: run paho's network loop briefly, settle what the broker acknowledged
(delete from the outbox, one transaction), then hand the next messages to the socket, most urgent
and oldest first, while the in-flight window and the budget allow. Delivery is proven by PUBACK
with a success reason code; a refused PUBACK (e.g. 0x87 from an ACL) keeps the message, marked
refused, for a human. A CONNACK refusing the credentials stops reconnecting altogether.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog

import bk_contract
from edge_agent.config import UplinkConfig, resolve_secret
from edge_agent.errors import RetryLater
from edge_agent.outbox.priority import PRIORITY_NAMES
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.budget import UploadBudget
from edge_agent.uplink.reports import Inflight, StatusReporting, needs_human_reasons, status_payload
from edge_agent.uplink.session import (
    AUTH_FAILED_CODES,
    Connack,
    Disconnected,
    Event,
    Message,
    MqttSession,
    Puback,
    Will,
    publish_packet_size,
)

log = structlog.get_logger(__name__)

IDLE_POLL_S = 0.05
HOLD_MIN_S = 1.0  # first pause after a PUBACK "no matching subscribers"; doubles up to HOLD_MAX_S
HOLD_MAX_S = 30.0


class Uplink(StatusReporting):
    """Ships outbox messages over MQTT v5 QoS 1; see docs/uplink.md."""

    def __init__(self, cfg: UplinkConfig, *, device_id: str, outbox: Outbox, n_cameras: int,
                 status: Callable[[], list[bk_contract.CameraHealth]], version: str,
                 window: int = 20, reconnect_min_s: float = 0.5, refused_retry_s: float = 3600.0,
                 connect_timeout_s: float = 5.0, budget: UploadBudget | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 inference_ms: Callable[[], float] | None = None,
                 on_command: Callable[[bytes], None] | None = None) -> None:
        self.cfg = cfg
        self.on_command = on_command  # gets each `cmd` payload; must not block (hand it to a worker)
        self.telemetry_extras: Callable[[], dict] | None = None  # live_bps / ring_hours per camera (the Agent's)
        self.extra_problems: Callable[[], list[str]] | None = None  # e.g. a config rolled back (the Agent's)
        self.inference_ms = inference_ms  # the Agent's detector time, for telemetry
        self.device_id = device_id
        self.outbox = outbox
        self.n_cameras = n_cameras
        self.status = status
        self.version = version
        self.window = window
        self.reconnect_min_s = min(reconnect_min_s, cfg.reconnect_max_s)
        self.refused_retry_s = refused_retry_s
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock
        max_packet = publish_packet_size(bk_contract.topic(device_id, "media", media_id="x" * 64, seq=99999),
                                         cfg.chunk_bytes + 256, 1)
        self.budget = budget or UploadBudget.for_cameras(cfg.budget_kbps_per_camera, n_cameras,
                                                         max_packet=max_packet, clock=clock)
        self._log = log.bind(device=device_id, broker=f"{cfg.broker.host}:{cfg.broker.port}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters health() reads
        self._session: MqttSession | None = None
        self._state = "stopped"
        self._inflight: dict[int, Inflight] = {}
        self._acked: list[int] = []
        self._attempted: list[int] = []
        self._delay = self.reconnect_min_s
        self._hold_until = 0.0
        self._hold_delay = HOLD_MIN_S
        self._next_attempt = 0.0
        self._connect_started = 0.0
        self._poll_timeout = IDLE_POLL_S
        self._seen_changes = -1
        self._dirty = True
        self._next_telemetry = 0.0
        self._next_refused_check = 0.0
        self._last_cameras: list[dict] | None = None
        self._last_problems: list[str] = []
        self._problems_changed = False
        self._cpu_mark = (time.process_time(), time.monotonic())
        self.last_error = ""
        self.auth_failed = ""
        self.status_refused = ""
        self.counts = {"connect_attempts": 0, "connections": 0, "ack_timeouts": 0, "refusals": 0,
                       "telemetry_sent": 0, "telemetry_skipped": 0, "status_sent": 0,
                       "no_subscribers": 0}
        self.sent = dict.fromkeys(PRIORITY_NAMES.values(), 0)

    # --- public API ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("uplink already started")
        self._state = "connecting"
        self._thread = threading.Thread(target=self._run, name=f"uplink-{self.device_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def health(self) -> dict:
        """connected, state, last_error, needs_human (+ reasons), inflight, sent and refused counts, outbox."""
        stats = self.outbox.stats()
        with self._lock:
            reasons = needs_human_reasons(auth_failed=self.auth_failed, refused_total=stats["refused_total"],
                                          status_refused=self.status_refused)
            reasons += self.extra_problems() if self.extra_problems else []
            return {
                "connected": self._state == "connected",
                "state": self._state,
                "auth_failed": bool(self.auth_failed),
                "last_error": self.last_error,
                "needs_human": bool(reasons),
                "needs_human_reasons": reasons,
                "inflight": len(self._inflight),
                "sent": dict(self.sent),
                "refused": dict(stats["refused"]),
                "refused_messages": self.outbox.refused(5) if stats["refused_total"] else [],
                "budget_bps": self.budget.limit_bps,
                "budget_used_bps": self.budget.recent_bps(),
                "outbox": stats,
                **self.counts,
            }

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        self._log.info("uplink_start", window=self.window, budget_bps=self.budget.limit_bps,
                       refill_bps=round(self.budget.rate * 8))
        while not self._stop.is_set():
            try:
                self._round()
            except Exception as err:  # keep the uplink alive; the outbox still holds everything
                self._error(f"uplink round failed: {err!r}")
                self._log.exception("uplink_round_failed")
                self._drop_session(retry_in=self._delay)
                self._stop.wait(1.0)
        self._shutdown()

    def _round(self) -> None:
        now = self.clock()
        if self._state == "auth_failed":
            self._stop.wait(0.2)
            return
        if self._session is None:
            if now < self._next_attempt:
                self._stop.wait(min(0.1, self._next_attempt - now))
            else:
                self._open_session(now)
            return
        timeout, self._poll_timeout = self._poll_timeout, IDLE_POLL_S
        for event in self._session.poll(timeout):
            self._handle(event)
        self._settle()
        now = self.clock()
        if self._state == "connecting" and now - self._connect_started > self.connect_timeout_s:
            self._error(f"no CONNACK within {self.connect_timeout_s} s")
            self._drop_session(retry_in=self._backoff())
        if self._state != "connected" or self._session is None:
            return
        self._check_ack_timeouts(now)
        if self._session is not None:
            self._timers(now)
            self._pump()

    def _open_session(self, now: float) -> None:
        with self._lock:
            self.counts["connect_attempts"] += 1
        b = self.cfg.broker
        offline = status_payload(self.device_id, self.version, online=False)
        session = MqttSession(
            host=b.host, port=b.port, client_id=self.device_id, username=b.username or self.device_id,
            password=resolve_secret(b.password_env), keepalive_s=b.keepalive_s, tls=b.tls, ca_file=b.ca_file,
            will=Will(bk_contract.topic(self.device_id, "status"), offline), window=self.window,
            connect_timeout_s=self.connect_timeout_s)
        try:
            session.connect()
        except RetryLater as err:
            self._error(str(err))
            self._next_attempt = now + self._backoff()
            self._state = "backoff"
            return
        self._session = session
        self._state = "connecting"
        self._connect_started = now

    def _handle(self, event: Event) -> None:
        if isinstance(event, Puback):
            self._on_puback(event)
        elif isinstance(event, Message):
            if self.on_command is not None and event.topic == bk_contract.topic(self.device_id, "cmd"):
                self.on_command(event.payload)
        elif isinstance(event, Connack):
            self._on_connack(event)
        elif isinstance(event, Disconnected) and self._session is not None and self._state != "auth_failed":
            self._error(f"disconnected: {event.reason}")
            self._log.warning("broker_disconnected", reason=event.reason, code=event.code,
                              inflight=len(self._inflight))
            self._drop_session(retry_in=self._backoff())

    def _on_connack(self, ack: Connack) -> None:
        if ack.ok:
            with self._lock:
                self._state = "connected"
                self.counts["connections"] += 1
            self._delay = self.reconnect_min_s
            self._dirty = True
            self._next_telemetry = self.clock()
            self._next_refused_check = self.clock() + min(self.refused_retry_s, 60.0)
            retried = self.outbox.retry_refused(0.0)  # a new connection is a rare event: refused get one more try
            self._log.info("broker_connected", retried_refused=retried)
            if self.on_command is not None and self._session is not None:
                self._session.subscribe(bk_contract.topic(self.device_id, "cmd"))
            self._publish_status(online=True)
            return
        if ack.auth_failed:
            with self._lock:
                self.auth_failed = f"CONNACK 0x{ack.code:02X} {AUTH_FAILED_CODES[ack.code]}"
                self._state = "auth_failed"
            self._error(f"needs a human: {self.auth_failed}")
            self._log.error("broker_auth_failed", code=hex(ack.code), reason=ack.reason, needs_human=True,
                            username=self.cfg.broker.username or self.device_id)
            self._drop_session(retry_in=None)
            return
        self._error(f"CONNACK refused 0x{ack.code:02X} {ack.reason}")
        self._log.warning("broker_connack_refused", code=hex(ack.code), reason=ack.reason)
        self._drop_session(retry_in=self._backoff())

    def _on_puback(self, ack: Puback) -> None:
        entry = self._inflight.pop(ack.mid, None)
        if entry is None:
            return  # QoS 0 write notifications, or a message of an earlier connection
        if ack.no_subscribers and entry.seq is not None:
            self._hold(entry)
            return
        if ack.ok:
            if ack.code == 0:
                self._hold_delay = HOLD_MIN_S
            if entry.seq is not None:  # status messages are not outbox traffic: counted in status_sent
                self._acked.append(entry.seq)
                with self._lock:
                    self.sent[PRIORITY_NAMES[entry.priority]] += 1
            return
        reason = f"PUBACK 0x{ack.code:02X} {ack.reason}"
        self._log.error("publish_refused", topic=entry.topic, code=hex(ack.code), reason=ack.reason, needs_human=True)
        with self._lock:
            self.counts["refusals"] += 1
        if entry.seq is None:
            with self._lock:
                self.status_refused = f"{entry.topic}: {reason}"
        else:
            self.outbox.mark_refused(entry.seq, ack.code, reason)
        self._problems_changed = True

    def _settle(self) -> None:
        if self._acked or self._attempted:
            self.outbox.ack(self._acked, attempted=self._attempted)
            self._acked, self._attempted = [], []

    def _check_ack_timeouts(self, now: float) -> None:
        if not self._inflight:
            return
        oldest = min(e.sent_at for e in self._inflight.values())
        if now - oldest > self.cfg.ack_timeout_s:
            with self._lock:
                self.counts["ack_timeouts"] += 1
            self._error(f"no PUBACK within {self.cfg.ack_timeout_s} s")
            self._log.warning("ack_timeout", inflight=len(self._inflight), timeout_s=self.cfg.ack_timeout_s)
            # MQTT resends a QoS 1 message only on a new connection; drop this one and reconnect now.
            self._drop_session(retry_in=0.0)

    def _hold(self, entry: Inflight) -> None:
        """Nobody subscribes to what we send: keep the message and pause sending, with back-off."""
        now = self.clock()
        with self._lock:
            self.counts["no_subscribers"] += 1
        if now >= self._hold_until:
            self._hold_until = now + self._hold_delay
            self._log.warning("no_subscribers", topic=entry.topic, pause_s=self._hold_delay,
                              hint="the cloud receivers are not subscribed; messages stay in the outbox")
            self._hold_delay = min(self._hold_delay * 2, HOLD_MAX_S)
        self._dirty = True

    def _pump(self) -> None:
        assert self._session is not None
        if self.clock() < self._hold_until:
            self._poll_timeout = min(IDLE_POLL_S, max(0.001, self._hold_until - self.clock()))
            return
        changes = self.outbox.changes
        if not self._dirty and changes == self._seen_changes:
            return
        while len(self._inflight) < self.window:
            # in flight, and done (QoS 0 once on the socket, QoS 1 acknowledged) but not yet settled in the outbox
            exclude = [e.seq for e in self._inflight.values() if e.seq is not None] + self._acked
            batch = self.outbox.next_pending(exclude=exclude, limit=1)
            if not batch:
                self._dirty, self._seen_changes = False, changes
                return
            msg = batch[0]
            size = publish_packet_size(msg.topic, len(msg.payload), msg.qos)
            if not self.budget.try_take(size, msg.priority):
                self._poll_timeout = min(IDLE_POLL_S, max(0.001, self.budget.delay_for(size, msg.priority)))
                return
            try:
                mid = self._session.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            except RetryLater as err:
                self._error(str(err))
                self._drop_session(retry_in=self._backoff())
                return
            self._attempted.append(msg.seq)
            if msg.qos == 0:
                self._acked.append(msg.seq)  # QoS 0 has no acknowledgement: done once on the socket
                with self._lock:
                    self.sent[PRIORITY_NAMES[msg.priority]] += 1
            else:
                with self._lock:
                    self._inflight[mid] = Inflight(msg.seq, msg.priority, self.clock(), msg.topic)
        self._dirty = True  # window full: look again when acknowledgements free it

    # --- helpers -------------------------------------------------------------------------
    def _backoff(self) -> float:
        delay = self._delay * random.uniform(0.8, 1.0)
        self._delay = min(self._delay * 2, self.cfg.reconnect_max_s)
        return delay

    def _error(self, text: str) -> None:
        with self._lock:
            self.last_error = text

    def _drop_session(self, *, retry_in: float | None) -> None:
        """Forget the connection and its in-flight messages (still pending in the outbox)."""
        self._settle()
        self._close_session("backoff")
        self._dirty = True
        if retry_in is not None:
            self._next_attempt = self.clock() + retry_in

    def _shutdown(self) -> None:
        if self._session is not None and self._state == "connected":
            self._publish_status(online=False)  # a clean disconnect suppresses the will: say it ourselves
            deadline = self.clock() + 1.0
            while self._session is not None and self._inflight and self.clock() < deadline:
                for event in self._session.poll(0.05):
                    if isinstance(event, Puback):
                        self._on_puback(event)
            self._settle()
        self._close_session("stopped")
        self._log.info("uplink_stopped")

    def _close_session(self, state: str) -> None:
        """Close the connection; what was in flight is still pending in the outbox."""
        if self._session is not None:
            self._session.close()
            self._session = None
        with self._lock:
            self._inflight.clear()
            if self._state != "auth_failed":
                self._state = state


__all__ = ["Uplink"]
