"""Ledger entries, their revisions, photos and comments in the database (SQLAlchemy Core, either engine).

An entry is written once as revision 1. During 24 h after a revision was written (`EDIT_WINDOW`), its
canteen may replace it in place (a typing error; `edited_by`/`edited_at` say that it was edited). After
that the revision is fixed: a correction adds revision n+1 with who, when and why, and the older one
stays readable (`is_current = 0`) — 问题食品来源可溯、责任可查.

Who: admin writes everywhere; a canteen writes its own ledgers; a regulator reads and comments on the
canteens of its jurisdiction. A canteen outside the principal's scope is "not found" (no existence leak).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from ulid import ULID

from cloud_receiver.admin.auth import Principal
from cloud_receiver.ledgers.errors import Forbidden, Impossible
from cloud_receiver.ledgers.models import KINDS, Entry, photo_refs, problems
from cloud_receiver.storage.db import Db, iso, parse_iso
from cloud_receiver.storage.schema import canteens, ledger_comments, ledger_photos, ledger_records
from cloud_receiver.workflow.queries import Conflict, NotFound, QueryError, visibility

EDIT_WINDOW = timedelta(hours=24)
LIMIT_MAX = 200
COMMENT_MAX = 1000
R = ledger_records.c


def local_day(t: datetime, tz_hours: int) -> date:
    return t.astimezone(timezone(timedelta(hours=tz_hours))).date()


def canteen_of(db: Db, p: Principal, canteen_id: str, conn: sa.Connection | None = None) -> dict[str, Any]:
    """The canteen row if `p` may see it; NotFound otherwise (whether or not it exists)."""
    c = canteens.c
    row = db.one(sa.select(c.id, c.name, c.jurisdiction).where(c.id == canteen_id, visibility(p, c.id)), conn)
    if row is None:
        raise NotFound(f"canteen {canteen_id!r} not found")
    return row


def require_writer(p: Principal) -> None:
    if p.role not in ("admin", "canteen"):
        raise Forbidden(f"role {p.role!r} may read and comment on ledgers, not write them; the canteen writes its own")


def view(row: dict[str, Any]) -> dict[str, Any]:
    """The API's JSON form of one revision row."""
    return {"id": row["entry_id"], "kind": row["kind"], "kind_name": KINDS[row["kind"]].name,
            "canteen_id": row["canteen_id"], "day": row["day"], "revision": row["revision"], "data": data_of(row),
            "created_by": row["created_by"], "created_role": row["created_role"], "created_at": row["created_at"],
            "edited_by": row["edited_by"], "edited_at": row["edited_at"], "reason": row["reason"],
            "current": bool(row["is_current"]),
            "editable_until": iso(parse_iso(row["created_at"]) + EDIT_WINDOW)}


def data_of(row: dict[str, Any]) -> dict[str, Any]:
    data = row["data"]
    return json.loads(data) if isinstance(data, str) else dict(data)


def _new_row(p: Principal, canteen_id: str, kind: str, entry_id: str, entry: Entry, day: str, now: datetime,
             revision: int = 1, supersedes: str | None = None, reason: str | None = None) -> dict[str, Any]:
    data = entry.model_dump(mode="json")
    subject = KINDS[kind].subject
    return {"id": str(ULID()), "entry_id": entry_id, "canteen_id": canteen_id, "kind": kind,
            "day": data.get("day", day), "subject": data.get(subject) if subject else None, "data": data,
            "revision": revision, "supersedes": supersedes, "is_current": 1, "created_by": p.name,
            "created_role": p.role, "created_at": iso(now), "edited_by": None, "edited_at": None, "reason": reason}


def check_entries(db: Db, conn: sa.Connection, canteen_id: str, kind: str, entries: Sequence[tuple[str, Entry]],
                  today: date, same_entry: str | None = None) -> None:
    """Raise Impossible for the first entry (given with its field prefix) that cannot be stored: a rule of
    `models.problems`, a photo not uploaded for this canteen, an entry named that this canteen has not (or,
    for a new entry, one marked inactive: a supplier no longer used, a person who left)."""
    for prefix, entry in entries:
        for name, problem in problems(entry, today):
            raise Impossible(prefix + name, problem)
    photos = {(prefix + f, sha) for prefix, e in entries for f, sha in photo_refs(e.model_dump(mode="json"))}
    if photos:
        have = {r["sha256"] for r in db.all(sa.select(ledger_photos.c.sha256).where(
            ledger_photos.c.canteen_id == canteen_id, ledger_photos.c.sha256.in_({s for _, s in photos})), conn)}
        for where, sha in sorted(photos):
            if sha not in have:
                raise Impossible(where, f"photo {sha} was not uploaded for this canteen "
                                 f"(POST /api/v1/canteens/{canteen_id}/ledger-photos first)")
    for ref_field, ref_kind in KINDS[kind].refs.items():
        wanted = {getattr(e, ref_field) for _, e in entries} - {None}
        found = {r["entry_id"]: data_of(r) for r in db.all(_current(canteen_id, ref_kind).where(
            R.entry_id.in_(wanted)), conn)} if wanted else {}
        for prefix, e in entries:
            ref = getattr(e, ref_field)
            if ref is not None and ref not in found:
                raise Impossible(prefix + ref_field, f"this canteen has no {ref_kind} entry {ref!r}")
            if ref is not None and same_entry is None and found[ref].get("active") is False:
                raise Impossible(prefix + ref_field, f"{ref_kind} entry {ref!r} is marked inactive")
    if kind == "suppliers":
        codes = {data_of(r).get("credit_code"): r["entry_id"] for r in db.all(_current(canteen_id, "suppliers"), conn)}
        for prefix, e in entries:
            other = codes.get(getattr(e, "credit_code", None))
            if other is not None and other != same_entry:
                raise Impossible(prefix + "credit_code", f"supplier entry {other!r} already has this credit code")


def _current(canteen_id: str, kind: str) -> sa.Select[Any]:
    return sa.select(ledger_records).where(R.canteen_id == canteen_id, R.kind == kind, R.is_current == 1)


def create(db: Db, p: Principal, canteen_id: str, kind: str, entries: Sequence[Entry], *, now: datetime,
           tz_hours: int, prefixes: Sequence[str] | None = None, entry_ids: Sequence[str] | None = None,
           ) -> list[dict[str, Any]]:
    """Store new entries (one transaction: all or none); returns their views."""
    today = local_day(now, tz_hours)
    prefixes = prefixes or [""] * len(entries)
    with db.write() as conn:
        canteen_of(db, p, canteen_id, conn)  # 404 outside the scope, before 403 for the role
        require_writer(p)
        check_entries(db, conn, canteen_id, kind, list(zip(prefixes, entries, strict=True)), today)
        ids = entry_ids or [str(ULID()) for _ in entries]
        rows = [_new_row(p, canteen_id, kind, i, e, today.isoformat(), now) for i, e in zip(ids, entries, strict=True)]
        conn.execute(ledger_records.insert(), rows)
    return [view(r) for r in rows]


def encode_cursor(day: str, entry_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([day, entry_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        day, entry_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        date.fromisoformat(day)
    except (binascii.Error, ValueError, TypeError) as err:
        raise QueryError("cursor: not one this API returned") from err
    if not isinstance(entry_id, str):
        raise QueryError("cursor: not one this API returned")
    return day, entry_id


def list_entries(db: Db, p: Principal, canteen_id: str, kind: str, *, day_from: date | None = None,
                 day_to: date | None = None, subject: str | None = None, limit: int = 50,
                 cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of an entry list (current revisions), newest day first; returns (views, next cursor)."""
    canteen_of(db, p, canteen_id)
    stmt = _current(canteen_id, kind)
    if day_from:
        stmt = stmt.where(R.day >= day_from.isoformat())
    if day_to:
        stmt = stmt.where(R.day <= day_to.isoformat())
    if subject:
        stmt = stmt.where(R.subject == subject)
    if cursor:
        day, entry_id = decode_cursor(cursor)
        stmt = stmt.where(sa.or_(R.day < day, sa.and_(R.day == day, R.entry_id < entry_id)))
    rows = db.all(stmt.order_by(R.day.desc(), R.entry_id.desc()).limit(limit + 1))
    nxt = encode_cursor(rows[limit - 1]["day"], rows[limit - 1]["entry_id"]) if len(rows) > limit else None
    return [view(r) for r in rows[:limit]], nxt


def current_row(db: Db, canteen_id: str, kind: str, entry_id: str, conn: sa.Connection | None = None,
                ) -> dict[str, Any]:
    row = db.one(_current(canteen_id, kind).where(R.entry_id == entry_id), conn)
    if row is None:
        raise NotFound(f"no {kind} entry {entry_id!r} in canteen {canteen_id!r}")
    return row


def get_entry(db: Db, p: Principal, canteen_id: str, kind: str, entry_id: str) -> dict[str, Any]:
    """The entry's current revision, with every revision (oldest first) and the comments on it."""
    canteen_of(db, p, canteen_id)
    out = view(current_row(db, canteen_id, kind, entry_id))
    out["revisions"] = [view(r) for r in db.all(sa.select(ledger_records).where(
        R.canteen_id == canteen_id, R.entry_id == entry_id).order_by(R.revision))]
    out["comments"] = comments_of(db, canteen_id, entry_id)
    return out


def comments_of(db: Db, canteen_id: str, entry_id: str) -> list[dict[str, Any]]:
    c = ledger_comments.c
    return db.all(sa.select(c.id, c.author, c.role, c.text, c.at)
                  .where(c.canteen_id == canteen_id, c.entry_id == entry_id).order_by(c.id))


def edit(db: Db, p: Principal, canteen_id: str, kind: str, entry_id: str, entry: Entry, *, now: datetime,
         tz_hours: int) -> dict[str, Any]:
    """Replace the current revision in place: only during EDIT_WINDOW after it was written."""
    with db.write() as conn:
        canteen_of(db, p, canteen_id, conn)
        require_writer(p)
        row = current_row(db, canteen_id, kind, entry_id, conn)
        written = parse_iso(row["created_at"])
        if now - written > EDIT_WINDOW:
            raise Impossible("(entry)", f"revision {row['revision']} was written at {row['created_at']}, more than "
                             f"{EDIT_WINDOW.total_seconds() / 3600:g} h ago: it can no longer be changed; add a "
                             f"correction with POST …/{kind}/{entry_id}/revisions and a reason")
        check_entries(db, conn, canteen_id, kind, [("", entry)], local_day(now, tz_hours), same_entry=entry_id)
        new = _new_row(p, canteen_id, kind, entry_id, entry, row["day"], now)
        values = {k: new[k] for k in ("day", "subject", "data")} | {"edited_by": p.name, "edited_at": iso(now)}
        done = conn.execute(ledger_records.update().where(R.id == row["id"], R.is_current == 1).values(**values))
        if done.rowcount != 1:
            raise Conflict(f"{kind} entry {entry_id!r} changed while it was being edited; reload and retry")
        return view(db.one(sa.select(ledger_records).where(R.id == row["id"]), conn) or row)


def correct(db: Db, p: Principal, canteen_id: str, kind: str, entry_id: str, entry: Entry, reason: str, *,
            now: datetime, tz_hours: int) -> dict[str, Any]:
    """Add a revision that corrects the current one, which stays readable; returns the new revision's view."""
    with db.write() as conn:
        canteen_of(db, p, canteen_id, conn)
        require_writer(p)
        row = current_row(db, canteen_id, kind, entry_id, conn)
        check_entries(db, conn, canteen_id, kind, [("data.", entry)], local_day(now, tz_hours), same_entry=entry_id)
        done = conn.execute(ledger_records.update().where(R.id == row["id"], R.is_current == 1).values(is_current=0))
        if done.rowcount != 1:
            raise Conflict(f"{kind} entry {entry_id!r} changed while it was being corrected; reload and retry")
        new = _new_row(p, canteen_id, kind, entry_id, entry, row["day"], now, revision=row["revision"] + 1,
                       supersedes=row["id"], reason=reason)
        conn.execute(ledger_records.insert(), [new])
    return view(new)


def comment(db: Db, p: Principal, canteen_id: str, kind: str, entry_id: str, text: str, *,
            now: datetime) -> dict[str, Any]:
    """A remark on an entry: by a regulator or admin, or the canteen's reply (any role that sees it)."""
    with db.write() as conn:
        canteen_of(db, p, canteen_id, conn)
        current_row(db, canteen_id, kind, entry_id, conn)
        conn.execute(ledger_comments.insert().values(canteen_id=canteen_id, entry_id=entry_id, author=p.name,
                                                     role=p.role, text=text, at=iso(now)))
    return get_entry(db, p, canteen_id, kind, entry_id)


def add_photo(db: Db, p: Principal, canteen_id: str, sha256: str, *, now: datetime) -> None:
    """Record that this canteen uploaded a ledger photo (its file and `media` row are stored already)."""
    with db.write() as conn:
        canteen_of(db, p, canteen_id, conn)
        require_writer(p)
        lp = ledger_photos.c
        if db.one(sa.select(lp.sha256).where(lp.canteen_id == canteen_id, lp.sha256 == sha256), conn) is None:
            conn.execute(ledger_photos.insert().values(canteen_id=canteen_id, sha256=sha256, uploaded_by=p.name,
                                                       uploaded_at=iso(now)))


def day_start(day: date, tz_hours: int) -> datetime:
    """The start of a local day, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone(timedelta(hours=tz_hours))).astimezone(UTC)
