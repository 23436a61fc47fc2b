"""The canteens' ledgers (自律台账) under /canteens/{id}/…: entries, revisions, comments, photos, XLSX, one day.

Storage and rules live in `cloud_receiver.ledgers`; this module reads requests and writes answers.
Who: admin everything; a regulator reads and comments on the canteens of its jurisdiction (403 for a
write); a canteen writes its own ledgers and replies to comments. Outside its scope: 404.
Bodies: the ledger's own model (400 naming the field); a body that is a valid entry of another ledger,
or breaks a rule no schema can state (a day in the future, a sample kept < 48 h), is 422.
After a write, the rules about what was written run at once (`ledgers.runner.after_write`) and the
alerts they raise are announced like the cameras' ones.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from cloud_receiver.admin.auth import principal_of
from cloud_receiver.api.alerts import _require_login, store_photo
from cloud_receiver.api.bodies import LedgerPhotoJson
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.http import json_response
from cloud_receiver.api.params import base64_field, from_json, json_raw, parse_int, read_form
from cloud_receiver.appkeys import CONFIG
from cloud_receiver.config import LedgersConfig
from cloud_receiver.errors import validation_problem
from cloud_receiver.ledgers import runner, store, trace, xlsx
from cloud_receiver.ledgers.errors import Forbidden, Impossible
from cloud_receiver.ledgers.models import CORRECTIONS, KINDS, CommentBody, Entry, MorningCheckBatch
from cloud_receiver.workflow.queries import QueryError

log = structlog.get_logger(__name__)

DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
ENTRY_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,512}$")
XLSX_MAX = 5000  # entries in one spreadsheet; more: narrow from/to
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _handler(fn: Handler) -> Handler:
    """Login required; the ledgers' own errors answered 422 (naming the field) and 403."""

    @functools.wraps(fn)
    async def handle(request: web.Request) -> web.StreamResponse:
        _require_login(request)
        try:
            return await fn(request)
        except Impossible as err:
            raise ApiError(422, "invalid_input", str(err)) from err
        except Forbidden as err:
            raise ApiError(403, "forbidden", str(err)) from err
    return handle


def _settings(request: web.Request) -> LedgersConfig:
    return request.app[CONFIG].ledgers


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise bad_request(f"kind: {kind[:40]!r} is not a ledger; ledgers: {', '.join(KINDS)}")
    return kind


def _entry_id(request: web.Request) -> str:
    rid = request.match_info["rid"]
    if not ENTRY_ID.match(rid):
        raise bad_request("rid: an entry id is 1-64 letters, digits, _ or -")
    return rid


def _day(name: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if DAY.match(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise bad_request(f"{name}={value[:40]!r} is not a date YYYY-MM-DD")


def _validate(model: type[BaseModel], others: dict[str, type[BaseModel]], kind: str, raw: bytes) -> Any:
    """`raw` as `model`; 422 when it is a valid body of another ledger, else 400 naming the field."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as err:
        for code, other in others.items():
            if code != kind:
                try:
                    other.model_validate_json(raw, strict=True)
                except ValidationError:
                    continue
                raise ApiError(422, "invalid_input", f"(body): this is an entry of the {code} ledger, "
                               f"not of {kind}") from err
        raise bad_request(validation_problem(err, "(body)"), "invalid_input") from err


def _after_write(request: web.Request, canteen_id: str, kind: str, views: list[dict[str, Any]]) -> None:
    """The rules about what was just written; their new alerts are announced (SSE, push)."""
    c = ctx(request)
    try:
        rows = runner.after_write(c.storage.sql, _settings(request), canteen_id, kind, {v["day"] for v in views},
                                  c.now(), c.storage.push_owner, getattr(c.storage, "channel", None))
    except Exception:  # noqa: BLE001 - the entry is stored; the periodic run checks it again
        log.exception("ledger_rules_after_write_failed", canteen_id=canteen_id, kind=kind)
        return
    if c.hub is not None:
        for row in rows:
            c.hub.publish(row, once=True)  # on PostgreSQL the alert listener hears it too


def _with_supplier(request: web.Request, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return trace.with_suppliers(ctx(request).storage.sql, views, _settings(request).health_cert_warn_days)


@_handler
async def list_entries(request: web.Request) -> web.Response:
    c, q, kind = ctx(request), request.query, _kind(request)
    cursor = q.get("cursor")
    if cursor is not None and not CURSOR.match(cursor):
        raise bad_request("cursor: not a cursor (give next_cursor of the previous page as it was)")
    day_from, day_to = _day("from", q.get("from")), _day("to", q.get("to"))
    if day_from and day_to and day_from > day_to:
        raise ApiError(422, "bad_request", f"from ({day_from}) is after to ({day_to})")
    subject = q.get("subject")
    if subject is not None and not 1 <= len(subject) <= 64:
        raise bad_request("subject: 1-64 characters")
    limit = parse_int("limit", q.get("limit"), 50, 1, store.LIMIT_MAX)
    try:
        items, nxt = store.list_entries(c.storage.sql, principal_of(request), request.match_info["id"], kind,
                                        day_from=day_from, day_to=day_to, subject=subject, limit=limit, cursor=cursor)
    except QueryError as err:
        raise ApiError(422, "bad_request", str(err)) from err
    return json_response({"items": _with_supplier(request, items), "next_cursor": nxt})


@_handler
async def create_entry(request: web.Request) -> web.Response:
    c, kind, canteen_id = ctx(request), _kind(request), request.match_info["id"]
    entry: Entry = _validate(KINDS[kind].model, {k: v.model for k, v in KINDS.items()}, kind, await json_raw(request))
    views = store.create(c.storage.sql, principal_of(request), canteen_id, kind, [entry], now=c.now(),
                         tz_hours=_settings(request).tz_hours)
    _after_write(request, canteen_id, kind, views)
    return json_response(_with_supplier(request, views)[0])


@_handler
async def create_morning_checks(request: web.Request) -> web.Response:
    """A whole shift's 晨检: one entry per person, all stored or none."""
    c, canteen_id = ctx(request), request.match_info["id"]
    batch = from_json(MorningCheckBatch, await json_raw(request, max_bytes=256 * 1024))
    entries = batch.entries()
    views = store.create(c.storage.sql, principal_of(request), canteen_id, "morning_checks", entries, now=c.now(),
                         tz_hours=_settings(request).tz_hours, prefixes=[f"checks.{i}." for i in range(len(entries))])
    _after_write(request, canteen_id, "morning_checks", views)
    return json_response({"items": views})


@_handler
async def get_entry(request: web.Request) -> web.Response:
    c, kind = ctx(request), _kind(request)
    entry = store.get_entry(c.storage.sql, principal_of(request), request.match_info["id"], kind, _entry_id(request))
    return json_response(_with_supplier(request, [entry])[0])


@_handler
async def edit_entry(request: web.Request) -> web.Response:
    """Replace an entry in place, within 24 h of when its current revision was written."""
    c, kind, canteen_id = ctx(request), _kind(request), request.match_info["id"]
    rid = _entry_id(request)
    entry: Entry = _validate(KINDS[kind].model, {k: v.model for k, v in KINDS.items()}, kind, await json_raw(request))
    out = store.edit(c.storage.sql, principal_of(request), canteen_id, kind, rid, entry, now=c.now(),
                     tz_hours=_settings(request).tz_hours)
    _after_write(request, canteen_id, kind, [out])
    return json_response(_with_supplier(request, [out])[0])


@_handler
async def correct_entry(request: web.Request) -> web.Response:
    """A new revision with a reason; the older one stays readable."""
    c, kind, canteen_id = ctx(request), _kind(request), request.match_info["id"]
    rid = _entry_id(request)
    body = _validate(CORRECTIONS[kind], CORRECTIONS, kind, await json_raw(request))
    out = store.correct(c.storage.sql, principal_of(request), canteen_id, kind, rid, body.data, body.reason,
                        now=c.now(), tz_hours=_settings(request).tz_hours)
    _after_write(request, canteen_id, kind, [out])
    entry = store.get_entry(c.storage.sql, principal_of(request), canteen_id, kind, rid)
    return json_response(_with_supplier(request, [entry])[0])


@_handler
async def comment_entry(request: web.Request) -> web.Response:
    c, kind = ctx(request), _kind(request)
    rid = _entry_id(request)
    body = from_json(CommentBody, await json_raw(request))
    out = store.comment(c.storage.sql, principal_of(request), request.match_info["id"], kind, rid, body.text,
                        now=c.now())
    return json_response(_with_supplier(request, [out])[0])


@_handler
async def export_xlsx(request: web.Request) -> web.StreamResponse:
    """The ledger as an XLSX workbook (current revisions, newest day first), for a day range."""
    c, q, kind, canteen_id = ctx(request), request.query, _kind(request), request.match_info["id"]
    day_from, day_to = _day("from", q.get("from")), _day("to", q.get("to"))
    if day_from and day_to and day_from > day_to:
        raise ApiError(422, "bad_request", f"from ({day_from}) is after to ({day_to})")
    p, db = principal_of(request), c.storage.sql
    canteen = store.canteen_of(db, p, canteen_id)
    items, more = store.list_entries(db, p, canteen_id, kind, day_from=day_from, day_to=day_to, limit=XLSX_MAX)
    if more:
        raise ApiError(422, "bad_request", f"more than {XLSX_MAX} entries: narrow the range with from and to")
    body = xlsx.workbook(kind, canteen["name"], items, trace.names_of(db, canteen_id))
    filename = f"{canteen['name']}-{KINDS[kind].name}.xlsx"
    return web.Response(body=body, content_type=xlsx.XLSX_TYPE, headers={
        "Content-Disposition": xlsx.disposition(filename, f"{canteen_id}-{kind}.xlsx"), "Cache-Control": "no-store"})


@_handler
async def upload_photo(request: web.Request) -> web.Response:
    """A JPEG for ledger entries to name (multipart `photo`, or JSON `photo_base64`); answers its sha256."""
    c, p, canteen_id = ctx(request), principal_of(request), request.match_info["id"]
    store.canteen_of(c.storage.sql, p, canteen_id)  # 404, then 403, before reading a large body
    store.require_writer(p)
    limit = c.settings.photo_max_bytes
    if request.content_type.startswith("multipart/"):
        photo = (await read_form(request, ("photo",), limit)).get("photo")
    else:
        body = from_json(LedgerPhotoJson, await json_raw(request, max_bytes=limit * 4 // 3 + 1024))
        photo = base64_field("photo_base64", body.photo_base64)
    sha = store_photo(c, photo)  # 400 none, 413 too large, 422 not a JPEG; a `media` row of device 'api-upload'
    store.add_photo(c.storage.sql, p, canteen_id, sha, now=c.now())
    return json_response({"sha256": sha, "url": f"/api/v1/media/{sha}"})


@_handler
async def day_view(request: web.Request) -> web.Response:
    """One day of a canteen, for tracing: checks, staff not checked, purchases with supplier and licence …"""
    c, cfg = ctx(request), _settings(request)
    day = _day("day", request.match_info["day"])
    assert day is not None
    return json_response(trace.day_view(c.storage.sql, principal_of(request), request.match_info["id"], day,
                                        cfg.health_cert_warn_days, cfg.tz_hours))


RID = "{rid:[0-9A-Za-z_-]{1,64}}"  # never `export.xlsx`: PUT …/export.xlsx is 405, not an entry named so
ROUTES: tuple[tuple[str, str, object], ...] = (  # more specific paths first: aiohttp tries routes in order
    ("POST", "/canteens/{id}/morning-checks", create_morning_checks),
    ("GET", "/canteens/{id}/ledgers/{kind}/export.xlsx", export_xlsx),
    ("GET", "/canteens/{id}/ledgers/{kind}", list_entries),
    ("POST", "/canteens/{id}/ledgers/{kind}", create_entry),
    ("GET", f"/canteens/{{id}}/ledgers/{{kind}}/{RID}", get_entry),
    ("PUT", f"/canteens/{{id}}/ledgers/{{kind}}/{RID}", edit_entry),
    ("POST", f"/canteens/{{id}}/ledgers/{{kind}}/{RID}/revisions", correct_entry),
    ("POST", f"/canteens/{{id}}/ledgers/{{kind}}/{RID}/comments", comment_entry),
    ("POST", "/canteens/{id}/ledger-photos", upload_photo),
    ("GET", "/canteens/{id}/days/{day}", day_view),
)
