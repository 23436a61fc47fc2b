"""What the API handlers need from the app: storage, hub, media folder and settings (typed AppKeys)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from cloud_receiver.admin.auth import StreamTickets
from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.storage.sqlite import Storage


@dataclass(frozen=True, slots=True)
class ApiSettings:
    default_deadline_hours: float | None = 24.0  # deadline of an alert nobody set one for
    photo_max_bytes: int = 5 * 1024 * 1024
    sse_keepalive_s: float = 15.0
    public_snapshots: int = 12  # how many recent public kitchen snapshots the public page lists
    tz_hours: int = 8  # China Standard Time: local days of /stats, and what a bare date in since/until means
    stats_max_days: int = 366
    sse_max_streams: int = 500  # open alert streams in all; one more is refused with 429
    sse_max_streams_per_token: int = 8  # open alert streams of one token (its tickets included)
    canteen_cache_s: float = 60.0  # how long a stream trusts a canteen's name and jurisdiction


@dataclass(slots=True)
class ApiContext:
    storage: Storage
    hub: AlertHub | None
    media_dir: Path
    settings: ApiSettings = field(default_factory=ApiSettings)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown; ends SSE streams
    canteens: dict[str, tuple[float, str, str]] = field(default_factory=dict)  # id -> (read at, name, jurisdiction)
    streams: dict[str, int] = field(default_factory=dict)  # token sha256 -> open alert streams
    pusher: Any = None  # cloud_receiver.push.robots.Pusher while the app runs
    publisher: Any = None  # cloud_receiver.control.publisher.CommandPublisher when the app has MQTT
    live: Any = None  # cloud_receiver.live.relay.LiveRelay when the app has MQTT
    tickets: StreamTickets | None = None  # SSE stream tickets, in the database (every receiver honours them)

    def now(self) -> datetime:
        from datetime import UTC
        return datetime.now(UTC)


API_CONTEXT = web.AppKey("api_context", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[API_CONTEXT]
