"""`GET /metrics` of the receiver, Prometheus text format (prometheus-client), for an admin token.

Built at scrape time from the receiver's own state: ingest counts and batches, the MQTT link, SSE
streams and what the alert hub dropped for slow ones, robot pushes still owed, rejects on record.
Like the details of /healthz it needs an admin bearer token (a scraper sends it as
`authorization: {type: Bearer, credentials: …}`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud_receiver.admin import auth
from cloud_receiver.api.http import json_response
from cloud_receiver.appkeys import ALERT_HUB, LIVE_RELAY, STORAGE, SUBSCRIBER
from cloud_receiver.storage.schema import push_outbox
from cloud_receiver.storage.schema import rejects as rejects_table


class ReceiverCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        sub: Any = self.app.get(SUBSCRIBER)
        ingest = CounterMetricFamily("bk_ingest_messages", "Messages handled by ingest, by outcome", labels=["outcome"])
        for outcome, n in (sub.counts if sub is not None else {}).items():
            ingest.add_metric([outcome], n)
        yield ingest
        yield CounterMetricFamily("bk_ingest_batches", "Transactions committed by ingest",
                                  value=sub.batches if sub is not None else 0)
        yield GaugeMetricFamily("bk_mqtt_connected", "1 while connected to the broker",
                                value=float(bool(sub and sub.connected.is_set())))
        yield GaugeMetricFamily("bk_mqtt_subscribed", "1 while subscribed",
                                value=float(bool(sub and sub.subscribed.is_set())))
        hub = self.app[ALERT_HUB]
        yield GaugeMetricFamily("bk_sse_streams", "Open alert streams (SSE)", value=hub.streams)
        yield CounterMetricFamily("bk_sse_alerts_published", "Stored alerts announced to streams", value=hub.published)
        yield CounterMetricFamily("bk_sse_events_dropped", "Events dropped for streams too slow to read them",
                                  value=hub.dropped)
        relay: Any = self.app.get(LIVE_RELAY)
        viewers = GaugeMetricFamily("bk_live_viewers", "Browsers watching a camera live", labels=["camera"])
        relayed = CounterMetricFamily("bk_live_bytes", "Live video bytes received from boxes", labels=["camera"])
        for camera, s in (relay.stats() if relay is not None else {}).items():
            viewers.add_metric([camera], s["viewers"])
            relayed.add_metric([camera], s["bytes"])
        yield viewers
        yield relayed
        if STORAGE in self.app:
            db = self.app[STORAGE].sql
            owed = db.scalar(sa.select(sa.func.count()).select_from(push_outbox).where(push_outbox.c.sent_at.is_(None)))
            rejects = db.scalar(sa.select(sa.func.count()).select_from(rejects_table))
            yield GaugeMetricFamily("bk_push_owed", "Robot messages owed for stored alerts, not yet accepted", value=owed)
            yield GaugeMetricFamily("bk_rejects_recorded", "Rejected messages on record", value=rejects)


def is_admin(request: web.Request) -> bool:
    """Whether the request carries an admin bearer token (the details of /healthz, /metrics)."""
    token = auth.bearer(request.headers.get("Authorization"))
    who = auth.lookup(request.app[STORAGE].sql, token) if token and STORAGE in request.app else None
    return who is not None and who.role == "admin"


def setup_metrics(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReceiverCollector(app))

    async def metrics(request: web.Request) -> web.Response:
        if not is_admin(request):
            return json_response({"error": {"code": "unauthorized", "message": "/metrics needs an admin bearer token"}},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                                     "Cache-Control": "no-store"})

    app.router.add_get("/metrics", metrics)
