"""The push outbox: robot messages owed for stored alerts, kept in the database so none is lost.

When a new alert is stored, `Queuer.queue` adds one row per enabled robot whose scope matches the
alert (its canteen, or a prefix of its canteen's jurisdiction code) inside the alert's own
transaction: an alert is never stored without the pushes it is owed. The row is claimed at once by
the receiver that stored it (`owner`: its MQTT client id, unique per receiver and stable across
restarts) for `LEASE_S`. A receiver's push router `claim`s rows to send: its own, and any whose
lease ran out (their receiver died or was retired) — on PostgreSQL with `FOR UPDATE SKIP LOCKED`,
so two receivers never take the same row; it renews the lease of what it still holds on every
scan, and marks a row sent once the robot accepted it. Later revisions of an alert owe nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from cloud_receiver.storage.db import Db, iso, parse_iso
from cloud_receiver.storage.schema import push_outbox

LEASE_S = 300.0  # a claim lasts this long unless renewed (config push.claim_lease_s; the router renews it
# at least four times per lease)


def robot_matches(scope_kind: str, scope: str, canteen_id: str | None, jurisdiction: str | None) -> bool:
    """Whether a robot configured for (scope_kind, scope) is responsible for a canteen's alerts."""
    if scope_kind == "canteen":
        return bool(canteen_id) and scope == canteen_id
    return scope_kind == "jurisdiction" and bool(jurisdiction) and (jurisdiction or "").startswith(scope)


def lease_end(at: str | datetime, lease_s: float = LEASE_S) -> str:
    start = parse_iso(at) if isinstance(at, str) else at
    return iso(start + timedelta(seconds=lease_s)) or ""


class Queuer:
    """Queues the pushes of new alerts on the ingest writer's own driver connection (sqlite3 or psycopg;
    `placeholder` is its parameter mark). Caches the enabled robots and canteen jurisdictions for one
    transaction: call `reset()` when a transaction starts, so changes made meanwhile (a robot added by
    the CLI in another process) apply from the next transaction on."""

    def __init__(self, owner: str, placeholder: str = "?", lease_s: float = LEASE_S) -> None:
        self.owner, self.lease_s = owner, lease_s
        q = placeholder
        self._sql_hooks = "SELECT id, scope_kind, scope FROM webhooks WHERE enabled = 1 ORDER BY id"
        self._sql_jurisdiction = f"SELECT jurisdiction FROM canteens WHERE id = {q}"
        self._sql_insert = (f"INSERT INTO push_outbox (owner, robot_id, alert_id, created_at, claim_until)"
                            f" VALUES ({q}, {q}, {q}, {q}, {q}) ON CONFLICT (robot_id, alert_id) DO NOTHING")
        self.reset()

    def reset(self) -> None:
        self._hooks: list[tuple[Any, ...]] | None = None
        self._asked: Any = None  # the cursor of the robots' query sent by `prefetch`
        self._jurisdiction: dict[str, str | None] = {}

    def prefetch(self, conn: Any) -> None:
        """Send the robots' query now (a transaction in psycopg's pipeline mode reads its answer with the
        others', without a round trip of its own)."""
        self._asked = conn.execute(self._sql_hooks)

    def queue(self, conn: Any, alert_id: str, canteen_id: str | None, at: str) -> int:
        """Owe the alert to every responsible robot (inside the caller's transaction); how many rows were added."""
        if self._hooks is None:
            asked, self._asked = conn.execute(self._sql_hooks) if self._asked is None else self._asked, None
            self._hooks = [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in asked.fetchall()]
        if not self._hooks:
            return 0
        if canteen_id and canteen_id not in self._jurisdiction:
            found = conn.execute(self._sql_jurisdiction, (canteen_id,)).fetchone()
            value = (found["jurisdiction"] if isinstance(found, dict) else found[0]) if found else None
            self._jurisdiction[canteen_id] = value
        jurisdiction = self._jurisdiction.get(canteen_id) if canteen_id else None
        added = 0
        for robot_id, scope_kind, scope in self._hooks:
            if robot_matches(scope_kind, scope, canteen_id, jurisdiction):
                added += conn.execute(self._sql_insert, (self.owner, robot_id, alert_id, at, lease_end(at, self.lease_s))).rowcount
        return added


@dataclass(frozen=True, slots=True)
class Owed:
    id: int
    robot_id: str
    alert_id: str
    attempts: int


def claim(db: Db, owner: str, now: datetime, after_id: int = 0, limit: int = 1000,
          lease_s: float = LEASE_S) -> list[Owed]:
    """Claim (or renew) unsent rows above `after_id` that are `owner`'s or whose lease ran out, oldest first."""
    o = push_outbox.c
    free = sa.or_(o.owner == owner, o.claim_until.is_(None), o.claim_until < iso(now))
    pick = (sa.select(o.id, o.robot_id, o.alert_id, o.attempts).where(o.sent_at.is_(None), o.id > after_id, free)
            .order_by(o.id).limit(limit).with_for_update(skip_locked=True))
    with db.write() as conn:
        rows = db.all(pick, conn)
        if rows:
            conn.execute(push_outbox.update().where(o.id.in_([r["id"] for r in rows]))
                         .values(owner=owner, claim_until=lease_end(now, lease_s)))
    return [Owed(r["id"], r["robot_id"], r["alert_id"], r["attempts"]) for r in rows]


def mark_sent(db: Db, ids: Sequence[int], at: str) -> None:
    with db.write() as conn:
        conn.execute(push_outbox.update().where(push_outbox.c.id.in_(list(ids)))
                     .values(sent_at=at, attempts=push_outbox.c.attempts + 1))


def mark_failed(db: Db, ids: Sequence[int], error: str) -> None:
    with db.write() as conn:
        conn.execute(push_outbox.update().where(push_outbox.c.id.in_(list(ids)))
                     .values(attempts=push_outbox.c.attempts + 1, last_error=error[:500]))
