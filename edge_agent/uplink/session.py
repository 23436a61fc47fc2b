"""One MQTT v5 connection to the broker, driven from the uplink's own thread.

paho-mqtt's callbacks only append to an event list; `MqttSession.poll()` runs paho's network loop
and returns what happened (CONNACK, PUBACK with its reason code, disconnect). A fresh paho client is
made for every connection so paho never retransmits on its own: after a reconnect the outbox is the
only source of retries (clean start, no session state on either side).

Reason codes are translated here, once, into the project's words: auth failures need a human,
everything else may be retried later.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.errors import RetryLater

# CONNACK codes after which retrying with the same credentials is pointless.
AUTH_FAILED_CODES = {0x86: "bad user name or password", 0x87: "not authorized", 0x8C: "bad authentication method"}


@dataclass(frozen=True, slots=True)
class Connack:
    code: int
    reason: str

    @property
    def ok(self) -> bool:
        return self.code < 0x80

    @property
    def auth_failed(self) -> bool:
        return self.code in AUTH_FAILED_CODES


@dataclass(frozen=True, slots=True)
class Puback:
    mid: int
    code: int
    reason: str

    @property
    def ok(self) -> bool:
        # the broker took it (0x00, or 0x10 "no matching subscribers": see no_subscribers)
        return self.code < 0x80

    @property
    def no_subscribers(self) -> bool:
        # 0x10: accepted, but nobody will get it (e.g. Mosquitto restarted and lost the receivers'
        # shared subscriptions): for the outbox that is not delivered
        return self.code == 0x10


@dataclass(frozen=True, slots=True)
class Disconnected:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Message:
    """A PUBLISH from the broker (the box subscribes only to its own `cmd` topic)."""

    topic: str
    payload: bytes


Event = Connack | Puback | Disconnected | Message


def _varint_len(n: int) -> int:
    size = 1
    while n > 127:
        n //= 128
        size += 1
    return size


def publish_packet_size(topic: str, payload_len: int, qos: int) -> int:
    """Bytes of an MQTT v5 PUBLISH without properties, exactly as paho writes it to the socket:
    fixed header (1 + remaining-length varint) + topic (2 + UTF-8) + packet id (QoS > 0) +
    property length (1 byte, no properties) + payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + 1 + payload_len
    return 1 + _varint_len(remaining) + remaining


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttSession:
    """A single connection attempt and its lifetime; not reusable after `close()`."""

    def __init__(self, *, host: str, port: int, client_id: str, username: str | None, password: str | None,
                 keepalive_s: int, will: Will | None = None, tls: bool = False, ca_file: Path | None = None,
                 window: int = 20, connect_timeout_s: float = 5.0) -> None:
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.events: list[Event] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        if tls:
            c.tls_set(ca_certs=str(ca_file) if ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(window)
        c.max_queued_messages_set(0)
        c.connect_timeout = connect_timeout_s
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self.open = False

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.events.append(Connack(int(reason_code.value), str(reason_code)))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.events.append(Puback(int(mid), int(reason_code.value), str(reason_code)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.events.append(Disconnected(int(reason_code.value), str(reason_code)))

    def _on_message(self, client, userdata, message) -> None:
        self.events.append(Message(message.topic, bytes(message.payload)))

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1 (asked after the CONNACK; clean start forgets subscriptions)."""
        result, _mid = self.client.subscribe(topic, qos=1)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RetryLater(f"subscribe to {topic} failed: {mqtt.error_string(result)}")

    def connect(self) -> None:
        """TCP connect and send CONNECT; the CONNACK comes later through `poll()`."""
        try:
            self.client.connect(self.host, self.port, keepalive=self.keepalive_s, clean_start=True)
        except (OSError, ssl.SSLError) as err:
            raise RetryLater(f"cannot reach broker {self.host}:{self.port}: {err}") from err
        self.open = True

    def poll(self, timeout: float) -> list[Event]:
        """Run the network loop for up to `timeout` s; returns (and clears) the events it produced."""
        if self.open:
            rc = self.client.loop(timeout=max(0.0, timeout))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.open = False
                if not any(isinstance(e, Disconnected) for e in self.events):
                    self.events.append(Disconnected(int(rc), mqtt.error_string(rc)))
        out, self.events = self.events, []
        return out

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> int:
        """Hand one PUBLISH to the socket; returns its packet id. Raises RetryLater if the link is gone."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS,):
            raise RetryLater(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    def close(self) -> None:
        if self.open:
            try:
                self.client.disconnect()
                self.client.loop(timeout=0.05)
            except (OSError, ValueError):
                pass
        self.open = False
        sock = self.client.socket()
        if sock is not None:  # DISCONNECT could not be written (dead link): do not leak the socket
            with contextlib.suppress(OSError):
                sock.close()
