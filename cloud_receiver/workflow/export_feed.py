"""The export feed for an upper platform: alert changes since a cursor, and a per-canteen snapshot.

Every change an upper platform must see — a new alert (`created`), a higher revision (`revised`), a
workflow action (`set_deadline`, `submit`, `approve`, `reject`) — writes a row of `alert_changes` in
its own transaction (storage/sqlite.py, storage/postgres.py, queries.apply_action). The feed hands
them out in id order, each with the alert's current state, filtered by `queries.visibility`.

No change may be skipped, and ids are drawn when a row is written, not when it commits. On SQLite
writers commit one at a time, so the ids a reader sees are always all ids up to the highest. On
PostgreSQL a transaction that drew id 10 can commit after one that drew id 11: a reader that saw 11
and moved its cursor past it would never see 10. So a PostgreSQL read first takes a `settle_point`:
the highest id drawn so far and the transactions that hold a write lock on `alert_changes` (every
writer does, from before it draws an id until it ends); once those have ended (`lockers_left`),
every id up to that point is final, and the page hands out nothing above it. Only writers of this
table hold the feed back, never other long transactions of the cluster; one that stays open delays
the feed (the API waits a little, then answers what is final), it never makes it skip. The identity
sequence must keep its cache of 1 (the default): a cached block of ids would be drawn out of order.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cloud_receiver.admin.auth import Principal
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import alert_changes, alerts, canteens, devices, transitions
from cloud_receiver.workflow import queries, rectify

FEED_LIMIT_MAX = 1000
# what a change is: a new alert, a higher revision, or the workflow action that was taken
KINDS = ("created", "revised", *(a.value for a in rectify.Action))
COUNTS = ("total", "pending", "overdue", "submitted", "approved")  # a canteen's alerts of a period, by status now
_CURSOR_TEXT = re.compile(r"^c1\.([0-9]{1,19})$")
_NOT_OURS = "not a cursor of this feed (give next_cursor as it was)"


def encode_cursor(seq: int) -> str:
    """The cursor after change `seq` (0: the start)."""
    return base64.urlsafe_b64encode(f"c1.{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The change a cursor of this feed points after; QueryError for anything this API did not give."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError) as err:
        raise queries.QueryError(_NOT_OURS) from err
    m = _CURSOR_TEXT.match(text)
    if m is None or int(m[1]) >= 2**63:
        raise queries.QueryError(_NOT_OURS)
    return int(m[1])


@dataclass(frozen=True, slots=True)
class SettlePoint:
    """PostgreSQL: the highest change id drawn when it was taken, and the transactions then writing changes."""

    last_id: int
    lockers: tuple[str, ...]  # virtual transaction ids (pg_locks.virtualtransaction)


_LOCKERS = sa.text(
    "SELECT DISTINCT virtualtransaction FROM pg_locks WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'"
    " AND relation = CAST('alert_changes' AS regclass) AND pid <> pg_backend_pid()"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def settle_point(db: Db) -> SettlePoint | None:
    """Where the feed is final once the writers now open have ended; None on SQLite (always final)."""
    if db.dialect != "postgresql":
        return None
    with db.read() as conn:  # the id first: a writer that drew it before holds its lock until it ends
        last = conn.execute(sa.text("SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence('alert_changes', 'id')"
                                    " AS regclass))")).scalar()
        lockers = tuple(conn.execute(_LOCKERS).scalars())
    return SettlePoint(int(last or 0), lockers)


def lockers_left(db: Db, point: SettlePoint) -> int:
    """How many of the point's writing transactions are still open (0: every id up to `last_id` is final)."""
    if not point.lockers:
        return 0
    with db.read() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid"
                                        " IN :v").bindparams(sa.bindparam("v", expanding=True)),
                                {"v": list(point.lockers)}).scalar_one())


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[dict[str, Any]]
    next: int  # the cursor's change id
    has_more: bool


def read_changes(db: Db, p: Principal, *, after: int = 0, upto: int | None = None, limit: int = 100, now: datetime,
                 default_hours: float | None) -> FeedPage:
    """Up to `limit` changes after `after` (and up to `upto`, the last final id; None: all) that `p` may see,
    oldest first, each with its alert's current state.

    When the page reaches the end, `next` moves past the changes `p` may not see as well, so the next
    poll does not read them again."""
    if not 1 <= limit <= FEED_LIMIT_MAX:
        raise queries.QueryError(f"limit must be between 1 and {FEED_LIMIT_MAX}")
    ch = alert_changes.c
    final = sa.true() if upto is None else ch.id <= upto
    with db.read() as conn:  # one snapshot (SQLite): the end found below is the end of this page's rows
        stmt = (sa.select(ch.id.label("seq"), ch.kind.label("change_kind"), ch.at.label("changed_at"),
                          *queries.ALERT_SELECT.selected_columns)
                .select_from(alert_changes.join(alerts, alerts.c.id == ch.alert_id)
                             .outerjoin(canteens, canteens.c.id == alerts.c.canteen_id))
                .where(ch.id > after, final, queries.visibility(p)).order_by(ch.id).limit(limit + 1))
        rows = db.all(stmt, conn)
        has_more = len(rows) > limit
        rows = rows[:limit]
        nxt = rows[-1]["seq"] if rows else after
        if not has_more:  # the end: move past what this principal may not see
            nxt = max(nxt, db.scalar(sa.select(sa.func.max(ch.id)).where(final), conn) or 0)
        steps = _transitions_of(db, conn, sorted({r["id"] for r in rows}))
    items = []
    for r in rows:
        alert = queries.alert_view(r, now, default_hours)
        alert["transitions"] = steps.get(r["id"], [])
        items.append({"seq": r["seq"], "kind": r["change_kind"], "changed_at": r["changed_at"],
                      "jurisdiction": r["jurisdiction"], "alert": alert})
    return FeedPage(items, int(nxt), has_more)


def _transitions_of(db: Db, conn: sa.Connection, alert_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The transitions of these alerts (one query), by alert id, oldest first."""
    if not alert_ids:
        return {}
    t = transitions.c
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in db.all(sa.select(t.alert_id, t.from_status, t.to_status, t.actor, t.role, t.note, t.photo_sha256, t.at)
                      .where(t.alert_id.in_(alert_ids)).order_by(t.alert_id, t.id), conn):
        out[row.pop("alert_id")].append(row)
    return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def canteen_summary(db: Db, p: Principal, *, since: datetime, until: datetime, now: datetime,
                    default_hours: float | None) -> dict[str, Any]:
    """Per canteen `p` may see: its boxes now (total, online, last seen) and its alerts that started in
    [since, until) by workflow status, with the rectification and closure rates; and the totals."""
    c, d, a = canteens.c, devices.c, alerts.c
    deadline = queries.effective_deadline(db, default_hours)
    pending = a.status == rectify.WorkflowStatus.PENDING.value

    def count_if(cond: sa.ColumnElement[bool], name: str) -> sa.Label[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0).label(name)

    with db.read() as conn:
        rows = db.all(sa.select(c.id, c.name, c.jurisdiction).where(queries.visibility(p, c.id)).order_by(c.id), conn)
        boxes = {r["canteen_id"]: r for r in db.all(
            sa.select(d.canteen_id, sa.func.count().label("total"), count_if(d.online != 0, "online"),
                      sa.func.max(d.last_seen).label("last_seen"))
            .where(queries.visibility(p, d.canteen_id)).group_by(d.canteen_id), conn)}
        overdue = sa.and_(pending, deadline.is_not(None), deadline < iso(now))
        counts = {r["canteen_id"]: r for r in db.all(
            sa.select(a.canteen_id, sa.func.count().label("total"), count_if(sa.and_(pending, sa.not_(overdue)), "pending"),
                      count_if(overdue, "overdue"),
                      count_if(a.status == rectify.WorkflowStatus.SUBMITTED.value, "submitted"),
                      count_if(a.status == rectify.WorkflowStatus.APPROVED.value, "approved"))
            .where(queries.visibility(p), a.started_at >= iso(since), a.started_at < iso(until))
            .group_by(a.canteen_id), conn)}
    items = [{"canteen_id": r["id"], "canteen_name": r["name"], "jurisdiction": r["jurisdiction"],
              "devices": _devices(boxes.get(r["id"])), "alerts": _alerts(counts.get(r["id"]))} for r in rows]
    dev_total = {k: sum(i["devices"][k] for i in items) for k in ("total", "online")}
    seen = [i["devices"]["last_seen"] for i in items if i["devices"]["last_seen"]]
    alert_total = {k: sum(i["alerts"][k] for i in items) for k in COUNTS}
    return {"as_of": iso(now), "since": iso(since), "until": iso(until), "items": items,
            "totals": {"canteens": len(items),
                       "devices": _devices({**dev_total, "last_seen": max(seen) if seen else None}),
                       "alerts": _alerts(alert_total)}}


def _devices(row: dict[str, Any] | None) -> dict[str, Any]:
    total, online = (int(row["total"]), int(row["online"])) if row else (0, 0)
    return {"total": total, "online": online, "online_rate": _rate(online, total),
            "last_seen": row["last_seen"] if row else None}


def _alerts(row: dict[str, Any] | None) -> dict[str, Any]:
    n = {k: int(row[k]) if row else 0 for k in COUNTS}
    return {**n, "rectification_rate": _rate(n["submitted"] + n["approved"], n["total"]),
            "closure_rate": _rate(n["approved"], n["total"])}
