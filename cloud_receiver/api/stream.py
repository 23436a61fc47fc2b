"""`GET /alerts/stream`: server-sent events of new and updated alerts, filtered by the caller's role.

Each alert is one event (`event: alert` for a new one, `alert_update` for a later revision) with
the alert's JSON as data and its id as the event id. A comment line every `sse_keepalive_s`
keeps proxies from closing an idle stream. The stream ends when the client leaves or the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from aiohttp import web

from cloud_receiver import queries
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.context import ApiContext, ctx
from cloud_receiver.api.errors import ApiError
from cloud_receiver.auth import Principal, principal_of

log = structlog.get_logger(__name__)


def _jurisdiction(c: ApiContext, canteen_id: str | None) -> str | None:
    if canteen_id is None:
        return None
    if canteen_id not in c.jurisdictions:
        row = c.storage.get_canteen(canteen_id)
        if row is None:
            return None
        c.jurisdictions[canteen_id] = row["jurisdiction"]
    return c.jurisdictions[canteen_id]


def sse_event(event: str, event_id: str, data: dict) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\nid: {event_id}\ndata: {body}\n\n".encode()


async def alert_stream(request: web.Request) -> web.StreamResponse:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    if c.hub is None:
        raise ApiError(503, "unavailable", "the alert hub is not running")
    queue = c.hub.subscribe()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        await resp.write(b": connected\n\n")
        stop = asyncio.ensure_future(c.stop.wait())
        try:
            while not c.stop.is_set():
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, stop}, timeout=c.settings.sse_keepalive_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    if not c.stop.is_set():
                        await resp.write(b": keepalive\n\n")
                    continue
                await _send(resp, c, p, get.result())
        finally:
            stop.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        log.debug("sse_client_left", principal=p.name)
        raise
    finally:
        c.hub.unsubscribe(queue)
    return resp


async def _send(resp: web.StreamResponse, c: ApiContext, p: Principal, row: dict) -> None:
    if not p.can_see(row.get("canteen_id"), _jurisdiction(c, row.get("canteen_id"))):
        return
    event = "alert" if row.get("received_at") == row.get("updated_at") else "alert_update"
    view = queries.alert_view({"canteen_name": None, **row}, c.now(), c.settings.default_deadline_hours)
    await resp.write(sse_event(event, row["id"], view))
