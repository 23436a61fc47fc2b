"""Rollups of alert counts for /stats and the dashboard, kept by a periodic job on either engine.

Tables (storage/schema.py) hold counts of alerts by when they started, in local days at UTC+tz:
- `alert_counts_day`: day, jurisdiction of the alert's canteen, type, workflow status;
- `alert_counts_hour`: day, jurisdiction, hour of day and the day's weekday (the weekday × hour heat map);
- `alert_counts_daily`: day, jurisdiction (alerts a day);
- the month tier, the first two summed over local months: `alert_counts_month_type` (month, jurisdiction,
  type, status) and `alert_counts_month_hour` (month, jurisdiction, weekday, hour): a city's year is ~50,000
  rows of the day table and a few thousand of these;
- `alert_counts_month`: month, canteen (the "by school" counts).
They are keyed by jurisdiction rather than canteen where they can be: a region's thousands of canteens
have two or three alerts a day each, so a canteen × day table would be as long as the alerts; per
jurisdiction and day it is a few dozen rows.

`refresh` brings them up to date from the export feed's change table (`alert_changes`, written in the
same transaction as every new alert, revision and workflow action): the local days of the alerts changed
since the last refresh are counted again from `alerts`, whole, and the months they lie in (the month tier
from the day tables). On PostgreSQL
it goes only as far as the feed is final (`export_feed.settle_point`), so a change that commits late is
never passed over; receivers take turns through an advisory lock. The counts say which time zone and
which canteen → jurisdiction map they were made with (`rollup_state`); when either differs, everything
is counted again. Readers (workflow/counts.py) use a day or month only when no change since touched it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from cloud_receiver.storage.db import Db, iso, local_text, local_weekday
from cloud_receiver.storage.schema import (
    alert_changes,
    alert_counts_daily,
    alert_counts_day,
    alert_counts_hour,
    alert_counts_month,
    alert_counts_month_hour,
    alert_counts_month_type,
    alerts,
    canteens,
    rollup_state,
)
from cloud_receiver.workflow import export_feed

log = structlog.get_logger(__name__)

NAME = "alerts"  # the rollup_state row
SETTLE_WAIT_S = 2.0  # longest wait for PostgreSQL writers open at the settle point; then the next round
LOCK_KEY = 0x626B_726F  # advisory lock of the refresh on PostgreSQL ("bkro")
DAY_TABLES = (alert_counts_day, alert_counts_hour, alert_counts_daily)
MONTH_TIER = ((alert_counts_month_type, alert_counts_day, ("type", "status")),  # month table, its day table, keys
              (alert_counts_month_hour, alert_counts_hour, ("weekday", "hour")))
TABLES = (*DAY_TABLES, alert_counts_month, *(m for m, _, _ in MONTH_TIER))


@dataclass(frozen=True, slots=True)
class State:
    last_change: int
    tz_hours: int
    canteens_sig: str


def canteens_sig(conn: sa.Connection) -> str:
    """A digest of every canteen's jurisdiction: the day tables are keyed by jurisdiction."""
    rows = conn.execute(sa.select(canteens.c.id, canteens.c.jurisdiction).order_by(canteens.c.id)).all()
    return hashlib.sha256("\n".join(f"{i}\t{j}" for i, j in rows).encode()).hexdigest()[:32]


def read_state(conn: sa.Connection) -> State | None:
    row = conn.execute(sa.select(rollup_state).where(rollup_state.c.name == NAME)).mappings().first()
    return State(int(row["last_change"]), int(row["tz_hours"]), row["canteens_sig"]) if row else None


def usable_state(conn: sa.Connection, tz_hours: int) -> State | None:
    """The state when the counts are of this time zone and the canteens' present jurisdictions, else None."""
    state = read_state(conn)
    if state is None or state.tz_hours != tz_hours or state.canteens_sig != canteens_sig(conn):
        return None
    return state


def local_day(db: Db, tz_hours: int) -> sa.ColumnElement[str]:
    return local_text(db, alerts.c.started_at, tz_hours, "day")


def dirty_days(db: Db, conn: sa.Connection, after: int, tz_hours: int, upto: int | None = None) -> set[str]:
    """The local days of the alerts changed after change `after` (and up to `upto`)."""
    c = alert_changes.c
    day = local_day(db, tz_hours).label("day")
    cond = [c.id > after] + ([c.id <= upto] if upto is not None else [])
    q = sa.select(day).distinct().select_from(alert_changes.join(alerts, alerts.c.id == c.alert_id)).where(*cond)
    return {r for r in conn.execute(q).scalars() if r}


def day_range(day: str, tz_hours: int) -> tuple[str, str]:
    """The UTC instants [start, end) of local day `day` (YYYY-MM-DD) as ISO text."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) - timedelta(hours=tz_hours)
    return iso(start) or "", iso(start + timedelta(days=1)) or ""


def month_range(month: str, tz_hours: int) -> tuple[str, str]:
    """The UTC instants [start, end) of local month `month` (YYYY-MM) as ISO text."""
    first = date.fromisoformat(month + "-01")
    after = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    shift = timedelta(hours=tz_hours)
    return (iso(datetime.combine(first, datetime.min.time(), UTC) - shift) or "",
            iso(datetime.combine(after, datetime.min.time(), UTC) - shift) or "")


def _count_all(db: Db, conn: sa.Connection, tz_hours: int) -> None:
    """Count every alert into every table (their rows must be gone)."""
    _count_day_tables(db, conn, tz_hours, [], None)
    _count_month_table(db, conn, tz_hours, [])
    _count_month_tier(conn, None)


def _count_month_table(db: Db, conn: sa.Connection, tz_hours: int, where: list[sa.ColumnElement[bool]]) -> None:
    month = sa.func.substr(local_day(db, tz_hours), 1, 7).label("month")
    canteen = sa.func.coalesce(alerts.c.canteen_id, "").label("canteen_id")
    by_month = sa.select(month, canteen, sa.func.count().label("n")).where(*where).group_by(month, canteen)
    conn.execute(alert_counts_month.insert().from_select(["month", "canteen_id", "n"], by_month))


def _count_month_tier(conn: sa.Connection, month: str | None) -> None:
    """Sum the day tables into the month tier, for one local month (YYYY-MM) or all; its rows must be gone."""
    for table, source, keys in MONTH_TIER:
        s = source.c
        month_of = sa.func.substr(s.day, 1, 7).label("month")
        cols = [s.jurisdiction, month_of, *(s[k] for k in keys)]
        q = sa.select(*cols, sa.func.sum(s.n)).group_by(*cols)
        if month is not None:
            q = q.where(s.day >= f"{month}-01", s.day <= f"{month}-31")
        conn.execute(table.insert().from_select(["jurisdiction", "month", *keys, "n"], q))


def _recount(db: Db, conn: sa.Connection, tz_hours: int, days: Iterable[str]) -> None:
    """Count the given local days again (day tables) and the months they lie in (month tables)."""
    a = alerts.c
    days = sorted(set(days))
    for day in days:
        start, end = day_range(day, tz_hours)
        for table in DAY_TABLES:
            conn.execute(table.delete().where(table.c.day == day))
        _count_day_tables(db, conn, tz_hours, [a.started_at >= start, a.started_at < end], day)
    for month in sorted({d[:7] for d in days}):
        start, end = month_range(month, tz_hours)
        for table in (alert_counts_month, *(m for m, _, _ in MONTH_TIER)):
            conn.execute(table.delete().where(table.c.month == month))
        _count_month_table(db, conn, tz_hours, [a.started_at >= start, a.started_at < end])
        _count_month_tier(conn, month)


def _count_day_tables(db: Db, conn: sa.Connection, tz_hours: int, where: list[sa.ColumnElement[bool]],
                      day_of: str | None) -> None:
    """Count the alerts matching `where`: those of local day `day_of`, or all of them (None)."""
    a = alerts.c
    source = alerts.outerjoin(canteens, canteens.c.id == a.canteen_id)
    day = local_day(db, tz_hours).label("day")
    jur = sa.func.coalesce(canteens.c.jurisdiction, "").label("jurisdiction")
    n = sa.func.count().label("n")
    conn.execute(alert_counts_day.insert().from_select(
        ["day", "jurisdiction", "type", "status", "n"],
        sa.select(day, jur, a.type, a.status, n).select_from(source).where(*where).group_by(day, jur, a.type, a.status)))
    hour = sa.cast(local_text(db, a.started_at, tz_hours, "hour"), sa.Integer).label("hour")
    weekday = local_weekday(db, a.started_at, tz_hours).label("weekday")
    conn.execute(alert_counts_hour.insert().from_select(
        ["day", "jurisdiction", "hour", "weekday", "n"],
        sa.select(day, jur, hour, weekday, n).select_from(source).where(*where).group_by(day, jur, hour, weekday)))
    d = alert_counts_day.c  # alerts a day: the day table just counted, summed over type and status
    by_day = sa.select(d.day, d.jurisdiction, sa.func.sum(d.n)).group_by(d.day, d.jurisdiction)
    conn.execute(alert_counts_daily.insert().from_select(["day", "jurisdiction", "n"],
                                                         by_day if day_of is None else by_day.where(d.day == day_of)))


def _settled(db: Db, wait_s: float) -> int | None:
    """The highest change id that is final: every change up to it has committed (None: writers still open)."""
    if db.dialect != "postgresql":
        return int(db.scalar(sa.select(sa.func.coalesce(sa.func.max(alert_changes.c.id), 0))) or 0)
    point = export_feed.settle_point(db)
    assert point is not None
    deadline = time.monotonic() + wait_s
    while export_feed.lockers_left(db, point):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return point.last_id


def refresh(db: Db, tz_hours: int, now: datetime | None = None, *, settle_wait_s: float = SETTLE_WAIT_S) -> dict[str, Any]:
    """Bring the counts up to the changes that are final; what was done ({"days": …, "full": …})."""
    upto = _settled(db, settle_wait_s)
    if upto is None:
        return {"days": 0, "full": False, "deferred": True}
    with db.write() as conn:
        if db.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        state = read_state(conn)
        sig = canteens_sig(conn)
        full = state is None or state.tz_hours != tz_hours or state.canteens_sig != sig
        if not full and state is not None and upto <= state.last_change:
            return {"days": 0, "full": False}
        if full:
            for table in TABLES:
                conn.execute(table.delete())
            _count_all(db, conn, tz_hours)
            for table in TABLES:
                # fresh statistics: planned as the empty tables they were, a city's year is sorted on disk
                conn.execute(sa.text(f"ANALYZE {table.name}"))
            days = -1
        else:
            assert state is not None
            touched = dirty_days(db, conn, state.last_change, tz_hours, upto)
            _recount(db, conn, tz_hours, touched)
            days = len(touched)
        values = {"last_change": upto, "tz_hours": tz_hours, "canteens_sig": sig,
                  "refreshed_at": iso(now or datetime.now(UTC))}
        if state is None:
            conn.execute(rollup_state.insert().values(name=NAME, **values))
        else:
            conn.execute(rollup_state.update().where(rollup_state.c.name == NAME).values(**values))
    if full:
        log.info("alert counts rebuilt", upto=upto, tz_hours=tz_hours)
    return {"days": days, "full": full, "upto": upto}
