"""Read queries of the API and the workflow write, on either engine (`storage.db.Db`, SQLAlchemy Core).

Every query is filtered by what the principal may see (`visibility`), so a row outside a token's
scope never leaves the database. Timestamps are bound and read as ISO-8601 UTC text
(`YYYY-MM-DDTHH:MM:SS.mmmZ`); the column type turns them into each engine's own.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bk_contract.violations import type_name
from cloud_receiver.admin.auth import Principal
from cloud_receiver.storage.db import Db, iso, parse_iso, plus_hours, starts_with
from cloud_receiver.storage.schema import (
    alert_changes,
    alerts,
    cameras,
    canteens,
    devices,
    ledger_photos,
    media,
    transitions,
)
from cloud_receiver.workflow import rectify

LIMIT_MAX = 200


class QueryError(ValueError):
    """Bad query input (cursor, filter); the message says what is wrong."""


class NotFound(LookupError):
    """No such row, or not visible to this principal."""


class Conflict(Exception):
    """The row changed under us (another reviewer acted first)."""


def visibility(p: Principal, column: sa.ColumnElement[Any] = alerts.c.canteen_id) -> sa.ColumnElement[bool]:
    """Condition limiting rows (by their canteen id column) to what `p` may see."""
    if p.role == "admin":
        return sa.true()
    if p.role == "regulator":
        return column.in_(sa.select(canteens.c.id).where(starts_with(canteens.c.jurisdiction, p.scope)))
    if p.role == "canteen":
        return column == p.scope
    return sa.false()


def effective_deadline(db: Db, default_hours: float | None) -> sa.ColumnElement[Any]:
    """An alert's effective deadline: the stored one, else started_at + the default."""
    if default_hours is None:
        return alerts.c.deadline
    return sa.func.coalesce(alerts.c.deadline, plus_hours(db, alerts.c.started_at, default_hours))


def encode_cursor(started_at: str, alert_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([started_at, alert_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, alert_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as err:
        raise QueryError("cursor is not one this API returned") from err
    if not isinstance(started_at, str) or not isinstance(alert_id, str):
        raise QueryError("cursor is not one this API returned")
    try:
        parse_iso(started_at)
    except ValueError as err:
        raise QueryError("cursor is not one this API returned") from err
    return started_at, alert_id


@dataclass(frozen=True, slots=True)
class AlertFilter:
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    canteen_id: str | None = None
    status: str | None = None
    region: str | None = None  # a jurisdiction code prefix (区县): alerts of the canteens under it


def parse_ts(ts: str | None) -> datetime | None:
    """A stored ISO-8601 timestamp as an aware datetime (None stays None)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def alert_view(row: dict[str, Any], now: datetime, default_hours: float | None) -> dict[str, Any]:
    """The API's JSON form of an alert row, with its effective status and deadline."""
    deadline = rectify.effective_deadline(parse_ts(row.get("deadline")), parse_ts(row["started_at"]), default_hours)
    status = rectify.effective_status(row["status"], deadline, now)
    return {
        "id": row["id"], "device_id": row["device_id"], "canteen_id": row["canteen_id"],
        "canteen_name": row.get("canteen_name"), "camera_id": row["camera_id"], "type": row["type"],
        "type_name": type_name(row["type"]), "level": row["level"], "state": row["state"], "rev": row["rev"],
        "started_at": row["started_at"], "ended_at": row["ended_at"], "score": row["score"],
        "boxes": json.loads(row["boxes_json"] or "[]"), "detail": row["detail"] or "",
        "snapshot_sha256": row["snapshot_sha256"], "clip_sha256": row["clip_sha256"],
        "received_at": row["received_at"], "status": status.value, "deadline": iso(deadline),
    }


ALERT_SELECT = sa.select(alerts, canteens.c.name.label("canteen_name"), canteens.c.jurisdiction).select_from(
    alerts.outerjoin(canteens, canteens.c.id == alerts.c.canteen_id))


def list_alerts(db: Db, p: Principal, f: AlertFilter, *, now: datetime, limit: int = 50,
                cursor: str | None = None, default_hours: float | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of alerts, newest first, ordered by (started_at, id); returns (rows, next cursor)."""
    if not 1 <= limit <= LIMIT_MAX:
        raise QueryError(f"limit must be between 1 and {LIMIT_MAX}")
    conds = [visibility(p)]
    a = alerts.c
    if f.since:
        conds.append(a.started_at >= iso(f.since))
    if f.until:
        conds.append(a.started_at < iso(f.until))
    if f.types:
        conds.append(a.type.in_(f.types))
    if f.canteen_id:
        conds.append(a.canteen_id == f.canteen_id)
    if f.region:
        conds.append(a.canteen_id.in_(sa.select(canteens.c.id).where(starts_with(canteens.c.jurisdiction, f.region))))
    if f.status:
        conds.append(status_condition(db, f.status, iso(now) or "", default_hours))
    if cursor:
        started_at, alert_id = decode_cursor(cursor)
        conds.append(sa.or_(a.started_at < started_at, sa.and_(a.started_at == started_at, a.id < alert_id)))
    stmt = ALERT_SELECT.where(*conds).order_by(a.started_at.desc(), a.id.desc()).limit(limit + 1)
    if (p.role == "regulator" or f.region) and not f.canteen_id:  # a jurisdiction of unknown size: see _newest
        upper = decode_cursor(cursor)[0] if cursor else min(iso(f.until or now) or "", iso(now) or "")  # ISO sorts
        rows = _newest(db, stmt, parse_iso(upper), f.since and parse_iso(iso(f.since) or ""), limit + 1)
    else:
        rows = db.all(stmt)
    nxt = encode_cursor(rows[limit - 1]["started_at"], rows[limit - 1]["id"]) if len(rows) > limit else None
    return [alert_view(r, now, default_hours) for r in rows[:limit]], nxt


WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=60))  # tried in turn by `_newest`


def _newest(db: Db, stmt: sa.Select[Any], upper: datetime, since: datetime | None, want: int) -> list[dict[str, Any]]:
    """The rows of `stmt` (newest first, at most `want`), read first from recent windows below `upper`.

    A window that holds `want` rows gives exactly the rows the whole query would: every row outside it
    is older than all inside. Bounded in time, either plan is cheap, whatever the planner guesses of a
    jurisdiction's size: reading its canteens' alerts and sorting them (SQLite picks it without
    statistics; a city's year is ~10^5 rows), or walking the newest alerts until enough match."""
    for window in WINDOWS:
        lower = upper - window
        if since is not None and lower <= since:
            break
        rows = db.all(stmt.where(alerts.c.started_at >= iso(lower)))
        if len(rows) >= want:
            return rows
    return db.all(stmt)


def past_deadline(now: datetime, default_hours: float | None) -> sa.ColumnElement[bool]:
    """The alert's effective deadline (`effective_deadline`) has passed at `now`. Asked without arithmetic on
    the columns, so an index serves it and no row computes a time (SQLite, the open work of a city's year,
    11,000 alerts: 41 → 25 ms)."""
    a = alerts.c
    own = sa.and_(a.deadline.is_not(None), a.deadline < iso(now))
    if default_hours is None:
        return own
    return sa.or_(own, sa.and_(a.deadline.is_(None), a.started_at < iso(now - timedelta(hours=default_hours))))


def status_condition(db: Db, status: str, now: str, default_hours: float | None) -> sa.ColumnElement[bool]:
    pending = alerts.c.status == rectify.WorkflowStatus.PENDING.value
    if status == rectify.WorkflowStatus.OVERDUE:
        return sa.and_(pending, past_deadline(parse_iso(now), default_hours))
    if status == rectify.WorkflowStatus.PENDING:
        return sa.and_(pending, sa.not_(past_deadline(parse_iso(now), default_hours)))
    if status == rectify.WorkflowStatus.REJECTED:
        rejected = sa.select(transitions.c.id).where(transitions.c.alert_id == alerts.c.id,
                                                     transitions.c.to_status == "驳回")
        return sa.and_(pending, rejected.exists())
    if status in (rectify.WorkflowStatus.SUBMITTED, rectify.WorkflowStatus.APPROVED):
        return alerts.c.status == status
    raise QueryError(f"status {status!r} is not one of {', '.join(rectify.STATUSES)}")


def get_alert_row(db: Db, p: Principal, alert_id: str, conn: sa.Connection | None = None) -> dict[str, Any]:
    """The alert row if it exists and `p` may see it; NotFound otherwise (no existence leak)."""
    row = db.one(ALERT_SELECT.where(alerts.c.id == alert_id, visibility(p)), conn)
    if row is None:
        raise NotFound(f"alert {alert_id!r} not found")
    return row


def transitions_of(db: Db, alert_id: str) -> list[dict[str, Any]]:
    t = transitions.c
    return db.all(sa.select(t.from_status, t.to_status, t.actor, t.role, t.note, t.photo_sha256, t.at)
                  .where(t.alert_id == alert_id).order_by(t.id))


def apply_action(db: Db, p: Principal, alert_id: str, action: rectify.Action, *, now: datetime,
                 default_hours: float | None, note: str = "", photo_sha256: str | None = None,
                 new_deadline: datetime | None = None) -> dict[str, Any]:
    """Run one workflow action and record it, in one transaction; returns the updated row."""
    with db.write() as conn:
        row = get_alert_row(db, p, alert_id, conn)
        deadline = rectify.effective_deadline(parse_ts(row["deadline"]), parse_ts(row["started_at"]), default_hours)
        out = rectify.apply(action, status=row["status"], deadline=deadline, actor=p.name, role=p.role, now=now,
                            note=note, photo_sha256=photo_sha256, new_deadline=new_deadline)
        done = conn.execute(alerts.update().where(alerts.c.id == alert_id, alerts.c.status == row["status"])
                            .values(status=out.status, deadline=iso(out.deadline)))
        if done.rowcount != 1:
            raise Conflict(f"alert {alert_id!r} changed while it was being updated; reload and retry")
        if out.transitions:
            conn.execute(transitions.insert(), [
                {"alert_id": alert_id, "from_status": t.from_status, "to_status": t.to_status, "actor": t.actor,
                 "role": t.role, "note": t.note, "photo_sha256": t.photo_sha256, "at": iso(t.at)}
                for t in out.transitions])
        conn.execute(alert_changes.insert().values(alert_id=alert_id, kind=action.value, at=iso(now)))  # export feed
        return get_alert_row(db, p, alert_id, conn)


def list_devices(db: Db, p: Principal) -> list[dict[str, Any]]:
    d = devices.c
    return db.all(sa.select(d.id, d.canteen_id, canteens.c.name.label("canteen_name"), d.name, d.online, d.last_seen,
                            d.version, d.created_at)
                  .select_from(devices.outerjoin(canteens, canteens.c.id == d.canteen_id))
                  .where(visibility(p, d.canteen_id)).order_by(d.id))


def list_cameras(db: Db, p: Principal, device_id: str | None = None) -> list[dict[str, Any]]:
    cam = cameras.c
    stmt = (sa.select(cam.device_id, cam.camera_id, cam.name, cam.state, cam.fps, cam.reconnects, cam.error,
                      cam.updated_at, devices.c.canteen_id)
            .select_from(cameras.join(devices, devices.c.id == cam.device_id))
            .where(visibility(p, devices.c.canteen_id)).order_by(cam.device_id, cam.camera_id))
    if device_id:
        stmt = stmt.where(cam.device_id == device_id)
    return db.all(stmt)


def list_canteens(db: Db, p: Principal) -> list[dict[str, Any]]:
    c = canteens.c
    return db.all(sa.select(c.id, c.name, c.jurisdiction).where(visibility(p, c.id)).order_by(c.id))


UPLOAD_DEVICE = "api-upload"  # `media.device_id` of rectification photos uploaded through the API
PUBLIC_REPORT_DEVICE = "public-report"  # `device_id` of the public's 投诉/举报 alerts and of their photos


def media_for(db: Db, p: Principal, sha256: str) -> dict[str, Any]:
    """The media row of `sha256` if `p` may see a canteen that uploaded it, else NotFound.

    Access follows the uploader, never the alerts that name a hash (a box can name any hash): a box's
    upload belongs to the box's canteen; a rectification photo to the canteen of the alert it was
    submitted for (only that canteen's token can submit it); a ledger photo to the canteens that
    uploaded it for their ledgers (`ledger_photos`); a photo sent with a public report to the canteen of
    that report's alert (both written by the receiver itself, `PUBLIC_REPORT_DEVICE`). Nobody without a
    login gets an original: the public page serves blurred copies (cloud_receiver/web/public_pages.py)."""
    complete = sa.and_(media.c.sha256 == sha256, media.c.complete == 1)
    from_box = (sa.select(media).select_from(media.join(devices, devices.c.id == media.c.device_id))
                .where(complete, visibility(p, devices.c.canteen_id)).limit(1))
    photo = (sa.select(media).select_from(media.join(transitions, transitions.c.photo_sha256 == media.c.sha256)
                                          .join(alerts, alerts.c.id == transitions.c.alert_id))
             .where(complete, media.c.device_id == UPLOAD_DEVICE, visibility(p)).limit(1))
    ledger = (sa.select(media).select_from(media.join(ledger_photos, ledger_photos.c.sha256 == media.c.sha256))
              .where(complete, media.c.device_id == UPLOAD_DEVICE, visibility(p, ledger_photos.c.canteen_id)).limit(1))
    report = (sa.select(media).select_from(media.join(alerts, alerts.c.snapshot_sha256 == media.c.sha256))
              .where(complete, media.c.device_id == PUBLIC_REPORT_DEVICE, alerts.c.device_id == PUBLIC_REPORT_DEVICE,
                     visibility(p)).limit(1))
    row = db.one(from_box) or db.one(photo) or db.one(ledger) or db.one(report)
    if row is None:
        raise NotFound(f"media {sha256} not found")
    return row


def public_profile(row: dict[str, Any]) -> dict[str, Any]:
    """The public part of a canteen (`public_json`), defaults filled; anything stored in another shape
    (null, a string, a list of numbers) reads as absent, so stored data cannot make a read fail."""
    try:
        data = json.loads(row.get("public_json") or "{}")
    except (ValueError, RecursionError):
        data = {}
    data = data if isinstance(data, dict) else {}

    def items(key: str) -> list[dict[str, Any]]:
        value = data.get(key)
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    snaps = [s for s in items("snapshots") if s.get("public") is not False and isinstance(s.get("sha256"), str)]
    rating = data.get("rating")
    return {"licences": items("licences"), "rating": rating if isinstance(rating, str) else None,
            "sampling": items("sampling"), "snapshots": snaps}


def public_snapshot_media(db: Db, sha256: str, canteen_id: str) -> dict[str, Any] | None:
    """The media row of `sha256` uploaded by a box of `canteen_id` whose public page shows it (the
    original, for the public page to blur: never served as it is)."""
    rows = db.all(sa.select(media, canteens.c.public_json.label("owner_public"))
                  .select_from(media.join(devices, devices.c.id == media.c.device_id)
                               .join(canteens, canteens.c.id == devices.c.canteen_id))
                  .where(media.c.sha256 == sha256, media.c.complete == 1, canteens.c.id == canteen_id))
    for row in rows:
        profile = public_profile({"public_json": row.pop("owner_public")})
        if any(s["sha256"] == sha256 for s in profile["snapshots"]):
            return row
    return None


def own_pictures(db: Db, canteen_id: str, shas: list[str]) -> set[str]:
    """Those of `shas` that a box of this canteen uploaded."""
    if not shas:
        return set()
    stmt = (sa.select(media.c.sha256).distinct().select_from(media.join(devices, devices.c.id == media.c.device_id))
            .where(devices.c.canteen_id == canteen_id, media.c.sha256.in_(shas)))
    return {r["sha256"] for r in db.all(stmt)}
