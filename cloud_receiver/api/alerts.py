"""Alert endpoints: list, detail, and the rectification workflow (deadline, rectification, review)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from aiohttp import web

from bk_contract import ChunkHeader
from bk_contract.media_types import JPEG, sniff_media_type
from bk_contract.violations import ALERT_TYPE_NAMES
from cloud_receiver.admin.auth import Principal, principal_of
from cloud_receiver.api.bodies import Approve, DeadlineBody, RectificationJson, Reject
from cloud_receiver.api.context import ApiContext, ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.http import json_response
from cloud_receiver.api.params import base64_field, from_json, json_raw, parse_int, parse_time, read_form
from cloud_receiver.storage.media_store import write_media_file
from cloud_receiver.storage.sqlite import utc_now
from cloud_receiver.workflow import queries, rectify

CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,512}$")  # what next_cursor looks like (base64url)
UPLOAD_DEVICE = queries.UPLOAD_DEVICE  # `media.device_id` of photos uploaded through the API (owned via their alert)


def _require_login(request: web.Request) -> None:
    if principal_of(request).role == "public":
        raise ApiError(401, "unauthenticated", "this endpoint needs an `Authorization: Bearer <token>` header")


async def list_alerts(request: web.Request) -> web.Response:
    _require_login(request)
    c, q, p = ctx(request), request.query, principal_of(request)
    types = tuple(q["type"].split(",")) if "type" in q else ()
    unknown = [t for t in types if t not in ALERT_TYPE_NAMES]
    if unknown:
        raise bad_request(f"type: unknown alert type(s) {', '.join(repr(t[:40]) for t in unknown[:5])}; "
                          f"known: {', '.join(ALERT_TYPE_NAMES)}")
    cursor = q.get("cursor")
    if cursor is not None:
        if not CURSOR.match(cursor):
            raise bad_request("cursor: not a cursor (give next_cursor of the previous page as it was)")
        try:
            queries.decode_cursor(cursor)
        except queries.QueryError as err:
            raise ApiError(422, "bad_request", f"cursor: {err}") from err
    canteen = q.get("canteen")
    if canteen is not None and p.role == "canteen" and canteen != p.scope:
        raise ApiError(403, "forbidden", f"this token may only read canteen {p.scope!r}")
    tz = c.settings.tz_hours
    f = queries.AlertFilter(since=parse_time("since", q.get("since"), tz_hours=tz),
                            until=parse_time("until", q.get("until"), tz_hours=tz),
                            types=types, canteen_id=canteen, status=q.get("status"))
    limit = parse_int("limit", q.get("limit"), 50, 1, queries.LIMIT_MAX)
    rows, nxt = queries.list_alerts(c.storage.sql, p, f, now=c.now(), limit=limit, cursor=cursor,
                                    default_hours=c.settings.default_deadline_hours)
    return json_response({"items": rows, "next_cursor": nxt})


async def get_alert(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    row = queries.get_alert_row(c.storage.sql, p, request.match_info["id"])
    body = queries.alert_view(row, c.now(), c.settings.default_deadline_hours)
    body["transitions"] = queries.transitions_of(c.storage.sql, row["id"])
    return json_response(body)


def _answer(c: ApiContext, row: dict, status: int = 200) -> web.Response:
    body = queries.alert_view(row, c.now(), c.settings.default_deadline_hours)
    body["transitions"] = queries.transitions_of(c.storage.sql, row["id"])
    return json_response(body, status=status)


def _in_future(c: ApiContext, deadline: datetime | None) -> datetime | None:
    """A well-formed deadline that has already passed is refused with 422 (the schema cannot say "future")."""
    if deadline is not None and deadline <= c.now():
        raise ApiError(422, "invalid_input", f"deadline: {deadline.isoformat()} is not in the future")
    return deadline


async def set_deadline(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    body = from_json(DeadlineBody, await json_raw(request))
    deadline = _in_future(c, parse_time("deadline", body.deadline, required=True))
    row = queries.apply_action(c.storage.sql, p, request.match_info["id"], rectify.Action.SET_DEADLINE, now=c.now(),
                               default_hours=c.settings.default_deadline_hours, note=body.note, new_deadline=deadline)
    return _answer(c, row)


async def review(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    raw = await json_raw(request)
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None  # not JSON: from_json below names the problem
    decision = obj.get("decision") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and decision not in ("approve", "reject"):
        shown = json.dumps(decision, ensure_ascii=False)[:40]
        raise bad_request(f"decision: must be 'approve' or 'reject', not {shown}", "invalid_input")
    body: Approve | Reject = from_json(Reject if decision == "reject" else Approve, raw)
    deadline = _in_future(c, parse_time("deadline", body.deadline, required=True)) if isinstance(body, Reject) else None
    action = rectify.Action.APPROVE if decision == "approve" else rectify.Action.REJECT
    row = queries.apply_action(c.storage.sql, p, request.match_info["id"], action, now=c.now(),
                               default_hours=c.settings.default_deadline_hours, note=body.note, new_deadline=deadline)
    return _answer(c, row)


async def submit_rectification(request: web.Request) -> web.Response:
    """Canteen: note + photo, as multipart/form-data (`note`, `photo`) or JSON (`note`, `photo_base64`)."""
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    if p.role != "canteen":
        raise ApiError(403, "forbidden", f"role {p.role!r} may not submit a rectification; only a canteen token may")
    alert_id = request.match_info["id"]
    row = queries.get_alert_row(c.storage.sql, p, alert_id)  # 404 before reading a large body
    _dry_run_submit(c, p, row)  # 409 before storing a photo that could not be used
    limit = c.settings.photo_max_bytes
    if request.content_type.startswith("multipart/"):
        form = await read_form(request, ("note", "photo"), limit)
        note, photo = form.get("note", b"").decode("utf-8", "replace"), form.get("photo")
        if len(note) > rectify.NOTE_MAX:
            raise bad_request(f"note is {len(note)} characters, at most {rectify.NOTE_MAX} allowed")
    else:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data (note, photo) or "
                           f"application/json (note, photo_base64), not {request.content_type or 'nothing'}")
        raw = await json_raw(request, max_bytes=limit * 4 // 3 + 64 * 1024)
        body = from_json(RectificationJson, raw)
        note, photo = body.note, base64_field("photo_base64", body.photo_base64)
    sha = store_photo(c, photo)
    row = queries.apply_action(c.storage.sql, p, alert_id, rectify.Action.SUBMIT, now=c.now(),
                               default_hours=c.settings.default_deadline_hours, note=note, photo_sha256=sha)
    return _answer(c, row)


def _dry_run_submit(c: ApiContext, p: Principal, row: dict) -> None:
    deadline = rectify.effective_deadline(queries.parse_ts(row["deadline"]), queries.parse_ts(row["started_at"]),
                                          c.settings.default_deadline_hours)
    rectify.apply(rectify.Action.SUBMIT, status=row["status"], deadline=deadline, actor=p.name, role=p.role,
                  now=c.now(), note="(check)", photo_sha256="(check)")


def store_photo(c: ApiContext, data: bytes | None) -> str:
    """Store an uploaded JPEG photo by content hash (file + `media` row); returns its sha256.

    400 when there is none, 413 over the configured `photo_max_bytes`, 422 when it is not a JPEG.
    """
    if data is None:
        raise bad_request("photo is required: a form field `photo` with the JPEG image", "invalid_input")
    limit = c.settings.photo_max_bytes
    if len(data) > limit:
        raise ApiError(413, "too_large", f"photo of {len(data)} bytes exceeds {limit}")
    ctype = sniff_media_type(data)
    if ctype != JPEG:  # a well-formed upload of the wrong kind of file: 422
        raise ApiError(422, "invalid_input", "photo: must be a JPEG image (bytes starting with the JPEG SOI marker "
                       "ff d8 ff)")
    sha = hashlib.sha256(data).hexdigest()
    rel = write_media_file(c.media_dir, data, sha)
    # recorded like a finished upload of the pseudo-device UPLOAD_DEVICE (a repeat changes nothing)
    c.storage.finish_media(UPLOAD_DEVICE, sha, ChunkHeader(0, 1, len(data), sha, ctype), rel, utc_now())
    return sha
