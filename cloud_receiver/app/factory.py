"""The aiohttp application factory: storage, MQTT subscriber, alert hub and the API routes.

Typed state lives in `cloud_receiver.appkeys`. STORAGE and SUBSCRIBER are set during startup by
cleanup contexts, in this order: storage, subscriber, housekeeping, then whatever `setup_api` adds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from cloud_receiver.api import ApiSettings, setup_api
from cloud_receiver.api.http import json_response
from cloud_receiver.app.metrics import is_admin, setup_metrics
from cloud_receiver.appkeys import ALERT_HUB, CONFIG, STORAGE, SUBSCRIBER
from cloud_receiver.config import ReceiverConfig, resolve_secret
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.ingest.subscriber import Subscriber
from cloud_receiver.push.robots import PushSettings
from cloud_receiver.storage.db import url_with_password
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import SqliteStorage, Storage, iso

log = structlog.get_logger(__name__)

HOUSEKEEPING_INTERVAL_S = web.AppKey("housekeeping_interval_s", float)


def storage_url(cfg: ReceiverConfig) -> str:
    """The PostgreSQL URL with its password (from `storage.password_env`); never log it."""
    return url_with_password(cfg.storage.url or "", cfg.storage.password_env)


def open_configured_storage(cfg: ReceiverConfig) -> Storage:
    """The configured store, migrated. The pushes its alerts owe are claimed by this receiver (its MQTT
    client id: unique per receiver, stable across restarts)."""
    if cfg.storage.engine == "postgresql":
        return PostgresStorage(storage_url(cfg), push_owner=cfg.mqtt.client_id)
    return SqliteStorage(cfg.storage.sqlite_path, busy_timeout_ms=cfg.storage.busy_timeout_ms,
                         push_owner=cfg.mqtt.client_id)


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    cfg.storage.media_dir.mkdir(parents=True, exist_ok=True)
    app[STORAGE] = open_configured_storage(cfg)  # migrates before the subscriber opens its own
    yield
    app[STORAGE].close()


async def _subscriber_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    loop = asyncio.get_running_loop()
    hub = app[ALERT_HUB]
    hub.bind_loop(loop)

    def make_ingestor() -> Ingestor:  # called in the MQTT thread; rows are announced after their commit
        return Ingestor(open_configured_storage(cfg), cfg.storage.media_dir, cfg.limits,
                        on_alert=hub.publish_threadsafe)

    sub = Subscriber(cfg.mqtt, make_ingestor, password=resolve_secret(cfg.mqtt.password_env),
                     summary_interval_s=cfg.log.summary_interval_s)
    sub.start()
    await loop.run_in_executor(None, sub.ready.wait, 30)
    if sub.failed is not None:
        sub.stop()
        raise sub.failed
    app[SUBSCRIBER] = sub
    log.info("subscriber started", host=cfg.mqtt.host, port=cfg.mqtt.port, group=cfg.mqtt.group)
    yield
    await loop.run_in_executor(None, sub.stop)


async def _housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    async def run() -> None:
        ttl = app[CONFIG].limits.incomplete_media_ttl_s
        while True:
            await asyncio.sleep(app[HOUSEKEEPING_INTERVAL_S])
            cutoff = iso(datetime.now(UTC) - timedelta(seconds=ttl))
            assert cutoff is not None
            dropped = app[STORAGE].discard_stale_chunks(cutoff)
            if dropped:
                log.warning("incomplete media discarded", chunks=dropped, older_than=cutoff)

    task = asyncio.create_task(run(), name="bk-housekeeping")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _health(request: web.Request) -> web.Response:
    """Up (200) or down (503) for anyone; the MQTT state and ingest counts only for an admin token."""
    sub = request.app.get(SUBSCRIBER)
    up = bool(sub and sub.subscribed.is_set())
    body: dict[str, object] = {"status": "up" if up else "down"}
    if is_admin(request):
        body.update({"mqtt_connected": bool(sub and sub.connected.is_set()), "mqtt_subscribed": up,
                     "ingest": dict(sub.counts) if sub else {}})
    return json_response(body, status=200 if up else 503, headers={"Cache-Control": "no-store"})


def create_app(cfg: ReceiverConfig, *, subscriber: bool = True) -> web.Application:
    """Build the receiver app. `subscriber=False` serves the API on the database only (no MQTT)."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[CONFIG] = cfg
    app[ALERT_HUB] = AlertHub()
    app[HOUSEKEEPING_INTERVAL_S] = float(min(3600, cfg.limits.incomplete_media_ttl_s / 4))
    app.cleanup_ctx.append(_storage_ctx)
    if subscriber:
        app.cleanup_ctx.append(_subscriber_ctx)
    app.cleanup_ctx.append(_housekeeping_ctx)
    app.router.add_get("/healthz", _health)
    setup_metrics(app)
    setup_api(app, settings=api_settings(cfg), push_settings=push_settings(cfg))
    return app


def api_settings(cfg: ReceiverConfig) -> ApiSettings:
    a = cfg.api
    return ApiSettings(default_deadline_hours=a.default_deadline_hours, photo_max_bytes=a.photo_max_bytes,
                       sse_max_streams=a.sse_max_streams, sse_max_streams_per_token=a.sse_max_streams_per_token)


def push_settings(cfg: ReceiverConfig) -> PushSettings:
    p = cfg.push
    return PushSettings(limit=p.limit, window_s=p.window_s, merge_when_left=p.merge_when_left,
                        retry_base_s=p.retry_base_s, retry_max_s=p.retry_max_s, timeout_s=p.timeout_s,
                        public_base_url=p.public_base_url, default_deadline_hours=cfg.api.default_deadline_hours)
