"""Devices, cameras, canteens, media download, statistics and the public canteen page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from bk_contract.media_types import MEDIA_TYPES, sniff_media_type
from cloud_receiver.admin.auth import principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.http import MEDIA_CSP, json_response
from cloud_receiver.api.params import parse_time
from cloud_receiver.api.public_page import public_view
from cloud_receiver.storage.media_store import HEX64
from cloud_receiver.storage.sqlite import iso
from cloud_receiver.workflow import counts, queries

_EXTENSIONS = {"image/jpeg": "jpg", "video/mp4": "mp4"}


async def list_devices(request: web.Request) -> web.Response:
    _require_login(request)
    rows = queries.list_devices(ctx(request).storage.sql, principal_of(request))
    for r in rows:
        r["online"] = bool(r["online"])
    return json_response({"items": rows})


async def list_cameras(request: web.Request) -> web.Response:
    _require_login(request)
    device = request.query.get("device") or None
    return json_response({"items": queries.list_cameras(ctx(request).storage.sql, principal_of(request), device)})


async def list_canteens(request: web.Request) -> web.Response:
    _require_login(request)
    return json_response({"items": queries.list_canteens(ctx(request).storage.sql, principal_of(request))})


async def get_media(request: web.Request) -> web.StreamResponse:
    """Media by sha256 for those who may see the canteen that uploaded it (the public never: it gets blurred copies).

    Served as the type its bytes are (checked again here, so a file stored before types were checked
    cannot be served as HTML), with nosniff, a sandboxing CSP and a download name."""
    c, sha = ctx(request), request.match_info["sha256"]
    if not HEX64.match(sha):
        raise bad_request("sha256 must be 64 lowercase hex digits")
    row = queries.media_for(c.storage.sql, principal_of(request), sha)
    path = c.media_dir / row["path"]
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise ApiError(404, "not_found", f"media {sha} is recorded but its file is missing") from err
    ctype = sniff_media_type(head)
    stated = row["content_type"]
    if ctype not in MEDIA_TYPES or (stated and stated != ctype):
        ctype, disposition = "application/octet-stream", f'attachment; filename="{sha}.bin"'
    else:
        disposition = f'inline; filename="{sha}.{_EXTENSIONS[ctype]}"'
    return web.FileResponse(path, headers={
        "Content-Type": ctype, "Content-Disposition": disposition, "Content-Security-Policy": MEDIA_CSP,
        "Cache-Control": "private, max-age=86400, immutable", "ETag": f'"{sha}"'})


async def get_stats(request: web.Request) -> web.Response:
    _require_login(request)
    c, q = ctx(request), request.query
    tz = c.settings.tz_hours
    until = parse_time("until", q.get("until"), tz_hours=tz) or c.now()
    since = parse_time("since", q.get("since"), tz_hours=tz) or _week_before(until)
    if since >= until:  # well-formed times that make no range: 422
        raise ApiError(422, "bad_request", f"since ({iso(since)}) must be before until ({iso(until)})")
    if until - since > timedelta(days=c.settings.stats_max_days):
        raise ApiError(422, "bad_request", f"since..until spans more than {c.settings.stats_max_days} days; "
                       "ask for a shorter range")
    return json_response(counts.stats(c.storage.sql, principal_of(request), since, until, c.settings.tz_hours))


def _week_before(t: datetime) -> datetime:
    try:
        return t - timedelta(days=7)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


async def public_canteen(request: web.Request) -> web.Response:
    """The public page of a canteen (by QR code): name, licences, rating, sampling, public kitchen snapshots."""
    c = ctx(request)
    row = c.storage.get_canteen(request.match_info["id"])
    if row is None:
        raise ApiError(404, "not_found", f"canteen {request.match_info['id']!r} not found")
    return json_response(public_view(c, row))
