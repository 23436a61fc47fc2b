"""Helpers shared by the receiver's tests (no tests here): a device-side MQTT client, a running receiver
app (without HTTP, or behind aiohttp's test client with a box in its database) and polling. Kept beside
the tests because only tests use them."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from paho.mqtt.enums import CallbackAPIVersion

from bk_contract import Alert, topic
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from cloud_receiver.config import ReceiverConfig, parse_config
from cloud_receiver.storage.sqlite import SqliteStorage
from support.waiting import async_wait_until


def receiver_config(tmp: Path, broker: Any, *, client_id: str = "bk-receiver-test-1", mqtt: dict[str, Any] | None = None,
                    storage_url: str | None = None, **limits: int) -> ReceiverConfig:
    """A receiver config for `broker`: its user (when it has one) and the `mqtt` settings it needs
    (`broker.receiver_mqtt`, e.g. ejabberd: no shared subscriptions), fast reconnects, then `mqtt`;
    `storage_url` (a PostgreSQL URL) instead of the SQLite file."""
    user = ""
    if broker.receiver:
        os.environ["BK_TEST_RECEIVER_PASSWORD"] = broker.receiver[1]
        user = f"  username: {broker.receiver[0]}\n  password_env: BK_TEST_RECEIVER_PASSWORD\n"
    lim = "".join(f"  {k}: {v}\n" for k, v in limits.items())
    mqtt = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "store_retry_s": 0.01} | getattr(broker, "receiver_mqtt", {}) \
        | (mqtt or {})
    extra = "".join(f"  {k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in mqtt.items())
    text = (f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  client_id: {client_id}\n{user}"
            f"{extra}"
            f"storage:\n  path: {tmp}/receiver.db\n  media_dir: {tmp}/media\n"
            + (f"  url: '{storage_url}'\n" if storage_url else "")
            + (f"limits:\n{lim}" if lim else ""))
    return parse_config(text, "test")


def make_alert(device_id: str, n: int, **extra: Any) -> Alert:
    return Alert(id=f"A{n:06d}-{device_id[-4:]}", device_id=device_id, camera_id="cam1", type="phone_use",
                 started_at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC), score=0.9, **extra)


@dataclass
class DeviceClient:
    """A device-side paho v5 client that records PUBACK / SUBACK reason codes."""

    broker: Any
    device_id: str
    password: str = ""
    client_id: str | None = None
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: list[list[int]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id or f"dev-{self.device_id}",
                        protocol=mqtt.MQTTv5)
        if self.password:
            c.username_pw_set(self.device_id, self.password)
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_message = lambda _c, _u, m: self.received.append(m.topic)
        connected = threading.Event()
        reasons: list[Any] = []
        c.on_connect = lambda _c, _u, _f, reason, _p: (reasons.append(reason), connected.set())
        c.connect(self.broker.host, self.broker.port)
        c.loop_start()
        ok = connected.wait(5) and not reasons[0].is_failure
        if not ok:
            c.loop_stop()
        assert ok, f"device could not connect: {reasons[0] if reasons else 'no CONNACK'}"
        self.client = c

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            self.pubacks[mid] = reason.value
            self._lock.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        with self._lock:
            self.subacks.append([r.value for r in reasons])
            self._lock.notify_all()

    def publish(self, topic_name: str, payload: bytes | str, qos: int = 1, wait: bool = True) -> int:
        """Publish and (by default) wait for the PUBACK; returns its reason code (mid when not waiting)."""
        info = self.client.publish(topic_name, payload, qos=qos)
        if not wait:
            return info.mid
        with self._lock:
            assert self._lock.wait_for(lambda: info.mid in self.pubacks, 5), f"no PUBACK for {topic_name}"
            return self.pubacks[info.mid]

    def publish_alert(self, alert: Alert, **kw: Any) -> int:
        return self.publish(topic(alert.device_id, "alert"), alert.model_dump_json(), **kw)

    def publish_media(self, media_id: str, chunks: list[bytes], order: list[int] | None = None) -> list[int]:
        order = order if order is not None else list(range(len(chunks)))
        return [self.publish(topic(self.device_id, "media", media_id=media_id, seq=i), chunks[i]) for i in order]

    def subscribe(self, topic_filter: str) -> list[int]:
        n = len(self.subacks)
        self.client.subscribe(topic_filter, qos=1)
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.subacks) > n, 5), "no SUBACK"
            return self.subacks[n]

    def wait_all_acked(self, timeout: float = 10) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.client._out_messages) == 0, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RunningReceiver:
    """The real app (storage + subscriber cleanup contexts) without an HTTP listener."""

    def __init__(self, cfg: ReceiverConfig) -> None:
        self.cfg = cfg
        self.runner = web.AppRunner(create_app(cfg))

    async def start(self, wait_subscribed: bool = True) -> RunningReceiver:
        await self.runner.setup()
        if wait_subscribed:
            assert await async_wait_until(lambda: self.app[SUBSCRIBER].subscribed.is_set(), 10), "receiver did not subscribe"
        return self

    @property
    def app(self) -> web.Application:
        return self.runner.app

    @property
    def storage(self) -> SqliteStorage:
        return self.app[STORAGE]

    async def stop(self) -> None:
        await self.runner.cleanup()


@asynccontextmanager
async def receiver_with_box(cfg: ReceiverConfig, device_id: str) -> AsyncIterator[TestClient]:
    """The real app behind aiohttp's test client on 127.0.0.1, subscribed to the broker, with canteen C1
    (64050201) and the box `device_id` in its database (`client.app[STORAGE]`); closed at the end."""
    client = TestClient(TestServer(create_app(cfg), host="127.0.0.1"))
    await client.start_server()
    try:
        assert await async_wait_until(lambda: client.app[SUBSCRIBER].subscribed.is_set(), 10), "receiver did not subscribe"
        storage = client.app[STORAGE]
        storage.add_canteen("C1", "第一中学食堂", "64050201")
        storage.add_device(device_id, "C1", "box")
        yield client
    finally:
        await client.close()


def make_tls_files(d: Path, name: str = "ca") -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl), in `d`."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=bk-test-{name}",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.crt")
    return d
