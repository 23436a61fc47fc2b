"""`GET /alerts/stream`: server-sent events of new and updated alerts, filtered by the caller's role.

Each alert is one event (`event: alert` for a new one, `alert_update` for a later revision) with
the alert's JSON as data and `{epoch}-{seq}` as the event id (the hub's run and sequence number).
A client that reconnects with `Last-Event-ID` (EventSource does so by itself) first gets what it
missed, from the hub's recent history; when that cannot be complete (the receiver restarted, the
gap is longer than the history, the id is not one of ours) or when the client fell so far behind
that rows were dropped for it, it gets `event: resync` with the reason: reload through
`GET /alerts`, then carry on with the stream. A comment line every `sse_keepalive_s` keeps proxies
from closing an idle stream. The stream ends when the client leaves (logged once, at info) or the
app stops. A token holds at most `sse_max_streams_per_token` open streams and the receiver
`sse_max_streams`; one more is refused with 429 and `Retry-After`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import time

import structlog
from aiohttp import web

from cloud_receiver.admin.auth import SESSION_RESOLVER, TICKET, TOKEN_SHA256, Principal, lookup_digest, principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.context import ApiContext, ctx
from cloud_receiver.api.errors import ApiError
from cloud_receiver.api.http import json_response
from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.workflow import queries

log = structlog.get_logger(__name__)


def canteen_of(c: ApiContext, canteen_id: str | None) -> tuple[str, str] | None:
    """(name, jurisdiction) of a canteen, read at most every `canteen_cache_s` (a rename shows up soon)."""
    if canteen_id is None:
        return None
    now = time.monotonic()
    cached = c.canteens.get(canteen_id)
    if cached is None or now - cached[0] >= c.settings.canteen_cache_s:
        row = c.storage.get_canteen(canteen_id)
        if row is None:
            return None
        cached = c.canteens[canteen_id] = (now, row["name"], row["jurisdiction"])
    return cached[1], cached[2]


def sse_event(event: str, event_id: str, data: dict) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\nid: {event_id}\ndata: {body}\n\n".encode()


RETRY_MS = 3000  # the reconnect delay EventSource is told to use
BUSY_RETRY_S = 30  # `Retry-After` of a stream refused for too many open ones


EVENT_SEQ = re.compile(r"[0-9]{1,18}")
ID_EVERY = 100  # events not for this client in a row after which its resume point is moved on anyway
RENDERED_MAX = 4096  # events kept rendered, so every stream that may see a row sends the same bytes made once
RENDERED_FOR_S = 1.0  # how long a rendered event is reused (its status depends on the time: overdue)
_rendered: collections.OrderedDict[tuple[str, int], tuple[float, bytes]] = collections.OrderedDict()


def resume_point(last_event_id: str | None, epoch: str, current_seq: int) -> tuple[int | None, str | None]:
    """(seq to resume after, None) for one of this run's event ids; (None, reason) when it cannot resume;
    (None, None) without a Last-Event-ID."""
    if not last_event_id:
        return None, None
    got_epoch, _, n = last_event_id.strip().partition("-")
    if not EVENT_SEQ.fullmatch(n):
        return None, "unknown_event_id"
    if got_epoch != epoch:
        return None, "receiver_restarted"
    if int(n) > current_seq:
        return None, "unknown_event_id"
    return int(n), None


def resync_event(reason: str) -> bytes:
    """Tells the client that events are missing: reload with GET /alerts. No id: its Last-Event-ID stays."""
    body = json.dumps({"reason": reason, "reload": "/api/v1/alerts"}, separators=(",", ":"))
    return f"event: resync\ndata: {body}\n\n".encode()


def credential_valid(request: web.Request, c: ApiContext) -> bool:
    """Whether the token, ticket or console session that opened this request still holds: checked again
    while a stream is open (a session ends on logout, disable, password change or expiry)."""
    digest = request.get(TOKEN_SHA256)
    if digest is None:
        resolve = request.app.get(SESSION_RESOLVER)
        return callable(resolve) and resolve(request) is not None
    if lookup_digest(c.storage.sql, digest) is None:
        return False
    ticket = request.get(TICKET)
    return ticket is None or c.tickets.token_sha256(ticket) == digest


class _Stream:
    """One client's stream: what it was sent, and its resume point (the seq in the last `id:` it got).

    `offer` and `mark` collect the bytes to send; `flush` writes them in one go (a burst of alerts is one
    write, not one per event: a stream keeps up with a flood)."""

    def __init__(self, resp: web.StreamResponse, c: ApiContext, p: Principal, epoch: str) -> None:
        self.resp, self.c, self.p, self.epoch = resp, c, p, epoch
        self.taken = 0  # last seq taken from the hub
        self.marked = 0  # last seq the client was given as an id
        self.skipped = 0  # events in a row not for this client
        self._out: list[bytes] = []

    def offer(self, seq: int, row: dict) -> None:
        self.taken = seq
        event = _event(self.c, self.p, self.epoch, seq, row)
        if event is not None:
            self._out.append(event)
            self.marked, self.skipped = seq, 0
            return
        self.skipped += 1
        if self.skipped >= ID_EVERY:  # a busy hub with nothing for us: keep the resume point near
            self.mark(b"")

    def mark(self, comment: bytes) -> None:
        """A comment, with an id-only line when the resume point moved (it updates lastEventId, dispatches nothing)."""
        line = f"id: {self.epoch}-{self.taken}\n".encode() if self.taken > self.marked else b""
        if line or comment:
            self._out.append(comment + line + b"\n")
        self.marked, self.skipped = max(self.marked, self.taken), 0

    async def flush(self) -> None:
        if self._out:
            data, self._out = b"".join(self._out), []
            await self.resp.write(data)


def _admit(c: ApiContext, digest: str) -> None:
    """Count a new stream of this token, or refuse it with 429 when the token or the receiver holds enough."""
    limit_all, limit_one = c.settings.sse_max_streams, c.settings.sse_max_streams_per_token
    if sum(c.streams.values()) >= limit_all:
        raise ApiError(429, "too_many_streams", f"the receiver already serves {limit_all} alert streams; try later",
                       {"Retry-After": str(BUSY_RETRY_S)})
    if c.streams.get(digest, 0) >= limit_one:
        raise ApiError(429, "too_many_streams", f"this token already has {limit_one} alert streams open; close one "
                       "(one stream per dashboard is enough)", {"Retry-After": str(BUSY_RETRY_S)})
    c.streams[digest] = c.streams.get(digest, 0) + 1


def _release(c: ApiContext, digest: str) -> None:
    left = c.streams.get(digest, 0) - 1
    if left > 0:
        c.streams[digest] = left
    else:
        c.streams.pop(digest, None)


async def alert_stream(request: web.Request) -> web.StreamResponse:
    _require_login(request)
    c, p = ctx(request), principal_of(request)
    if c.hub is None:
        raise ApiError(503, "unavailable", "the alert hub is not running")
    digest = request.get(TOKEN_SHA256) or p.name
    _admit(c, digest)
    try:
        return await _serve_stream(request, c, p, c.hub)
    finally:
        _release(c, digest)


async def _serve_stream(request: web.Request, c: ApiContext, p: Principal, hub: AlertHub) -> web.StreamResponse:
    sub = hub.subscribe()  # before the replay: nothing published from here on can be missed
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    out = _Stream(resp, c, p, hub.epoch)
    try:
        await resp.prepare(request)
        await resp.write(f"retry: {RETRY_MS}\n: connected\n\n".encode())
        last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        after, reason = resume_point(last_id, hub.epoch, hub.seq)
        if after is not None:
            missed = hub.since(after)
            if missed is None:
                after, reason = None, "gap_too_long"
            else:
                out.taken = out.marked = after
                for seq, row in missed:
                    out.offer(seq, row)
                await out.flush()
                after = out.taken
        if reason is not None:
            log.info("sse_resync", principal=p.name, reason=reason)
            await resp.write(resync_event(reason))
        lost = 0
        checked = time.monotonic()
        stop = asyncio.ensure_future(c.stop.wait())
        try:
            while not c.stop.is_set():
                if time.monotonic() - checked >= c.settings.sse_keepalive_s:
                    checked = time.monotonic()
                    if not credential_valid(request, c):
                        log.info("sse_closed", principal=p.name, reason="token revoked or ticket expired")
                        break
                get = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({get, stop}, timeout=c.settings.sse_keepalive_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    if not c.stop.is_set():
                        out.mark(b": keepalive\n")
                        await out.flush()
                    continue
                burst = [get.result()]  # and what else is waiting: one write for all of it
                while not sub.queue.empty():
                    burst.append(sub.queue.get_nowait())
                if sub.lost != lost:  # we fell behind and the hub dropped rows for us
                    lost = sub.lost
                    log.warning("sse_resync", principal=p.name, reason="client_too_slow", lost=lost)
                    await resp.write(resync_event("client_too_slow"))
                for seq, row in burst:
                    if after is None or seq > after:  # else already sent by the replay
                        out.offer(seq, row)
                await out.flush()
        finally:
            stop.cancel()
    except ConnectionResetError as err:  # the client went away: ordinary, one line
        log.info("sse_client_left", principal=p.name, detail=str(err) or type(err).__name__)
    except asyncio.CancelledError:
        log.info("sse_client_left", principal=p.name, detail="cancelled")
        raise
    finally:
        hub.unsubscribe(sub)
    return resp


async def create_ticket(request: web.Request) -> web.Response:
    """A stream ticket for a browser's EventSource (which cannot send an Authorization header)."""
    _require_login(request)
    digest = request.get(TOKEN_SHA256)
    if digest is None or request.get(TICKET) is not None:
        raise ApiError(401, "unauthenticated", "a stream ticket is made with an `Authorization: Bearer <token>` header")
    c = ctx(request)
    ticket = c.tickets.issue(digest)
    log.info("stream_ticket_issued", principal=principal_of(request).name, ttl_s=c.tickets.ttl_s)
    return json_response({"ticket": ticket, "expires_in_s": int(c.tickets.ttl_s),
                              "url": f"/api/v1/alerts/stream?ticket={ticket}"})


def _event(c: ApiContext, p: Principal, epoch: str, seq: int, row: dict) -> bytes | None:
    """The event of this row, or None when this client may not see it."""
    canteen = canteen_of(c, row.get("canteen_id"))
    if not p.can_see(row.get("canteen_id"), canteen[1] if canteen else None):
        return None
    key, now = (epoch, seq), time.monotonic()  # the hub's epoch is random per run: one key, one row
    made = _rendered.get(key)
    if made is not None and now - made[0] < RENDERED_FOR_S:
        return made[1]
    event = "alert" if row.get("received_at") == row.get("updated_at") else "alert_update"
    view = queries.alert_view({**row, "canteen_name": canteen[0] if canteen else None}, c.now(),
                              c.settings.default_deadline_hours)
    data = sse_event(event, f"{epoch}-{seq}", view)
    _rendered[key] = (now, data)
    if len(_rendered) > RENDERED_MAX:
        _rendered.popitem(last=False)
    return data
