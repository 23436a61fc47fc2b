"""The aiohttp application factory: storage, MQTT subscriber, alert hub and the API routes.

Typed state lives in `cloud_receiver.appkeys`. STORAGE and SUBSCRIBER are set during startup by
cleanup contexts, in this order: storage, the alert listener (PostgreSQL only), subscriber, housekeeping,
then whatever `setup_api` adds.
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
from cloud_receiver.appkeys import ALERT_HUB, COMMAND_PUBLISHER, CONFIG, LIVE_RELAY, STORAGE, SUBSCRIBER
from cloud_receiver.config import ReceiverConfig, resolve_secret
from cloud_receiver.control import commands as control
from cloud_receiver.control.publisher import CommandPublisher
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.ingest.pg_notify import alert_listener
from cloud_receiver.ingest.subscriber import Subscriber
from cloud_receiver.ledgers.runner import rules_running
from cloud_receiver.live.relay import LiveRelay
from cloud_receiver.push.robots import PushSettings
from cloud_receiver.storage.db import url_with_password
from cloud_receiver.storage.opening import open_store
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import Storage, iso
from cloud_receiver.web import setup_console
from cloud_receiver.workflow import rollup

log = structlog.get_logger(__name__)

HOUSEKEEPING_INTERVAL_S = web.AppKey("housekeeping_interval_s", float)


def storage_url(cfg: ReceiverConfig) -> str:
    """The PostgreSQL URL with its password (from `storage.password_env`); never log it."""
    return url_with_password(cfg.storage.url or "", cfg.storage.password_env)


def open_configured_storage(cfg: ReceiverConfig) -> Storage:
    """The configured store, migrated. The pushes its alerts owe are claimed by this receiver (its MQTT
    client id: unique per receiver, stable across restarts)."""
    s = cfg.storage
    return open_store(url=s.url, password_env=s.password_env, sqlite_path=s.sqlite_path,
                      busy_timeout_ms=s.busy_timeout_ms, push_owner=cfg.mqtt.client_id,
                      push_lease_s=cfg.push.claim_lease_s)


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

    # called in the MQTT thread; rows are announced after their commit (on PostgreSQL the alert listener
    # announces those of the other receivers)
    def make_ingestor() -> Ingestor:
        storage = open_configured_storage(cfg)
        if isinstance(storage, PostgresStorage):  # the listener need not read back what this receiver announces
            storage.on_notify = hub.expect
        return Ingestor(storage, cfg.storage.media_dir, cfg.limits, on_alert=hub.publish_threadsafe)

    sub = Subscriber(cfg.mqtt, make_ingestor, password=resolve_secret(cfg.mqtt.password_env),
                     summary_interval_s=cfg.log.summary_interval_s)
    sub.start()
    await loop.run_in_executor(None, sub.ready.wait, 30)
    if sub.failed is not None:
        sub.stop()
        raise sub.failed
    app[SUBSCRIBER] = sub
    log.info("subscriber started", host=cfg.mqtt.host, port=cfg.mqtt.port, group=cfg.mqtt.group)
    relay = LiveRelay(lambda device, camera, name: _send_live(app, device, camera, name))
    relay.bind_loop(loop)
    publisher = CommandPublisher(cfg.mqtt, resolve_secret(cfg.mqtt.password_env), on_live=relay.feed_threadsafe)
    app[COMMAND_PUBLISHER] = publisher
    app[LIVE_RELAY] = relay
    yield
    await loop.run_in_executor(None, publisher.stop)
    await loop.run_in_executor(None, sub.stop)


async def _alert_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """On PostgreSQL, the alerts every receiver stores reach this one's hub by LISTEN/NOTIFY (docs/receiver.md)."""
    if app[CONFIG].storage.engine != "postgresql":
        yield
        return
    async with alert_listener(storage_url(app[CONFIG]), app[ALERT_HUB]):
        yield


async def _send_live(app: web.Application, device_id: str, camera_id: str, name: str) -> None:
    """A live command from the relay (its viewers are the issuers), recorded like any other command."""
    cmd = control.new_command(name, "live-relay", datetime.now(UTC), camera_id=camera_id, ttl_s=30)
    await control.deliver(app[STORAGE].sql, app[COMMAND_PUBLISHER], device_id, cmd)


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


async def _rollup_ctx(app: web.Application) -> AsyncIterator[None]:
    """The alert count rollups (workflow/rollup.py): brought up to date at start, then every `storage.rollup_interval_s`."""
    loop = asyncio.get_running_loop()
    db, tz, interval = app[STORAGE].sql, api_settings(app[CONFIG]).tz_hours, app[CONFIG].storage.rollup_interval_s

    async def run() -> None:
        while True:
            work = loop.run_in_executor(None, rollup.refresh, db, tz)
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work}, timeout=10)  # a refresh in its thread finishes before storage closes
                raise
            except Exception:  # noqa: BLE001 - e.g. the database locked: log, try at the next interval
                log.exception("rollup refresh failed", retry_in_s=interval)
            await asyncio.sleep(interval)

    task = asyncio.create_task(run(), name="bk-rollup")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _ledger_rules_ctx(app: web.Application) -> AsyncIterator[None]:
    """The ledger rules every `ledgers.rules_interval_s` (docs/ledgers.md); their alerts go to the hub."""
    hub = app[ALERT_HUB]
    async with rules_running(app[STORAGE], app[CONFIG].ledgers, lambda row: hub.publish(row, once=True)):
        yield


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
    app.cleanup_ctx.append(_alert_listener_ctx)  # LISTENs before the subscriber stores anything
    if subscriber:
        app.cleanup_ctx.append(_subscriber_ctx)
    app.cleanup_ctx.append(_housekeeping_ctx)
    app.cleanup_ctx.append(_ledger_rules_ctx)
    app.cleanup_ctx.append(_rollup_ctx)
    app.router.add_get("/healthz", _health)
    setup_metrics(app)
    setup_api(app, settings=api_settings(cfg), push_settings=push_settings(cfg))
    setup_console(app)
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
