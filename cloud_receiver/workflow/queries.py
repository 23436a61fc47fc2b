"""Read queries of the API and the workflow write, on top of `storage.SqliteStorage`.

Every query is filtered by what the principal may see (`visibility`), so a row outside a token's
scope never leaves the database. Timestamps compare as text: the store writes one format,
`YYYY-MM-DDTHH:MM:SS.mmmZ` (`storage.iso`), and inputs are normalised to it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from bk_contract.violations import type_name
from cloud_receiver.admin.auth import Principal
from cloud_receiver.storage.sqlite import SqliteStorage, iso
from cloud_receiver.workflow import rectify

LIMIT_MAX = 200


class QueryError(ValueError):
    """Bad query input (cursor, filter); the message says what is wrong."""


class NotFound(LookupError):
    """No such row, or not visible to this principal."""


class Conflict(Exception):
    """The row changed under us (another reviewer acted first)."""


def visibility(p: Principal, column: str = "a.canteen_id") -> tuple[str, list[Any]]:
    """SQL condition limiting rows (by their canteen id column) to what `p` may see."""
    if p.role == "admin":
        return "1 = 1", []
    if p.role == "regulator":
        return f"{column} IN (SELECT id FROM canteens WHERE substr(jurisdiction, 1, ?) = ?)", [len(p.scope), p.scope]
    if p.role == "canteen":
        return f"{column} = ?", [p.scope]
    return "0 = 1", []


def deadline_sql(default_hours: float | None) -> str:
    """SQL expression of an alert's effective deadline (stored one, else started_at + default)."""
    if default_hours is None:
        return "a.deadline"
    return f"COALESCE(a.deadline, strftime('%Y-%m-%dT%H:%M:%fZ', a.started_at, '+{float(default_hours)} hours'))"


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
    return started_at, alert_id


@dataclass(frozen=True, slots=True)
class AlertFilter:
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()
    canteen_id: str | None = None
    status: str | None = None


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


ALERT_SELECT = "SELECT a.*, c.name AS canteen_name, c.jurisdiction FROM alerts a LEFT JOIN canteens c ON c.id = a.canteen_id"


def list_alerts(db: Database, p: Principal, f: AlertFilter, *, now: datetime, limit: int = 50,
                cursor: str | None = None, default_hours: float | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of alerts, newest first, ordered by (started_at, id); returns (rows, next cursor)."""
    if not 1 <= limit <= LIMIT_MAX:
        raise QueryError(f"limit must be between 1 and {LIMIT_MAX}")
    where, params = visibility(p)
    conds, args = [where], list(params)
    if f.since:
        conds.append("a.started_at >= ?")
        args.append(iso(f.since))
    if f.until:
        conds.append("a.started_at < ?")
        args.append(iso(f.until))
    if f.types:
        conds.append(f"a.type IN ({', '.join('?' * len(f.types))})")
        args.extend(f.types)
    if f.canteen_id:
        conds.append("a.canteen_id = ?")
        args.append(f.canteen_id)
    if f.status:
        sql, extra = _status_condition(f.status, iso(now) or "", default_hours)
        conds.append(sql)
        args.extend(extra)
    if cursor:
        started_at, alert_id = decode_cursor(cursor)
        conds.append("(a.started_at < ? OR (a.started_at = ? AND a.id < ?))")
        args.extend([started_at, started_at, alert_id])
    sql = f"{ALERT_SELECT} WHERE {' AND '.join(conds)} ORDER BY a.started_at DESC, a.id DESC LIMIT ?"
    rows = list(db.query(sql, [*args, limit + 1]))
    nxt = encode_cursor(rows[limit - 1]["started_at"], rows[limit - 1]["id"]) if len(rows) > limit else None
    return [alert_view(r, now, default_hours) for r in rows[:limit]], nxt


def _status_condition(status: str, now: str, default_hours: float | None) -> tuple[str, list[Any]]:
    deadline = deadline_sql(default_hours)
    if status == rectify.WorkflowStatus.OVERDUE:
        return f"(a.status = '待整改' AND {deadline} IS NOT NULL AND {deadline} < ?)", [now]
    if status == rectify.WorkflowStatus.PENDING:
        return f"(a.status = '待整改' AND ({deadline} IS NULL OR {deadline} >= ?))", [now]
    if status == rectify.WorkflowStatus.REJECTED:
        return ("(a.status = '待整改' AND EXISTS (SELECT 1 FROM transitions t WHERE t.alert_id = a.id"
                " AND t.to_status = '驳回'))", [])
    if status in (rectify.WorkflowStatus.SUBMITTED, rectify.WorkflowStatus.APPROVED):
        return "a.status = ?", [status]
    raise QueryError(f"status {status!r} is not one of {', '.join(rectify.STATUSES)}")


def get_alert_row(db: Database, p: Principal, alert_id: str) -> dict[str, Any]:
    """The alert row if it exists and `p` may see it; NotFound otherwise (no existence leak)."""
    where, params = visibility(p)
    rows = list(db.query(f"{ALERT_SELECT} WHERE a.id = ? AND {where}", [alert_id, *params]))
    if not rows:
        raise NotFound(f"alert {alert_id!r} not found")
    return rows[0]


def transitions(db: Database, alert_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT from_status, to_status, actor, role, note, photo_sha256, at FROM transitions"
                         " WHERE alert_id = ? ORDER BY id", [alert_id]))


def apply_action(storage: SqliteStorage, p: Principal, alert_id: str, action: rectify.Action, *, now: datetime,
                 default_hours: float | None, note: str = "", photo_sha256: str | None = None,
                 new_deadline: datetime | None = None) -> dict[str, Any]:
    """Run one workflow action and record it, in one transaction; returns the updated row."""
    with storage.write() as db:
        row = get_alert_row(db, p, alert_id)
        deadline = rectify.effective_deadline(parse_ts(row["deadline"]), parse_ts(row["started_at"]), default_hours)
        out = rectify.apply(action, status=row["status"], deadline=deadline, actor=p.name, role=p.role, now=now,
                            note=note, photo_sha256=photo_sha256, new_deadline=new_deadline)
        cur = db.execute("UPDATE alerts SET status = ?, deadline = ? WHERE id = ? AND status = ?",
                         [out.status, iso(out.deadline), alert_id, row["status"]])
        if cur.rowcount != 1:
            raise Conflict(f"alert {alert_id!r} changed while it was being updated; reload and retry")
        for t in out.transitions:
            db.execute("INSERT INTO transitions (alert_id, from_status, to_status, actor, role, note, photo_sha256, at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [alert_id, t.from_status, t.to_status, t.actor, t.role, t.note, t.photo_sha256, iso(t.at)])
        return get_alert_row(db, p, alert_id)


def list_devices(db: Database, p: Principal) -> list[dict[str, Any]]:
    where, params = visibility(p, "d.canteen_id")
    return list(db.query(
        "SELECT d.id, d.canteen_id, c.name AS canteen_name, d.name, d.online, d.last_seen, d.version, d.created_at"
        f" FROM devices d LEFT JOIN canteens c ON c.id = d.canteen_id WHERE {where} ORDER BY d.id", params))


def list_cameras(db: Database, p: Principal, device_id: str | None = None) -> list[dict[str, Any]]:
    where, params = visibility(p, "d.canteen_id")
    extra = " AND cam.device_id = ?" if device_id else ""
    return list(db.query(
        "SELECT cam.device_id, cam.camera_id, cam.name, cam.state, cam.fps, cam.reconnects, cam.error,"
        " cam.updated_at, d.canteen_id FROM cameras cam JOIN devices d ON d.id = cam.device_id"
        f" WHERE {where}{extra} ORDER BY cam.device_id, cam.camera_id", [*params, *([device_id] if device_id else [])]))


UPLOAD_DEVICE = "api-upload"  # `media.device_id` of rectification photos uploaded through the API


def media_for(db: Database, p: Principal, sha256: str) -> dict[str, Any]:
    """The media row of `sha256` if `p` may see a canteen that uploaded it, else NotFound.

    Access follows the uploader, never the alerts that name a hash (a box can name any hash): a box's
    upload belongs to the box's canteen; a rectification photo to the canteen of the alert it was
    submitted for (only that canteen's token can submit it). Anyone may read a snapshot its own
    canteen put on its public page."""
    where, params = visibility(p, "d.canteen_id")
    twhere, tparams = visibility(p)
    rows = list(db.query(
        "SELECT m.* FROM media m JOIN devices d ON d.id = m.device_id"
        f" WHERE m.sha256 = ? AND m.complete = 1 AND {where}"
        " UNION ALL SELECT m.* FROM media m JOIN transitions t ON t.photo_sha256 = m.sha256"
        " JOIN alerts a ON a.id = t.alert_id"
        f" WHERE m.sha256 = ? AND m.complete = 1 AND m.device_id = ? AND {twhere} LIMIT 1",
        [sha256, *params, sha256, UPLOAD_DEVICE, *tparams]))
    if not rows:
        rows = public_snapshot_media(db, sha256)
    if not rows:
        raise NotFound(f"media {sha256} not found")
    return rows[0]


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


def public_snapshot_media(db: Database, sha256: str) -> list[dict[str, Any]]:
    """The media rows of `sha256` uploaded by a box of a canteen whose public page shows it."""
    rows = list(db.query("SELECT m.*, d.canteen_id AS owner FROM media m JOIN devices d ON d.id = m.device_id"
                         " WHERE m.sha256 = ? AND m.complete = 1", [sha256]))
    for row in rows:
        canteen = db.execute("SELECT public_json FROM canteens WHERE id = ?", [row.pop("owner")]).fetchone()
        profile = public_profile({"public_json": canteen[0] if canteen else None})
        if any(s["sha256"] == sha256 for s in profile["snapshots"]):
            return [row]
    return []


def stats(db: Database, p: Principal, since: datetime, until: datetime, tz_hours: int = 8) -> dict[str, Any]:
    """Alert counts by type, canteen and local day in [since, until), and the device online rate."""
    where, params = visibility(p)
    base = f"FROM alerts a WHERE {where} AND a.started_at >= ? AND a.started_at < ?"
    args = [*params, iso(since), iso(until)]
    by_type = {r[0]: r[1] for r in db.execute(f"SELECT a.type, count(*) {base} GROUP BY a.type", args).fetchall()}
    by_canteen = {r[0] or "": r[1] for r in db.execute(f"SELECT a.canteen_id, count(*) {base} GROUP BY a.canteen_id",
                                                      args).fetchall()}
    by_day = {r[0]: r[1] for r in db.execute(
        f"SELECT date(a.started_at, '{int(tz_hours):+d} hours') AS day, count(*) {base} GROUP BY day ORDER BY day",
        args).fetchall()}
    dwhere, dparams = visibility(p, "d.canteen_id")
    total, online = db.execute(f"SELECT count(*), coalesce(sum(d.online), 0) FROM devices d WHERE {dwhere}",
                               dparams).fetchone()
    return {"since": iso(since), "until": iso(until), "total": sum(by_type.values()), "by_type": by_type,
            "by_canteen": by_canteen, "by_day": by_day,
            "devices": {"total": total, "online": online, "online_rate": round(online / total, 4) if total else None}}
