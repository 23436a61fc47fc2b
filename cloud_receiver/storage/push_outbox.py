"""The push outbox: robot messages owed for stored alerts, kept in the database so none is lost.

When a new alert is stored, `Queuer.queue` adds one row per enabled robot whose scope matches the
alert (its canteen, or a prefix of its canteen's jurisdiction code) inside the alert's own
transaction: an alert is never stored without the pushes it is owed. The push router of the same
receiver (`owner`: its MQTT client id, unique per receiver and stable across restarts) reads its
pending rows when alerts are announced and when it starts, and marks them sent once the robot has
accepted the message. A receiver stopped or killed with rows pending sends them after its restart.
Later revisions of an alert owe nothing (the first one was pushed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


def robot_matches(scope_kind: str, scope: str, canteen_id: str | None, jurisdiction: str | None) -> bool:
    """Whether a robot configured for (scope_kind, scope) is responsible for a canteen's alerts."""
    if scope_kind == "canteen":
        return bool(canteen_id) and scope == canteen_id
    return scope_kind == "jurisdiction" and bool(jurisdiction) and (jurisdiction or "").startswith(scope)


class Queuer:
    """Queues the pushes of new alerts. Caches the enabled robots and canteen jurisdictions for one
    transaction: call `reset()` when a transaction starts, so changes made meanwhile (a robot added by
    the CLI in another process) apply from the next transaction on."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.reset()

    def reset(self) -> None:
        self._hooks: list[tuple[str, str, str]] | None = None
        self._jurisdiction: dict[str, str | None] = {}

    def queue(self, conn: sqlite3.Connection, alert_id: str, canteen_id: str | None, at: str) -> int:
        """Owe the alert to every responsible robot (inside the caller's transaction); how many rows were added."""
        if self._hooks is None:
            self._hooks = conn.execute("SELECT id, scope_kind, scope FROM webhooks WHERE enabled = 1 ORDER BY id").fetchall()
        if not self._hooks:
            return 0
        if canteen_id and canteen_id not in self._jurisdiction:
            found = conn.execute("SELECT jurisdiction FROM canteens WHERE id = ?", (canteen_id,)).fetchone()
            self._jurisdiction[canteen_id] = found[0] if found else None
        jurisdiction = self._jurisdiction.get(canteen_id) if canteen_id else None
        added = 0
        for robot_id, scope_kind, scope in self._hooks:
            if robot_matches(scope_kind, scope, canteen_id, jurisdiction):
                added += conn.execute("INSERT OR IGNORE INTO push_outbox (owner, robot_id, alert_id, created_at)"
                                      " VALUES (?, ?, ?, ?)", (self.owner, robot_id, alert_id, at)).rowcount
        return added


@dataclass(frozen=True, slots=True)
class Owed:
    id: int
    robot_id: str
    alert_id: str
    attempts: int


def pending(conn: sqlite3.Connection, owner: str, after_id: int = 0, limit: int = 1000) -> list[Owed]:
    """Unsent rows of `owner` with an id above `after_id`, oldest first."""
    rows = conn.execute("SELECT id, robot_id, alert_id, attempts FROM push_outbox WHERE owner = ? AND sent_at IS NULL"
                        " AND id > ? ORDER BY id LIMIT ?", (owner, after_id, limit)).fetchall()
    return [Owed(*r) for r in rows]


def mark_sent(conn: sqlite3.Connection, ids: Sequence[int], at: str) -> None:
    conn.executemany("UPDATE push_outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?", [(at, i) for i in ids])


def mark_failed(conn: sqlite3.Connection, ids: Sequence[int], error: str) -> None:
    conn.executemany("UPDATE push_outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                     [(error[:500], i) for i in ids])
