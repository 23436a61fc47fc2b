"""What the uplink reports: status and telemetry payloads (pure builders), needs-a-human reasons,
and the `StatusReporting` part of the Uplink that publishes status and telemetry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bk_contract
from edge_agent.errors import RetryLater
from edge_agent.outbox.priority import Priority
from edge_agent.uplink.session import publish_packet_size

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def status_payload(device_id: str, version: str, *, online: bool,
                   cameras: list[bk_contract.CameraHealth] | None = None, problems: list[str] | None = None) -> bytes:
    """JSON of a retained `Status` (also the last will when online is False)."""
    return bk_contract.Status(device_id=device_id, online=online, version=version, ts=datetime.now(UTC),
                              cameras=cameras or [], problems=(problems or [])[:20]).model_dump_json().encode()


def telemetry_payload(device_id: str, cameras: list[bk_contract.CameraHealth], outbox_stats: dict, *,
                      cpu_percent: float, budget_bps: float, temperature_c: float | None,
                      inference_ms: float = 0.0, extras: dict | None = None) -> bytes:
    """JSON of one `Telemetry` reading; `extras` adds the per-camera live and recording figures."""
    return bk_contract.Telemetry(
        device_id=device_id, ts=datetime.now(UTC), fps={c.id: c.fps for c in cameras},
        cpu_percent=round(cpu_percent, 1), temperature_c=temperature_c, inference_ms=round(inference_ms, 1),
        outbox_depth=outbox_stats["depth_total"], outbox_dropped=outbox_stats["dropped_total"],
        outbox_dropped_by_priority={k: v for k, v in outbox_stats["dropped"].items() if v},
        outbox_refused=outbox_stats["refused_total"], budget_bps=budget_bps, **(extras or {}),
    ).model_dump_json().encode()


def camera_states(cameras: list[bk_contract.CameraHealth]) -> list[dict]:
    """What decides a status republish: everything but the (always changing) fps."""
    return [c.model_dump(exclude={"fps"}) for c in cameras]


def needs_human_reasons(*, auth_failed: str, refused_total: int, status_refused: str) -> list[str]:
    """Why an installer or operator must act; empty when nothing needs one."""
    reasons = []
    if auth_failed:
        reasons.append(f"auth failed: broker refused the credentials ({auth_failed})")
    if refused_total:
        reasons.append(f"{refused_total} message(s) refused by the broker (ACL?), kept in the outbox")
    if status_refused:
        reasons.append(f"status refused by the broker: {status_refused}")
    return reasons


def temperature(path: Path = THERMAL_ZONE) -> float | None:
    """SoC temperature in °C from the first thermal zone, if the box has one."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1) if path.exists() else None
    except (OSError, ValueError):
        return None


@dataclass(slots=True)
class Inflight:
    """A publish handed to the socket and waiting for its PUBACK."""

    seq: int | None  # None: a control message (status) that is not in the outbox
    priority: Priority
    sent_at: float
    topic: str


class StatusReporting:
    """Status and telemetry publishing of `edge_agent.uplink.client.Uplink` (runs on the uplink thread;
    uses the Uplink's session, budget, outbox, lock and counters)."""

    def _cameras(self) -> list[bk_contract.CameraHealth]:
        try:
            return list(self.status())
        except Exception as err:
            self._log.warning("status_callable_failed", error=repr(err))
            return []

    def _inference_ms(self) -> float:
        try:
            return float(self.inference_ms()) if self.inference_ms is not None else 0.0
        except Exception as err:  # noqa: BLE001 - telemetry never stops the uplink
            self._log.warning("inference_ms_callable_failed", error=repr(err))
            return 0.0

    def _publish_status(self, *, online: bool) -> None:
        if self._session is None:
            return
        cameras = self._cameras() if online else []
        self._last_cameras = camera_states(cameras)
        problems = self.health()["needs_human_reasons"] if online else []
        self._last_problems = problems
        payload = status_payload(self.device_id, self.version, online=online, cameras=cameras, problems=problems)
        topic = bk_contract.topic(self.device_id, "status")
        self.budget.charge(publish_packet_size(topic, len(payload), 1), Priority.ALERT)
        try:
            mid = self._session.publish(topic, payload, qos=1, retain=True)
        except RetryLater as err:
            self._error(str(err))
            return
        with self._lock:
            self._inflight[mid] = Inflight(None, Priority.ALERT, self.clock(), topic)
            self.counts["status_sent"] += 1

    def _timers(self, now: float) -> None:
        if now >= self._next_refused_check:
            self._next_refused_check = now + min(self.refused_retry_s, 60.0)
            if self.outbox.retry_refused(self.refused_retry_s):
                self._dirty = True
        if self._problems_changed:
            # what needs a human goes into the retained status at once, not at the next telemetry tick
            self._problems_changed = False
            if self.health()["needs_human_reasons"] != getattr(self, "_last_problems", []):
                self._publish_status(online=True)
        if now < self._next_telemetry:
            return
        self._next_telemetry = now + self.cfg.telemetry_s
        cameras = self._cameras()
        if camera_states(cameras) != self._last_cameras:
            self._publish_status(online=True)
        self._publish_telemetry(cameras)

    def _publish_telemetry(self, cameras: list[bk_contract.CameraHealth]) -> None:
        assert self._session is not None
        stats = self.outbox.stats()
        cpu, wall = time.process_time(), time.monotonic()
        cpu_pct = 100.0 * (cpu - self._cpu_mark[0]) / max(1e-6, wall - self._cpu_mark[1])
        self._cpu_mark = (cpu, wall)
        payload = telemetry_payload(self.device_id, cameras, stats, cpu_percent=cpu_pct,
                                    budget_bps=self.budget.limit_bps, temperature_c=temperature(),
                                    inference_ms=self._inference_ms(),
                                    extras=self.telemetry_extras() if self.telemetry_extras else None)
        topic = bk_contract.topic(self.device_id, "telemetry")
        if not self.budget.try_take(publish_packet_size(topic, len(payload), 0), Priority.TELEMETRY):
            with self._lock:
                self.counts["telemetry_skipped"] += 1  # stale telemetry is worthless: skip, do not queue
            return
        try:
            self._session.publish(topic, payload, qos=0)
        except RetryLater as err:
            self._error(str(err))
            return
        with self._lock:
            self.counts["telemetry_sent"] += 1
            self.sent["telemetry"] += 1
        if stats["dropped_total"]:
            self._log.warning("outbox_dropped_total", dropped=stats["dropped"], dropped_bytes=stats["dropped_bytes"])

