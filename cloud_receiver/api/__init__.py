"""The HTTP API under /api/v1: routes, roles, the OpenAPI document, SSE, and the push lifecycle.

`setup_api(app)` is called by `cloud_receiver.app.factory.create_app` before the app starts. It adds the
JSON-error and bearer-token middlewares, the security headers of every response (`http`), the
routes, and a cleanup context that (after the
app's storage context has opened `app[STORAGE]`) builds the handlers' `ApiContext` and starts
the WeCom/DingTalk push (`cloud_receiver.push.wiring.push_ctx`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from cloud_receiver.admin import auth
from cloud_receiver.api import alerts, commands, export, ledgers, live, public_page, resources, stream
from cloud_receiver.api.context import API_CONTEXT, ApiContext, ApiSettings, ctx
from cloud_receiver.api.errors import error_middleware, json_error
from cloud_receiver.api.http import json_response, security_headers
from cloud_receiver.api.openapi import DOCUMENT
from cloud_receiver.appkeys import ALERT_HUB, COMMAND_PUBLISHER, CONFIG, LIVE_RELAY, STORAGE
from cloud_receiver.push.robots import PushSettings
from cloud_receiver.push.wiring import push_ctx
from cloud_receiver.storage.db import Db

PREFIX = "/api/v1"
API_SETTINGS = web.AppKey("api_settings", ApiSettings)
PUSH_SETTINGS = web.AppKey("push_settings", PushSettings)


async def openapi(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)


ROUTES: tuple[tuple[str, str, object], ...] = (
    ("GET", "/openapi.json", openapi),
    ("GET", "/canteens", resources.list_canteens),
    ("GET", "/devices", resources.list_devices),
    ("GET", "/cameras", resources.list_cameras),
    ("POST", "/devices/{id}/commands", commands.send_command),
    ("GET", "/devices/{id}/commands/{cid}", commands.get_command),
    ("GET", "/live/{id}/{camera}", live.live_socket),
    ("GET", "/alerts", alerts.list_alerts),
    ("GET", "/alerts/stream", stream.alert_stream),  # before /alerts/{id}
    ("POST", "/alerts/stream/tickets", stream.create_ticket),
    ("GET", "/alerts/{id}", alerts.get_alert),
    ("POST", "/alerts/{id}/deadline", alerts.set_deadline),
    ("POST", "/alerts/{id}/rectification", alerts.submit_rectification),
    ("POST", "/alerts/{id}/review", alerts.review),
    ("GET", "/media/{sha256}", resources.get_media),
    ("GET", "/stats", resources.get_stats),
    ("GET", "/public/canteens/{id}", resources.public_canteen),
    ("PATCH", "/canteens/{id}/public", public_page.edit_public_page),
    *ledgers.ROUTES,  # the canteens' ledgers (自律台账), docs/ledgers.md
    ("GET", "/export/changes", export.export_changes),
    ("GET", "/export/canteens", export.export_canteens),
)


def _db_of(app: web.Application) -> Db:
    return app[API_CONTEXT].storage.sql


def _tickets_of(app: web.Application) -> auth.StreamTickets | None:
    return app[API_CONTEXT].tickets if API_CONTEXT in app else None


def setup_api(app: web.Application, *, settings: ApiSettings | None = None,
              push_settings: PushSettings | None = None) -> None:
    """Register /api/v1 on `app` (call before the app starts)."""
    app[API_SETTINGS] = settings or ApiSettings()
    app[PUSH_SETTINGS] = push_settings or PushSettings(default_deadline_hours=app[API_SETTINGS].default_deadline_hours)
    app.on_response_prepare.append(security_headers)
    app.middlewares.append(error_middleware)
    app.middlewares.append(auth.auth_middleware(_db_of, json_error, _tickets_of))
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)  # type: ignore[arg-type]
    app.cleanup_ctx.append(_api_ctx)
    app.on_shutdown.append(_stop_streams)


async def _api_ctx(app: web.Application) -> AsyncIterator[None]:
    app[API_CONTEXT] = ApiContext(storage=app[STORAGE], hub=app.get(ALERT_HUB),
                                  media_dir=app[CONFIG].storage.media_dir, settings=app[API_SETTINGS],
                                  publisher=app.get(COMMAND_PUBLISHER), live=app.get(LIVE_RELAY),
                                  tickets=auth.StreamTickets(app[STORAGE].sql))  # in the database: good on every receiver
    async with push_ctx(app[API_CONTEXT], app[PUSH_SETTINGS], lease_s=app[CONFIG].push.claim_lease_s):
        yield


async def _stop_streams(app: web.Application) -> None:
    if API_CONTEXT in app:
        app[API_CONTEXT].stop.set()


__all__ = ["API_CONTEXT", "API_SETTINGS", "PUSH_SETTINGS", "PREFIX", "ROUTES", "ApiContext", "ApiSettings", "ctx",
           "setup_api"]
