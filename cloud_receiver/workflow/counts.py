"""Alert counts for /stats and the dashboard: from the rollups where they hold, live from `alerts` elsewhere.

A `Plan` splits a period [since, until) into what the rollups (workflow/rollup.py) can answer — whole
local months and whole local days that no change has touched since the last refresh — and
UTC ranges counted live: the partial days at either end, the days changed since, and everything when
the rollups are of another time zone or of other canteen jurisdictions, or when the principal's scope is
a canteen (the day tables are per jurisdiction; a canteen's own alerts are few). All is read in one
snapshot, so a refresh that commits meanwhile cannot be counted twice. The result is exactly what a
count over `alerts` would give.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from cloud_receiver.admin.auth import Principal
from cloud_receiver.storage.db import Db, iso, local_text, local_weekday, starts_with
from cloud_receiver.storage.schema import (
    alert_counts_daily,
    alert_counts_day,
    alert_counts_hour,
    alert_counts_month,
    alerts,
    canteens,
    devices,
)
from cloud_receiver.workflow import rollup
from cloud_receiver.workflow.queries import visibility

Table = Literal["day", "hour", "daily", "month"]
TABLES = {"day": alert_counts_day, "hour": alert_counts_hour, "daily": alert_counts_daily, "month": alert_counts_month}
MONTH_TIER = {name: month for name, t in TABLES.items() for month, days, _ in rollup.MONTH_TIER if days is t}  # whole months


@dataclass(frozen=True, slots=True)
class Plan:
    """Which local days and months come from the rollups, and which UTC ranges are counted live."""

    principal: Principal
    region: str  # a jurisdiction prefix within the principal's scope; "" for all it may see
    tz_hours: int
    days: tuple[str, str] | None = None  # first and last local day read from the day tables
    skip_days: frozenset[str] = frozenset()  # days within them counted live (changed since the refresh)
    live_days: tuple[tuple[str, str], ...] = ()  # UTC [start, end) ranges the day tables do not cover
    months: tuple[str, ...] = ()  # local months read from the month tables
    month_days: tuple[tuple[str, str], ...] = ()  # first and last local day of each run of `days` outside `months`
    live_months: tuple[tuple[str, str], ...] = ()  # UTC ranges the month table does not cover
    # months mostly inside the period that no change touched: the canteen table's count of the whole month,
    # less a live count of its days outside the period (a city's first partial month: 26 days' alerts → 5)
    months_less: tuple[str, ...] = ()
    less_months: tuple[tuple[str, str], ...] = ()  # UTC ranges counted live and subtracted
    dirty: frozenset[str] = field(default=frozenset(), repr=False)


def _local_date(when: datetime, tz_hours: int) -> tuple[date, bool]:
    """The local date of an instant, and whether the instant is that date's midnight."""
    local = when + timedelta(hours=tz_hours)
    return local.date(), local.time() == datetime.min.time()


def _start(day: date, tz_hours: int) -> datetime:
    """The UTC instant local day `day` begins."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=tz_hours)


def _ranges(spans: list[tuple[datetime, datetime]]) -> tuple[tuple[str, str], ...]:
    """Non-empty spans, merged where they touch, as ISO text."""
    out: list[list[datetime]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((iso(s) or "", iso(e) or "") for s, e in out)


def plan(db: Db, conn: sa.Connection, p: Principal, region: str, since: datetime, until: datetime,
         tz_hours: int) -> Plan:
    """How to count [since, until) for `p` in `region` (see the module's docstring)."""
    everything = Plan(p, region, tz_hours, live_days=_ranges([(since, until)]), live_months=_ranges([(since, until)]))
    if until <= since:
        return Plan(p, region, tz_hours)
    state = rollup.usable_state(conn, tz_hours)
    if state is None:
        return everything
    dirty = frozenset(rollup.dirty_days(db, conn, state.last_change, tz_hours))
    first, at_midnight = _local_date(since, tz_hours)
    if not at_midnight:
        first += timedelta(days=1)
    last = _local_date(until, tz_hours)[0] - timedelta(days=1)  # until is exclusive: its own day is never whole
    if last < first:
        return everything
    whole_start, whole_end = _start(first, tz_hours), _start(last + timedelta(days=1), tz_hours)
    edges = [(since, whole_start), (whole_end, until)]
    dirty_inside = sorted(d for d in dirty if first.isoformat() <= d <= last.isoformat())
    dirty_spans = [(_start(date.fromisoformat(d), tz_hours), _start(date.fromisoformat(d) + timedelta(days=1), tz_hours))
                   for d in dirty_inside]
    split = _split_months(first, last, dirty, tz_hours)
    by_jurisdiction = p.role in ("admin", "regulator")
    return Plan(p, region, tz_hours,
                days=(first.isoformat(), last.isoformat()) if by_jurisdiction else None,
                skip_days=frozenset(dirty_inside),
                live_days=_ranges(edges + dirty_spans) if by_jurisdiction else _ranges([(since, until)]),
                months=tuple(split.whole), live_months=_ranges(edges + split.live),
                months_less=tuple(split.less), less_months=_ranges(split.outside),
                month_days=tuple((lo.isoformat(), hi.isoformat()) for lo, hi in split.days), dirty=dirty)


@dataclass(slots=True)
class _Months:
    whole: list[str] = field(default_factory=list)  # whole months no change touched
    less: list[str] = field(default_factory=list)  # partial ones mostly inside that no change touched
    outside: list[tuple[datetime, datetime]] = field(default_factory=list)  # their days outside the period
    live: list[tuple[datetime, datetime]] = field(default_factory=list)  # the rest of the period, counted live
    days: list[tuple[date, date]] = field(default_factory=list)  # runs of the period's days outside `whole`


def _split_months(first: date, last: date, dirty: frozenset[str], tz_hours: int) -> _Months:
    """The local months of days `first`..`last` as the month tables can answer them (see `Plan`)."""
    out = _Months()
    m = first.replace(day=1)
    while m <= last:
        after = (m.replace(day=28) + timedelta(days=4)).replace(day=1)
        lo, hi = max(m, first), min(after - timedelta(days=1), last)
        key = m.isoformat()[:7]
        clean = not any(d.startswith(key) for d in dirty)
        if clean and lo == m and hi == after - timedelta(days=1):
            out.whole.append(key)
        else:
            if clean and 2 * ((hi - lo).days + 1) > (after - m).days:
                out.less.append(key)
                out.outside += [(_start(m, tz_hours), _start(lo, tz_hours)),
                                (_start(hi + timedelta(days=1), tz_hours), _start(after, tz_hours))]
            else:
                out.live.append((_start(lo, tz_hours), _start(hi + timedelta(days=1), tz_hours)))
            if out.days and out.days[-1][1] + timedelta(days=1) == lo:
                out.days[-1] = (out.days[-1][0], hi)
            else:
                out.days.append((lo, hi))
        m = after
    return out


def _under(column: sa.ColumnElement[str], prefix: str) -> list[sa.ColumnElement[bool]]:
    """`column` starts with `prefix`; for a code of digits also as a key range the primary key can seek."""
    conds = [starts_with(column, prefix)]
    if prefix.isdigit():
        conds.append(column >= prefix)
        after = str(int(prefix) + 1).zfill(len(prefix))
        if len(after) == len(prefix):  # "99" has no next code of its length: no upper bound
            conds.append(column < after)
    return conds


def _jurisdiction_scope(p: Principal, region: str, column: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """Rollup rows (by jurisdiction) of what `p` may see in `region`, as `visibility` and `in_region` on alerts."""
    conds: list[sa.ColumnElement[bool]] = []
    if p.role == "regulator":
        conds += _under(column, p.scope)
    elif p.role != "admin":
        return sa.false()
    if region:
        conds += _under(column, region)
    return sa.and_(sa.true(), *conds)


def in_region(region: str, column: sa.ColumnElement[Any] = alerts.c.canteen_id) -> sa.ColumnElement[bool]:
    """Rows whose canteen (by `column`) lies under jurisdiction prefix `region` ("" : every canteen)."""
    if not region:
        return sa.true()
    return column.in_(sa.select(canteens.c.id).where(starts_with(canteens.c.jurisdiction, region)))


def seen_in_region(p: Principal, region: str, column: sa.ColumnElement[Any] = alerts.c.canteen_id
                   ) -> sa.ColumnElement[bool]:
    """Rows `p` may see (`visibility`) whose canteen lies in `region`; one canteen lookup per row, not two,
    where the region lies inside a regulator's scope."""
    if region and (p.role == "admin" or (p.role == "regulator" and region.startswith(p.scope))):
        return in_region(region, column)
    return sa.and_(visibility(p, column), in_region(region, column))


def _live_dim(db: Db, name: str, tz_hours: int) -> sa.ColumnElement[Any]:
    a = alerts.c
    if name == "day":
        return local_text(db, a.started_at, tz_hours, "day")
    if name == "month":
        return sa.func.substr(local_text(db, a.started_at, tz_hours, "day"), 1, 7)
    if name == "hour":
        return sa.cast(local_text(db, a.started_at, tz_hours, "hour"), sa.Integer)
    if name == "weekday":
        return local_weekday(db, a.started_at, tz_hours)
    if name == "canteen_id":
        return sa.func.coalesce(a.canteen_id, "")
    return a[name]


def _rollup_query(pl: Plan, t: sa.Table, dims: tuple[str, ...], when: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """`dims` and the summed counts of the rows of jurisdiction table `t` that `when` picks and the plan's principal
    may see in its region."""
    labelled = [t.c[d].label(d) for d in dims]
    return (sa.select(*labelled, sa.func.sum(t.c.n)).where(when, _jurisdiction_scope(pl.principal, pl.region, t.c.jurisdiction))
            .group_by(*labelled))


def _add(out: Counter[tuple[Any, ...]], conn: sa.Connection, q: sa.Executable) -> None:
    """Add the counts of `q` (its last column) to `out` by the other columns; fetched at once, not row by row."""
    for *key, n in conn.execute(q).all():
        out[tuple(key)] += int(n)


def _add_union(out: Counter[tuple[Any, ...]], conn: sa.Connection, parts: list[sa.Select[Any]]) -> None:
    """`_add` of the queries of `parts`, one per time range, in one statement: each range is an index range
    (on `alerts`, an OR of ranges is a filter on PostgreSQL: a city's canteens' partial months 51 → 18 ms)."""
    if parts:
        _add(out, conn, parts[0] if len(parts) == 1 else sa.union_all(*parts))


def count(db: Db, conn: sa.Connection, pl: Plan, table: Table, dims: tuple[str, ...]) -> Counter[tuple[Any, ...]]:
    """Alerts of the plan's period grouped by `dims` (columns of the rollup `table`), rollup and live parts added.

    A day table's whole months come from its month tier when `dims` has no "day"."""
    out: Counter[tuple[Any, ...]] = Counter()
    t = TABLES[table]
    if table == "month":
        ranges = pl.live_months
        if pl.months or pl.months_less:
            labelled = [t.c[d].label(d) for d in dims]
            scope = seen_in_region(pl.principal, pl.region, t.c.canteen_id)
            _add(out, conn, sa.select(*labelled, sa.func.sum(t.c.n))
                 .where(t.c.month.in_(pl.months + pl.months_less), scope).group_by(*labelled))
            outside: Counter[tuple[Any, ...]] = Counter()
            _add_union(outside, conn, _live_queries(db, pl, dims, pl.less_months))
            out.subtract(outside)
    else:
        ranges = pl.live_days
        if pl.days is not None:
            tier = MONTH_TIER.get(table) if "day" not in dims and pl.months else None
            if tier is not None:
                _add(out, conn, _rollup_query(pl, tier, dims, tier.c.month.in_(pl.months)))
                spans = pl.month_days
            else:
                spans = (pl.days,)
            skip = [t.c.day.not_in(sorted(pl.skip_days))] if pl.skip_days else []
            when = [sa.and_(t.c.day >= lo, t.c.day <= hi, *skip) for lo, hi in spans]
            if db.dialect == "postgresql" and when:  # a BitmapOr of the ranges: 8 ms, a UNION ALL 15-20 ms
                _add(out, conn, _rollup_query(pl, t, dims, sa.or_(*when)))
            else:  # SQLite reads an OR of day ranges as a skip-scan of every day: 11 ms, a UNION ALL 6 ms
                _add_union(out, conn, [_rollup_query(pl, t, dims, w) for w in when])
    _add_union(out, conn, _live_queries(db, pl, dims, ranges))
    return out


def _live_queries(db: Db, pl: Plan, dims: tuple[str, ...], ranges: tuple[tuple[str, str], ...]) -> list[sa.Select[Any]]:
    """Counts by `dims` of the alerts the plan's principal may see in its region, one query per UTC range."""
    a = alerts.c
    live = [_live_dim(db, d, pl.tz_hours).label(d) for d in dims]
    return [sa.select(*live, sa.func.count().label("n"))
            .where(seen_in_region(pl.principal, pl.region), a.started_at >= s, a.started_at < e).group_by(*live)
            for s, e in ranges]


def stats(db: Db, p: Principal, since: datetime, until: datetime, tz_hours: int = 8) -> dict[str, Any]:
    """Alert counts by type, canteen and local day in [since, until), and the device online rate (GET /stats)."""
    with db.read(snapshot=True) as conn:
        pl = plan(db, conn, p, "", since, until, tz_hours)
        by_type = {k[0]: n for k, n in count(db, conn, pl, "day", ("type",)).items() if n}
        by_day = {k[0]: n for k, n in count(db, conn, pl, "daily", ("day",)).items() if n}
        by_canteen = count(db, conn, pl, "month", ("canteen_id",))
        d = devices.c
        dev = conn.execute(sa.select(sa.func.count().label("total"), sa.func.coalesce(sa.func.sum(d.online), 0))
                           .where(visibility(p, d.canteen_id))).one()
    total, online = int(dev[0]), int(dev[1])
    return {"since": iso(since), "until": iso(until), "total": sum(by_type.values()), "by_type": dict(sorted(by_type.items())),
            "by_canteen": {k[0]: n for k, n in sorted(by_canteen.items()) if n},
            "by_day": dict(sorted(by_day.items())),
            "devices": {"total": total, "online": online, "online_rate": round(online / total, 4) if total else None}}
