"""`GET /alerts/stream`: server-sent events of new and updated alerts, filtered by the caller's role.

Each alert is one event (`event: alert` for a new one, `alert_update` for a later revision) with
the alert's JSON as data and `{epoch}-{seq}` as the event id (the hub's run and sequence number).
A client that reconnects with `Last-Event-ID` (EventSource does so by itself) first gets what it
missed, from the hub's recent history; when that cannot be complete (the receiver restarted, the
gap is longer than the history, the id is not one of ours) or when the client fell so far behind
that rows were dropped for it, it gets `event: resync` with the reason: reload through
`GET /alerts`, then carry on with the stream. A comment line every `sse_keepalive_s` keeps proxies
from closing an idle stream. The stream ends when the client leaves or the app stops.
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
from cloud_receiver.auth import TOKEN_SHA256, Principal, principal_of

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


RETRY_MS = 3000  # the reconnect delay EventSource is told to use


def resume_point(last_event_id: str | None, epoch: str) -> tuple[int | None, str | None]:
    """(seq to resume after, None) for one of this run's event ids; (None, reason) when it cannot resume;
    (None, None) without a Last-Event-ID."""
    if not last_event_id:
        return None, None
    got_epoch, _, n = last_event_id.strip().partition("-")
    if not n.isdigit():
        return None, "unknown_event_id"
    if got_epoch != epoch:
        return None, "receiver_restarted"
    return int(n), None


def resync_event(reason: str) -> bytes:
    """Tells the client that events are missing: reload with GET /alerts. No id: its Last-Event-ID stays."""
    body = json.dumps({"reason": reason, "reload": "/api/v1/alerts"}, separators=(",", ":"))
    return f"event: resync\ndata: {body}\n\n".encode()


async def alert_stream(request: web.Request) -> web.StreamResponse:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    if c.hub is None:
        raise ApiError(503, "unavailable", "the alert hub is not running")
    hub = c.hub
    sub = hub.subscribe()  # before the replay: nothing published from here on can be missed
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        await resp.write(f"retry: {RETRY_MS}\n: connected\n\n".encode())
        last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        after, reason = resume_point(last_id, hub.epoch)
        if after is not None:
            missed = hub.since(after)
            if missed is None:
                reason = "gap_too_long"
            else:
                for seq, row in missed:
                    await _send(resp, c, p, hub.epoch, seq, row)
                after = missed[-1][0] if missed else after
        if reason is not None:
            log.info("sse_resync", principal=p.name, reason=reason)
            await resp.write(resync_event(reason))
        lost = 0
        stop = asyncio.ensure_future(c.stop.wait())
        try:
            while not c.stop.is_set():
                get = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({get, stop}, timeout=c.settings.sse_keepalive_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    if not c.stop.is_set():
                        await resp.write(b": keepalive\n\n")
                    continue
                if sub.lost != lost:  # we fell behind and the hub dropped rows for us
                    lost = sub.lost
                    log.warning("sse_resync", principal=p.name, reason="client_too_slow", lost=lost)
                    await resp.write(resync_event("client_too_slow"))
                seq, row = get.result()
                if after is not None and seq <= after:
                    continue  # already sent by the replay
                await _send(resp, c, p, hub.epoch, seq, row)
        finally:
            stop.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        log.debug("sse_client_left", principal=p.name)
        raise
    finally:
        hub.unsubscribe(sub)
    return resp


async def create_ticket(request: web.Request) -> web.Response:
    """A stream ticket for a browser's EventSource (which cannot send an Authorization header)."""
    _require_login(request)
    digest = request.get(TOKEN_SHA256)
    if digest is None:
        raise ApiError(401, "unauthenticated", "a stream ticket is made with an `Authorization: Bearer <token>` header")
    c = ctx(request)
    ticket = c.tickets.issue(digest)
    log.info("stream_ticket_issued", principal=principal_of(request).name, ttl_s=c.tickets.ttl_s)
    return web.json_response({"ticket": ticket, "expires_in_s": int(c.tickets.ttl_s),
                              "url": f"/api/v1/alerts/stream?ticket={ticket}"})


async def _send(resp: web.StreamResponse, c: ApiContext, p: Principal, epoch: str, seq: int, row: dict) -> None:
    if not p.can_see(row.get("canteen_id"), _jurisdiction(c, row.get("canteen_id"))):
        return
    event = "alert" if row.get("received_at") == row.get("updated_at") else "alert_update"
    view = queries.alert_view({"canteen_name": None, **row}, c.now(), c.settings.default_deadline_hours)
    await resp.write(sse_event(event, f"{epoch}-{seq}", view))
