"""Export for an upper platform (自治区"互联网+明厨亮灶", "云天中卫"): a signed change feed and a per-canteen snapshot.

- `GET /export/changes?cursor=&limit=`: alert changes after the cursor, oldest first, each with the
  alert's current state (`workflow/export_feed.py` says how no change is skipped on either engine);
- `GET /export/canteens?since=&until=`: per canteen, its boxes now (online rate, last seen) and the
  rectification of the alerts that started in the period.

Admin tokens see everything, regulator tokens their jurisdiction; canteen tokens are refused (403).
Every 200 answer is signed: HMAC-SHA256 with the deployment's export key (`export.key_env`) over
`X-BK-Timestamp` + "." + the exact body bytes, sent as `X-BK-Signature: sha256=<hex>` with the key's
name in `X-BK-Key-Id`. Without a key the endpoints answer 503: never unsigned data.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from bk_common.yamlconf import resolve_secret
from cloud_receiver.admin.auth import Principal, principal_of
from cloud_receiver.api.alerts import CURSOR, _require_login
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.params import parse_int, parse_time
from cloud_receiver.appkeys import CONFIG
from cloud_receiver.storage.db import Db, iso
from cloud_receiver.workflow import export_feed, queries

log = structlog.get_logger(__name__)

KEY_MIN_BYTES = 16
# PostgreSQL: how long a feed request waits for the transactions writing changes when it came to end, so that it
# hands out every change committed before it (export_feed.settle_point); one open longer only delays the feed
SETTLE_MAX_S = 2.0
SETTLE_POLL_S = 0.01
DEFAULT_LIMIT = 100
DEFAULT_PERIOD = timedelta(days=30)
READERS = frozenset({"admin", "regulator"})
SIGNATURE, TIMESTAMP, KEY_ID = "X-BK-Signature", "X-BK-Timestamp", "X-BK-Key-Id"


@dataclass(frozen=True, slots=True)
class ExportKey:
    key_id: str
    secret: bytes = field(repr=False)  # never in a log or a traceback


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-BK-Signature` value of `body` sent at `timestamp` (what the upper platform recomputes)."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _reader(request: web.Request) -> Principal:
    _require_login(request)
    p = principal_of(request)
    if p.role not in READERS:
        raise ApiError(403, "forbidden", f"role {p.role!r} may not read the export; admin and regulator tokens may")
    return p


def _export_key(request: web.Request) -> ExportKey:
    """The configured key, read on every request (a rotated systemd credential applies at once); 503 without one."""
    cfg = request.app[CONFIG].export
    secret = resolve_secret(cfg.key_env)
    if secret is None or len(secret.encode()) < KEY_MIN_BYTES:
        what = "is not set" if secret is None else f"holds fewer than {KEY_MIN_BYTES} bytes"
        raise ApiError(503, "export_not_configured",
                       f"the export is not configured: the signing key {what} (environment variable or systemd "
                       f"credential {cfg.key_env or '(none: export.key_env is empty)'}; see export.key_env)")
    return ExportKey(cfg.key_id, secret.encode())


def signed_json(body: Any, key: ExportKey) -> web.Response:
    """A 200 JSON answer (UTF-8, compact) with its signature headers; the bytes signed are the bytes sent."""
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    ts = str(int(time.time()))
    return web.Response(body=raw, content_type="application/json", charset="utf-8", headers={
        SIGNATURE: sign(key.secret, ts, raw), TIMESTAMP: ts, KEY_ID: key.key_id, "Cache-Control": "no-store"})


def _cursor(value: str | None) -> int:
    if value is None:
        return 0
    if not CURSOR.match(value):
        raise bad_request("cursor: not a cursor (give next_cursor of the previous page as it was)")
    try:
        return export_feed.decode_cursor(value)
    except queries.QueryError as err:
        raise ApiError(422, "bad_request", f"cursor: {err}") from err


async def _final_upto(db: Db, after: int) -> int | None:
    """The last change id that is final (None: all are, on SQLite), waiting up to SETTLE_MAX_S for the transactions
    writing changes now to end, without blocking the loop. Still open then: nothing new is final yet (`after`)."""
    point = export_feed.settle_point(db)
    if point is None:
        return None
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_MAX_S
    while export_feed.lockers_left(db, point):
        if loop.time() >= give_up:
            log.warning("export_feed_held_back", open_writers=len(point.lockers), waited_s=SETTLE_MAX_S)
            return after
        await asyncio.sleep(SETTLE_POLL_S)
    return point.last_id


async def export_changes(request: web.Request) -> web.Response:
    p = _reader(request)
    key = _export_key(request)
    c, q = ctx(request), request.query
    limit = parse_int("limit", q.get("limit"), DEFAULT_LIMIT, 1, export_feed.FEED_LIMIT_MAX)
    after = _cursor(q.get("cursor"))
    upto = await _final_upto(c.storage.sql, after)
    page = export_feed.read_changes(c.storage.sql, p, after=after, upto=upto, limit=limit, now=c.now(),
                                    default_hours=c.settings.default_deadline_hours)
    return signed_json({"items": page.items, "next_cursor": export_feed.encode_cursor(page.next),
                        "has_more": page.has_more}, key)


async def export_canteens(request: web.Request) -> web.Response:
    p = _reader(request)
    key = _export_key(request)
    c, q = ctx(request), request.query
    tz, now = c.settings.tz_hours, c.now()
    until = parse_time("until", q.get("until"), tz_hours=tz) or now
    since = parse_time("since", q.get("since"), tz_hours=tz)
    if since is None:
        try:
            since = until - DEFAULT_PERIOD
        except OverflowError:
            raise ApiError(422, "bad_request", f"until ({iso(until)}) leaves no room for the default period; "
                           "give since") from None
    if since >= until:
        raise ApiError(422, "bad_request", f"since ({iso(since)}) must be before until ({iso(until)})")
    if until - since > timedelta(days=c.settings.stats_max_days):
        raise ApiError(422, "bad_request", f"since..until spans more than {c.settings.stats_max_days} days; "
                       "ask for a shorter range")
    body = export_feed.canteen_summary(c.storage.sql, p, since=since, until=until, now=now,
                                       default_hours=c.settings.default_deadline_hours)
    return signed_json(body, key)
