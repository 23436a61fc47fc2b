"""Publishes commands to boxes, and receives their live video: one MQTT v5 client (paho) beside the
receiver's subscriber.

The receiver's own MQTT client only subscribes (cloud_receiver/ingest); commands are rare, so a
plain paho client with its network thread does: `publish` waits for the broker's PUBACK (QoS 1) and
raises `PublishFailed` with the reason when it does not come or refuses. The broker's ACL lets only
receivers publish to `bk/v1/+/cmd` (cloud_receiver/admin/dynsec.py), which is a command's proof of origin.

Live pieces (`bk/v1/+/live/+`, QoS 0) come in on this client too, subscribed without a share group:
every receiver gets every live stream, so a viewer on any receiver sees it (live is sent only while
someone watches). They go to `on_live(device, camera, payload)` on paho's thread.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

import bk_contract
from cloud_receiver.config import MqttConfig

log = structlog.get_logger(__name__)


LIVE_FILTER = "bk/v1/+/live/+"


class PublishFailed(Exception):
    """The broker did not take the command (unreachable, refused, or no PUBACK in time)."""


class CommandPublisher:
    """A connected paho client for `bk/v1/{device}/cmd`; thread-safe `publish`."""

    def __init__(self, cfg: MqttConfig, password: str | None, *, timeout_s: float = 5.0,
                 on_live: Callable[[str, str, bytes], None] | None = None) -> None:
        self.timeout_s = timeout_s
        self.on_live = on_live
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-cmd"[:64],
                                   protocol=mqtt.MQTTv5)
        if cfg.username:
            self._client.username_pw_set(cfg.username, password)
        if cfg.tls:
            self._client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._acks: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.host, self.port = cfg.host, cfg.port
        self._started = False

    def start(self) -> None:
        """Connect in the background, once (paho reconnects by itself); the first command or live viewer
        calls it, so a receiver nobody commands from holds one broker connection, its subscriber's."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._client.connect_async(self.host, self.port, keepalive=60)
        self._client.loop_start()

    def stop(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("command_publisher_refused", reason=str(reason))
            return
        if self.on_live is not None:
            self._client.subscribe(LIVE_FILTER, qos=0)
        self._connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            where = bk_contract.parse_topic(msg.topic)
        except bk_contract.TopicError as err:
            log.warning("live_topic_refused", topic=msg.topic[:200], error=str(err))
            return
        if where.kind == "live" and where.camera_id and self.on_live is not None:
            self.on_live(where.device_id, where.camera_id, bytes(msg.payload))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            waiting = self._acks.get(mid)
        if waiting is not None:
            waiting[1].append(reason)
            waiting[0].set()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and wait for the PUBACK (blocking: call it from a worker thread)."""
        self.start()
        if not self._connected.wait(self.timeout_s):
            raise PublishFailed(f"not connected to the broker at {self.host}:{self.port}")
        done = threading.Event()
        reasons: list[Any] = []
        with self._lock:  # registered before the PUBACK can arrive
            info = self._client.publish(topic, payload, qos=1)
            self._acks[info.mid] = (done, reasons)
        try:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise PublishFailed(f"publish failed: {mqtt.error_string(info.rc)}")
            if not done.wait(self.timeout_s):
                raise PublishFailed(f"no PUBACK from the broker within {self.timeout_s} s")
            reason = reasons[0]
            if reason.value == 0x10:  # no matching subscribers: the box is not connected, nobody gets it
                raise PublishFailed("the box is not connected (the broker has no subscriber for its commands)")
            if reason.is_failure:
                raise PublishFailed(f"broker refused the command: {reason}")
        finally:
            with self._lock:
                self._acks.pop(info.mid, None)
