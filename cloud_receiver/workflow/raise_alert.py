"""Alerts the receiver raises itself (not sent by a box): the row, its export-feed row and the pushes it
owes, in one transaction.

A box's alert is stored by ingest (`storage.*.upsert_alert`, whose outbox rows `push_outbox.Queuer`
adds). An alert the receiver makes — a public report (web/public_report.py), and what the ledger
rules find (ledgers/runner.py) — is a complete `alerts` row
given to `insert_alerts` inside the caller's transaction, so it can be written together with the
caller's own rows. An id already stored is skipped. On PostgreSQL, `channel` (the storage's NOTIFY
channel) tells every receiver of the new ids in the same transaction, as ingest does
(cloud_receiver/ingest/pg_notify.py); the caller announces the rows it gets back (AlertHub.publish),
which also wakes the push router.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cloud_receiver.storage.alert_notify import notify_payloads, notify_token
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.push_outbox import lease_end, robot_matches
from cloud_receiver.storage.schema import alert_changes, alerts, canteens, push_outbox, webhooks


def _insert(db: Db, row: dict[str, Any]) -> Any:
    """INSERT that does nothing when the id is stored already (RETURNING tells which: the rowcount of an
    INSERT … ON CONFLICT is -1 through psycopg)."""
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    return insert(alerts).values(**row).on_conflict_do_nothing(index_elements=["id"]).returning(alerts.c.id)


def insert_alerts(db: Db, conn: sa.Connection, rows: Iterable[dict[str, Any]], owner: str, now: datetime,
                  channel: str | None = None) -> list[str]:
    """Store the alert rows not stored yet, with their export-feed rows and the pushes they owe (one
    `push_outbox` row per enabled robot of the alert's canteen or jurisdiction, claimed by `owner`);
    returns the ids stored new. Runs in the caller's transaction `conn`."""
    w = webhooks.c
    hooks = db.all(sa.select(w.id, w.scope_kind, w.scope).where(w.enabled == 1).order_by(w.id), conn)
    jurisdiction: dict[str, str | None] = {}
    new: list[str] = []
    tokens: list[str] = []
    for row in rows:
        if conn.execute(_insert(db, row)).first() is None:  # stored already
            continue
        new.append(row["id"])
        tokens.append(notify_token(row["id"], row["rev"]))
        conn.execute(alert_changes.insert().values(alert_id=row["id"], kind="created", at=iso(now)))
        canteen = row.get("canteen_id")
        if hooks and canteen not in jurisdiction:
            jurisdiction[canteen] = db.scalar(sa.select(canteens.c.jurisdiction).where(canteens.c.id == canteen), conn)
        owed = [{"owner": owner, "robot_id": h["id"], "alert_id": row["id"], "created_at": iso(now),
                 "claim_until": lease_end(now)} for h in hooks
                if robot_matches(h["scope_kind"], h["scope"], canteen, jurisdiction.get(canteen))]
        if owed:
            conn.execute(push_outbox.insert(), owed)
    if tokens and channel and db.dialect == "postgresql":
        for payload in notify_payloads(tokens):
            conn.execute(sa.select(sa.func.pg_notify(channel, payload)))
    return new


def raise_alerts(db: Db, rows: Iterable[dict[str, Any]], owner: str, now: datetime, channel: str | None = None,
                 ) -> list[dict[str, Any]]:
    """`insert_alerts` in a transaction of its own; returns the rows stored new, read back."""
    with db.write() as conn:
        new = insert_alerts(db, conn, rows, owner, now, channel)
    return db.all(sa.select(alerts).where(alerts.c.id.in_(new)).order_by(alerts.c.started_at)) if new else []
