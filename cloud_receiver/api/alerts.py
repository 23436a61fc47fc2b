"""Alert endpoints: list, detail, and the rectification workflow (deadline, rectification, review)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from aiohttp import BodyPartReader, web

from bk_contract.violations import VIOLATION_NAMES
from cloud_receiver.admin.auth import Principal, principal_of
from cloud_receiver.api.context import ApiContext, ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.params import json_body, parse_int, parse_time, text_field
from cloud_receiver.storage.media_store import write_media_file
from cloud_receiver.storage.sqlite import utc_now
from cloud_receiver.workflow import queries, rectify

PHOTO_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
UPLOAD_DEVICE = "api-upload"  # `media.device_id` of photos uploaded through the API


def _require_login(request: web.Request) -> None:
    if principal_of(request).role == "public":
        raise ApiError(401, "unauthenticated", "this endpoint needs an `Authorization: Bearer <token>` header")


async def list_alerts(request: web.Request) -> web.Response:
    _require_login(request)
    c, q, p = ctx(request), request.query, principal_of(request)
    types = tuple(t for t in q.get("type", "").split(",") if t)
    unknown = [t for t in types if t not in VIOLATION_NAMES]
    if unknown:
        raise bad_request(f"unknown alert type(s) {', '.join(unknown)}; known: {', '.join(VIOLATION_NAMES)}")
    canteen = q.get("canteen") or None
    if canteen and p.role == "canteen" and canteen != p.scope:
        raise ApiError(403, "forbidden", f"this token may only read canteen {p.scope!r}")
    f = queries.AlertFilter(since=parse_time("since", q.get("since")), until=parse_time("until", q.get("until")),
                            types=types, canteen_id=canteen, status=q.get("status") or None)
    limit = parse_int("limit", q.get("limit"), 50, 1, queries.LIMIT_MAX)
    rows, nxt = queries.list_alerts(c.storage.db, p, f, now=c.now(), limit=limit, cursor=q.get("cursor") or None,
                                    default_hours=c.settings.default_deadline_hours)
    return web.json_response({"items": rows, "next_cursor": nxt})


async def get_alert(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    row = queries.get_alert_row(c.storage.db, p, request.match_info["id"])
    body = queries.alert_view(row, c.now(), c.settings.default_deadline_hours)
    body["transitions"] = queries.transitions(c.storage.db, row["id"])
    return web.json_response(body)


def _answer(c: ApiContext, row: dict, status: int = 200) -> web.Response:
    body = queries.alert_view(row, c.now(), c.settings.default_deadline_hours)
    body["transitions"] = queries.transitions(c.storage.db, row["id"])
    return web.json_response(body, status=status)


async def set_deadline(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    body = await json_body(request)
    deadline = parse_time("deadline", body.get("deadline"), required=True)
    row = queries.apply_action(c.storage, p, request.match_info["id"], rectify.Action.SET_DEADLINE, now=c.now(),
                               default_hours=c.settings.default_deadline_hours, note=text_field(body, "note"),
                               new_deadline=deadline)
    return _answer(c, row)


async def review(request: web.Request) -> web.Response:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    body = await json_body(request)
    decision = body.get("decision")
    actions = {"approve": rectify.Action.APPROVE, "reject": rectify.Action.REJECT}
    if decision not in actions:
        raise bad_request("decision must be 'approve' or 'reject'")
    deadline = parse_time("deadline", body.get("deadline"), required=decision == "reject")
    row = queries.apply_action(c.storage, p, request.match_info["id"], actions[decision], now=c.now(),
                               default_hours=c.settings.default_deadline_hours, note=text_field(body, "note"),
                               new_deadline=deadline)
    return _answer(c, row)


async def submit_rectification(request: web.Request) -> web.Response:
    """Canteen: note + photo, as multipart/form-data (`note`, `photo`) or JSON (`note`, `photo_base64`)."""
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    if p.role != "canteen":
        raise ApiError(403, "forbidden", f"role {p.role!r} may not submit a rectification; only a canteen token may")
    alert_id = request.match_info["id"]
    row = queries.get_alert_row(c.storage.db, p, alert_id)  # 404 before reading a large body
    _dry_run_submit(c, p, row)  # 409 before storing a photo that could not be used
    limit = c.settings.photo_max_bytes
    if request.content_type.startswith("multipart/"):
        note, photo = await _read_multipart(request, limit)
    elif request.content_type == "application/json":
        body = await json_body(request, max_bytes=limit * 4 // 3 + 64 * 1024)
        note = text_field(body, "note")
        encoded = body.get("photo_base64")
        if not isinstance(encoded, str) or not encoded:
            raise bad_request("photo_base64 is required: the photo as base64 text")
        try:
            photo = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as err:
            raise bad_request("photo_base64 is not valid base64") from err
    else:
        raise bad_request("send multipart/form-data (note, photo) or application/json (note, photo_base64)")
    if photo is None:
        raise bad_request("photo is required")
    if len(photo) > limit:
        raise ApiError(413, "too_large", f"photo of {len(photo)} bytes exceeds {limit}")
    sha = store_photo(c, photo)
    row = queries.apply_action(c.storage, p, alert_id, rectify.Action.SUBMIT, now=c.now(),
                               default_hours=c.settings.default_deadline_hours, note=note, photo_sha256=sha)
    return _answer(c, row)


async def _read_multipart(request: web.Request, limit: int) -> tuple[str, bytes | None]:
    note, photo = "", None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise bad_request("nested multipart is not accepted")
        if part.name == "note":
            note = (await part.read(decode=True)).decode("utf-8", "replace")
            if len(note) > rectify.NOTE_MAX:
                raise bad_request(f"note is {len(note)} characters, at most {rectify.NOTE_MAX} allowed")
        elif part.name == "photo":
            buf = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                buf += chunk
                if len(buf) > limit:
                    raise ApiError(413, "too_large", f"photo exceeds {limit} bytes")
            photo = bytes(buf)
        else:
            raise bad_request(f"unexpected form field {part.name!r}; expected note and photo")
    return note, photo


def _dry_run_submit(c: ApiContext, p: Principal, row: dict) -> None:
    deadline = rectify.effective_deadline(queries.parse_ts(row["deadline"]), queries.parse_ts(row["started_at"]),
                                          c.settings.default_deadline_hours)
    rectify.apply(rectify.Action.SUBMIT, status=row["status"], deadline=deadline, actor=p.name, role=p.role,
                  now=c.now(), note="(check)", photo_sha256="(check)")


def store_photo(c: ApiContext, data: bytes) -> str:
    """Store a JPEG/PNG photo by content hash (file + `media` row); returns its sha256."""
    ctype = next((t for magic, t in PHOTO_TYPES.items() if data.startswith(magic)), None)
    if ctype is None:
        raise bad_request("photo must be a JPEG or PNG image")
    sha = hashlib.sha256(data).hexdigest()
    rel = write_media_file(c.media_dir, data, sha)
    with c.storage.write() as db:
        db.execute("INSERT OR IGNORE INTO media (id, device_id, sha256, bytes, content_type, path, complete, received_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, 1, ?)", [sha, UPLOAD_DEVICE, sha, len(data), ctype, rel, utc_now()])
    return sha
