"""Devices, cameras, canteens, media download, statistics and the public canteen page."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from cloud_receiver.admin.auth import principal_of
from cloud_receiver.api.alerts import _require_login
from cloud_receiver.api.context import ctx
from cloud_receiver.api.errors import ApiError, bad_request
from cloud_receiver.api.params import parse_time
from cloud_receiver.api.public_page import public_view
from cloud_receiver.storage.media_store import HEX64
from cloud_receiver.workflow import queries


async def list_devices(request: web.Request) -> web.Response:
    _require_login(request)
    rows = queries.list_devices(ctx(request).storage.db, principal_of(request))
    for r in rows:
        r["online"] = bool(r["online"])
    return web.json_response({"items": rows})


async def list_cameras(request: web.Request) -> web.Response:
    _require_login(request)
    device = request.query.get("device") or None
    return web.json_response({"items": queries.list_cameras(ctx(request).storage.db, principal_of(request), device)})


async def list_canteens(request: web.Request) -> web.Response:
    _require_login(request)
    where, params = queries.visibility(principal_of(request), "c.id")
    rows = list(ctx(request).storage.db.query(
        f"SELECT c.id, c.name, c.jurisdiction FROM canteens c WHERE {where} ORDER BY c.id", params))
    return web.json_response({"items": rows})


async def get_media(request: web.Request) -> web.StreamResponse:
    """Media by sha256, if the caller may see an alert or rectification it belongs to (or it is public)."""
    c, sha = ctx(request), request.match_info["sha256"]
    if not HEX64.match(sha):
        raise bad_request("sha256 must be 64 lowercase hex digits")
    row = queries.media_for(c.storage.db, principal_of(request), sha)
    path = c.media_dir / row["path"]
    if not path.is_file():
        raise ApiError(404, "not_found", f"media {sha} is recorded but its file is missing")
    return web.FileResponse(path, headers={
        "Content-Type": row["content_type"] or "application/octet-stream",
        "Cache-Control": "private, max-age=86400, immutable", "ETag": f'"{sha}"'})


async def get_stats(request: web.Request) -> web.Response:
    _require_login(request)
    c, q = ctx(request), request.query
    until = parse_time("until", q.get("until")) or c.now()
    since = parse_time("since", q.get("since")) or until - timedelta(days=7)
    if since >= until:
        raise bad_request("since must be before until")
    if until - since > timedelta(days=c.settings.stats_max_days):
        raise bad_request(f"the range may span at most {c.settings.stats_max_days} days")
    return web.json_response(queries.stats(c.storage.db, principal_of(request), since, until, c.settings.tz_hours))


async def public_canteen(request: web.Request) -> web.Response:
    """The public page of a canteen (by QR code): name, licences, rating, sampling, public kitchen snapshots."""
    c = ctx(request)
    row = c.storage.get_canteen(request.match_info["id"])
    if row is None:
        raise ApiError(404, "not_found", f"canteen {request.match_info['id']!r} not found")
    return web.json_response(public_view(c, row))
