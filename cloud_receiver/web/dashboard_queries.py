"""The numbers of the 大数据 dashboard and the alert list behind them: Core queries on SQLite and PostgreSQL.

Every query is bounded by what the principal may see (`queries.visibility`), a region (a jurisdiction
code prefix; "" is everything the principal sees) and a `Period` of whole local days (UTC+8), first
and last day included, as people pick them and as the /alerts page reads its `since` and `until`.
Counting is done by the database (GROUP BY local day, weekday and hour); rates are computed here.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from bk_contract.violations import type_name
from cloud_receiver.admin.auth import Principal
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.storage.schema import alerts, cameras, canteens, devices
from cloud_receiver.workflow import counts, queries, rectify
from cloud_receiver.workflow.counts import seen_in_region

REGION = re.compile(r"^[0-9]{2,12}$")
COUNTY_DIGITS = 6  # 区县: the first six digits of a jurisdiction code (640502 沙坡头区)
TOP = 10  # bars of the "by school" and "open alerts" charts


class FilterError(ValueError):
    """A filter people can fix (bad date, bad region code); the message is Chinese, for the page."""


class OutOfScope(PermissionError):
    """A region outside the principal's jurisdiction."""


@dataclass(frozen=True, slots=True)
class Period:
    """Local days `first`..`last` (both included) at UTC+`tz_hours`."""

    first: date
    last: date
    tz_hours: int = 8

    @property
    def start(self) -> datetime:
        """The UTC instant the first day begins."""
        return datetime.combine(self.first, time(), UTC) - timedelta(hours=self.tz_hours)

    @property
    def end(self) -> datetime:
        """The UTC instant the last day ends (exclusive bound)."""
        return datetime.combine(self.last + timedelta(days=1), time(), UTC) - timedelta(hours=self.tz_hours)

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def resolve_region(p: Principal, value: str | None) -> str:
    """The region to show: `value` checked against the principal's scope, or the principal's own scope when
    empty. A malformed code is a FilterError, a region outside a regulator's scope OutOfScope."""
    value = (value or "").strip()
    if not value:
        return p.scope if p.role == "regulator" else ""
    if not REGION.match(value):
        raise FilterError("区县代码应为 2 至 12 位数字, 例如 640502")
    if p.role == "regulator" and not value.startswith(p.scope):
        raise OutOfScope(f"region {value} is outside scope {p.scope}")
    return value


def regions_of(db: Db, p: Principal) -> list[str]:
    """The region choices of a principal: their own scope first ("" for all), then each county under it."""
    rows = queries.list_canteens(db, p)
    counties = sorted({r["jurisdiction"][:COUNTY_DIGITS] for r in rows if len(r["jurisdiction"]) >= COUNTY_DIGITS})
    own = p.scope if p.role == "regulator" else ""
    return [own, *(c for c in counties if c != own and c.startswith(own))]


def count_if(cond: sa.ColumnElement[bool], name: str) -> sa.Label[Any]:
    """How many rows of the group meet `cond` (0, not NULL, for an empty group)."""
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0).label(name)


def overdue_condition(db: Db, now: datetime, default_hours: float | None) -> sa.ColumnElement[bool]:
    """Alerts still 待整改 past their effective deadline (read as 逾期)."""
    return sa.and_(alerts.c.status == rectify.WorkflowStatus.PENDING.value, queries.past_deadline(now, default_hours))


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def dashboard_data(db: Db, p: Principal, region: str, period: Period, *, now: datetime,
                   default_hours: float | None) -> dict[str, Any]:
    """Everything the dashboard draws, for alerts that started within `period` in `region`."""
    a = alerts.c
    where = (seen_in_region(p, region), a.started_at >= iso(period.start), a.started_at < iso(period.end))
    pending_value = rectify.WorkflowStatus.PENDING.value
    pending = a.status == pending_value
    overdue = overdue_condition(db, now, default_hours)
    tz = period.tz_hours
    with db.read(snapshot=True) as conn:
        pl = counts.plan(db, conn, p, region, period.start, period.end, tz)
        by_type_status = counts.count(db, conn, pl, "day", ("type", "status"))
        by_type_n: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        for (type_, status), n in by_type_status.items():
            by_type_n[type_] += n
            by_status[status] += n
        by_type = sorted(((t, n) for t, n in by_type_n.items() if n), key=lambda kv: (-kv[1], kv[0]))
        by_canteen = counts.count(db, conn, pl, "month", ("canteen_id",))
        school_counts = sorted(((k[0] or None, n) for k, n in by_canteen.items() if n),
                               key=lambda kv: (-kv[1], kv[0] or ""))[:TOP]
        by_day = {k[0]: n for k, n in counts.count(db, conn, pl, "daily", ("day",)).items()}
        cells = {(int(w), int(h)): n for (w, h), n in counts.count(db, conn, pl, "hour", ("weekday", "hour")).items()}
        open_ = sa.func.count().label("open")
        open_all = db.all(sa.select(a.canteen_id, open_, count_if(overdue, "overdue")).where(*where, pending)
                          .group_by(a.canteen_id), conn)  # every canteen with open work: a few thousand rows at most
        open_top = sorted(open_all, key=lambda r: (-r["open"], r["canteen_id"] or ""))[:TOP]
        flow = {"n": sum(by_status.values()), "open": by_status.get(pending_value, 0),
                "submitted": by_status.get(rectify.WorkflowStatus.SUBMITTED.value, 0),
                "approved": by_status.get(rectify.WorkflowStatus.APPROVED.value, 0),
                "overdue": sum(int(r["overdue"]) for r in open_all)}
        ids = {cid for cid, _ in school_counts} | {r["canteen_id"] for r in open_top}
        names = {r["id"]: r["name"] for r in db.all(sa.select(canteens.c.id, canteens.c.name)
                                                    .where(canteens.c.id.in_([i for i in ids if i])), conn)}
        equipment = _equipment(db, p, region, conn)
    total = int(flow.get("n", 0))
    rectified = int(flow.get("submitted", 0)) + int(flow.get("approved", 0))

    def school(cid: str | None) -> dict[str, Any]:
        return {"canteen_id": cid or "", "name": names.get(cid or "") or cid or "未分配学校"}

    return {
        "region": region, "since": period.first.isoformat(), "until": period.last.isoformat(), "as_of": iso(now),
        "total": total,
        "by_type": [{"type": t, "name": type_name(t), "count": n} for t, n in by_type],
        "by_school": [{**school(cid), "count": n} for cid, n in school_counts],
        "by_day": [{"day": d.isoformat(), "count": by_day.get(d.isoformat(), 0)} for d in period.days()],
        "heatmap": sorted([weekday, hour, n] for (weekday, hour), n in cells.items() if n),
        "workflow": {"total": total, "rectified": rectified, "rectification_rate": _rate(rectified, total),
                     "open": int(flow.get("open", 0)), "overdue": int(flow.get("overdue", 0)),
                     "submitted": int(flow.get("submitted", 0)), "approved": int(flow.get("approved", 0))},
        "open_top": [{**school(r["canteen_id"]), "open": r["open"], "overdue": int(r["overdue"])} for r in open_top],
        **equipment,
    }


def _equipment(db: Db, p: Principal, region: str, conn: sa.Connection) -> dict[str, Any]:
    """Boxes and cameras in the region now: a camera counts as online when it reports online and its box does."""
    d, cam = devices.c, cameras.c
    dev = db.one(sa.select(sa.func.count().label("total"), count_if(d.online != 0, "online"))
                 .where(seen_in_region(p, region, d.canteen_id)), conn) or {}
    cams = db.one(sa.select(sa.func.count().label("total"), count_if(sa.and_(cam.state == "online", d.online != 0),
                                                                     "online"))
                  .select_from(cameras.join(devices, devices.c.id == cam.device_id))
                  .where(seen_in_region(p, region, d.canteen_id)), conn) or {}

    def share(row: dict[str, Any]) -> dict[str, Any]:
        total, online = int(row.get("total", 0)), int(row.get("online", 0))
        return {"total": total, "online": online, "online_rate": _rate(online, total)}

    return {"devices": share(dev), "cameras": share(cams)}


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """The alert list of an export: region and period, and optionally the /alerts page's narrower filters."""

    region: str
    period: Period
    types: tuple[str, ...] = ()
    canteen_id: str | None = None
    status: str | None = None


class TooMany(Exception):
    """More rows than an export may hold."""


def alert_rows(db: Db, p: Principal, q: AlertQuery, *, now: datetime, default_hours: float | None,
               limit: int) -> list[dict[str, Any]]:
    """The alerts of `q`, newest first, with school and camera names and the effective status and deadline
    (Beijing time as naive datetimes, for a spreadsheet); TooMany when there are more than `limit`."""
    a = alerts.c
    conds = [seen_in_region(p, q.region), a.started_at >= iso(q.period.start),
             a.started_at < iso(q.period.end)]
    if q.types:
        conds.append(a.type.in_(q.types))
    if q.canteen_id:
        conds.append(a.canteen_id == q.canteen_id)
    if q.status:
        try:
            conds.append(queries.status_condition(db, q.status, iso(now) or "", default_hours))  # as /alerts filters
        except queries.QueryError as err:
            raise FilterError(f"status: 只能是 {'、'.join(rectify.STATUSES)}") from err
    stmt = (sa.select(a.id, a.camera_id, a.type, a.started_at, a.status, a.deadline,
                      canteens.c.name.label("canteen_name"), cameras.c.name.label("camera_name"))
            .select_from(alerts.outerjoin(canteens, canteens.c.id == a.canteen_id)
                         .outerjoin(cameras, sa.and_(cameras.c.device_id == a.device_id,
                                                     cameras.c.camera_id == a.camera_id)))
            .where(*conds).order_by(a.started_at.desc(), a.id.desc()).limit(limit + 1))
    rows = db.all(stmt)
    if len(rows) > limit:
        raise TooMany(f"more than {limit} alerts")
    shift = timedelta(hours=q.period.tz_hours)
    out = []
    for r in rows:
        started = queries.parse_ts(r["started_at"])
        deadline = rectify.effective_deadline(queries.parse_ts(r["deadline"]), started, default_hours)
        out.append({"id": r["id"], "canteen_name": r["canteen_name"] or "", "camera": r["camera_name"] or r["camera_id"],
                    "type_name": type_name(r["type"]), "status": rectify.effective_status(r["status"], deadline, now).value,
                    "started_local": _naive_local(started, shift), "deadline_local": _naive_local(deadline, shift)})
    return out


def _naive_local(value: datetime | None, shift: timedelta) -> datetime | None:
    return (value.astimezone(UTC) + shift).replace(tzinfo=None, microsecond=0) if value else None
