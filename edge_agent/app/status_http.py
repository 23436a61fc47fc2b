"""The box's local status endpoint (`status_port`, 127.0.0.1 only): `GET /healthz` and Prometheus
`GET /metrics`, both built from the agent's own state at request time.

/healthz answers 200 while the agent's supervisor loop runs and has given up on no thread, else
503; the body (JSON) says per camera and for the uplink what state they are in. /metrics is the
Prometheus text format (prometheus-client): cameras, inference, thread restarts, outbox, uplink.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)


class AgentCollector(Collector):
    """Reads the agent at scrape time; nothing is kept between scrapes."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        stats = self.agent.stats()
        health = {h.id: h for h in self.agent.health()}
        up = GaugeMetricFamily("bk_camera_up", "1 while the camera streams", labels=["camera"])
        fps = GaugeMetricFamily("bk_camera_fps", "Frames per second decoded", labels=["camera"])
        decoded = CounterMetricFamily("bk_camera_frames_decoded", "Frames decoded", labels=["camera"])
        detected = CounterMetricFamily("bk_camera_detect_runs", "Detector runs", labels=["camera"])
        dropped = CounterMetricFamily("bk_camera_frames_dropped", "Sampled frames dropped: the detector was behind",
                                      labels=["camera"])
        for cid, cam in stats.get("cameras", {}).items():
            h = health.get(cid)
            up.add_metric([cid], 1.0 if h is not None and h.state == "online" else 0.0)
            fps.add_metric([cid], float(h.fps) if h is not None and h.fps is not None else 0.0)
            decoded.add_metric([cid], cam["decoded"])
            detected.add_metric([cid], cam["detections"])
            dropped.add_metric([cid], cam["dropped"])
        yield from (up, fps, decoded, detected, dropped)
        yield GaugeMetricFamily("bk_inference_ms", "Detector time per frame (moving average)",
                                value=stats.get("inference_ms", 0.0))
        restarts = CounterMetricFamily("bk_thread_restarts", "Stuck threads restarted by the supervisor",
                                       labels=["thread"])
        for thread, n in stats.get("thread_restarts", {}).items():
            restarts.add_metric([thread], n)
        yield restarts
        if self.agent.outbox is not None:
            yield from _outbox_metrics(self.agent.outbox.stats())
        if self.agent.uplink is not None:
            u = self.agent.uplink.health()
            yield GaugeMetricFamily("bk_uplink_connected", "1 while connected to the broker", value=float(u["connected"]))
            yield GaugeMetricFamily("bk_uplink_budget_used_bps", "Upload used (bit/s, recent)",
                                    value=float(u["budget_used_bps"]))


def _outbox_metrics(o: dict) -> Iterator[Metric]:
    depth = GaugeMetricFamily("bk_outbox_depth", "Messages waiting for the broker", labels=["priority"])
    dropped = CounterMetricFamily("bk_outbox_dropped", "Messages dropped by the disk quota", labels=["priority"])
    for prio, n in o.get("depth", {}).items():
        depth.add_metric([prio], n)
    for prio, n in o.get("dropped", {}).items():
        dropped.add_metric([prio], n)
    yield depth
    yield dropped
    yield GaugeMetricFamily("bk_outbox_bytes", "Bytes in the outbox", value=o.get("bytes", 0))
    yield GaugeMetricFamily("bk_outbox_quota_bytes", "The outbox's disk quota", value=o.get("quota_bytes", 0))


def healthz(agent: Any, max_pass_age_s: float) -> tuple[int, dict]:
    sup = agent.supervisor
    last = agent.last_pass
    looping = sup is not None and last is not None and time.monotonic() - last <= max_pass_age_s
    body = {
        "ok": bool(looping and not sup.gave_up),
        "supervisor": {"running": looping, "gave_up": sorted(sup.gave_up) if sup else [],
                       "restarts": dict(sup.restarts) if sup else {}},
        "cameras": {h.id: h.state for h in agent.health()},
        "uplink": ({k: agent.uplink.health()[k] for k in ("connected", "state", "needs_human")}
                   if agent.uplink is not None else None),
    }
    return (200 if body["ok"] else 503), body


class StatusServer:
    """HTTP on 127.0.0.1:`port` in its own thread (port 0 picks a free one: see `.port`)."""

    def __init__(self, agent: Any, port: int, *, max_pass_age_s: float = 10.0) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(agent))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    code, body = healthz(agent, max_pass_age_s)
                    self._send(code, json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8")
                else:
                    self._send(404, b'{"error": "not found: /healthz or /metrics"}', "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line each
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("status_http_listening", url=f"http://127.0.0.1:{self.port}/metrics")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)
