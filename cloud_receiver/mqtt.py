"""The MQTT subscriber: one named thread running paho's network loop; messages are stored in it.

Why store in paho's thread rather than hop to the asyncio loop: SQLite calls block, and on the
loop they would stall every HTTP request; in a worker pool they would reorder messages and need
a second hop back for the acknowledgement. In paho's own thread the order is kept, the PUBACK
(`client.ack`) follows the commit directly, and back-pressure is natural: while a message is
being stored paho reads no more (the broker holds the rest, up to our Receive Maximum). Only the
announcement of a stored alert crosses to the loop, with `loop.call_soon_threadsafe`.

Delivery: MQTT v5, clean_start False with a session expiry, QoS 1 shared subscriptions and
`manual_ack=True`. A message is acknowledged after it is stored or rejected-and-recorded. When
storage keeps failing the message stays unacknowledged and the subscriber reconnects, so the
broker delivers it again (MQTT redelivers unacknowledged messages on session resumption).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_receiver.config import MqttConfig
from cloud_receiver.errors import StorageError
from cloud_receiver.ingest import Ingestor
from cloud_receiver.storage import utc_now

log = structlog.get_logger(__name__)

KINDS = ("alert", "media/#", "status", "telemetry", "cmd/result")


def subscriptions(group: str, shared: bool = True) -> list[str]:
    """The subscriptions of a receiver: shared ones in `group`, or plain ones (single receiver)."""
    prefix = f"$share/{group}/" if shared else ""
    return [f"{prefix}bk/v1/+/{kind}" for kind in KINDS]


class Subscriber:
    """Owns the paho client and the thread that runs it. `start()`, then `stop()` joins it.

    `make_ingestor` is called inside the thread, so the Ingestor (and its SQLite connection)
    belongs to that thread alone.
    """

    def __init__(self, cfg: MqttConfig, make_ingestor: Callable[[], Ingestor], password: str | None = None,
                 thread_name: str = "bk-mqtt-subscriber") -> None:
        self.cfg = cfg
        self.make_ingestor = make_ingestor
        self.thread_name = thread_name
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.ready = threading.Event()  # set once the ingestor is open
        self.failed: BaseException | None = None
        self._stop = threading.Event()
        self._broken = False  # storage failed: ack nothing more until reconnected
        self._ingestor: Ingestor | None = None
        self._thread: threading.Thread | None = None
        self.client = self._make_client(password)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect (the broker keeps the session) and join the thread."""
        self._stop.set()
        self.client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("subscriber thread did not stop", thread=self.thread_name, timeout_s=timeout)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._ingestor.counts) if self._ingestor else {}

    def _make_client(self, password: str | None) -> mqtt.Client:
        c = self.cfg
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if c.username:
            client.username_pw_set(c.username, password)
        if c.tls:
            client.tls_set(ca_certs=str(c.ca_file) if c.ca_file else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _run(self) -> None:
        try:
            self._ingestor = self.make_ingestor()
        except BaseException as err:  # noqa: BLE001 - reported to the app, which fails its startup
            self.failed = err
            self.ready.set()
            log.error("subscriber cannot open storage", error=str(err))
            return
        self.ready.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=False,
                                  properties=props)
        delay = self.cfg.reconnect_min_s
        try:
            while not self._stop.is_set():
                self.client.loop_forever(retry_first_connection=True)
                if self._stop.is_set():
                    break
                # we disconnected on purpose after a storage failure: come back for redelivery
                self._stop.wait(delay)
                try:
                    self.client.reconnect()
                    delay = self.cfg.reconnect_min_s
                except OSError as err:
                    delay = min(delay * 2, self.cfg.reconnect_max_s)
                    log.warning("reconnect failed", error=str(err), retry_in_s=delay)
        finally:
            self._ingestor.storage.close()
            log.info("subscriber stopped", thread=self.thread_name, counts=self.counts)

    # -- paho callbacks (all in this thread) --------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the receiver", reason=str(reason), host=self.cfg.host, port=self.cfg.port)
            return
        self._broken = False
        self.connected.set()
        log.info("receiver connected", host=self.cfg.host, port=self.cfg.port, session_present=flags.session_present)
        client.subscribe([(t, 1) for t in subscriptions(self.cfg.group, self.cfg.shared)])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("broker refused the receiver's subscriptions", reasons=refused)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("receiver disconnected", reason=str(reason))

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._broken or self._stop.is_set():
            return  # left unacknowledged: redelivered after the reconnect / restart
        assert self._ingestor is not None
        for attempt in range(self.cfg.store_retries + 1):
            try:
                self._ingestor.handle(msg.topic, msg.payload)
                break
            except StorageError as err:
                log.error("storage failed", topic=msg.topic, attempt=attempt + 1, error=str(err))
                if attempt == self.cfg.store_retries:
                    self._broken = True
                    client.disconnect()
                    return
                self._stop.wait(self.cfg.store_retry_s)
            except Exception as err:  # noqa: BLE001 - a bug must not stop ingest; keep the evidence
                log.exception("ingest failed unexpectedly", topic=msg.topic)
                try:
                    self._ingestor.storage.record_reject(None, msg.topic, f"internal error: {err!r}"[:500], utc_now())
                except StorageError:
                    self._broken = True
                    client.disconnect()
                    return
                break
        client.ack(msg.mid, msg.qos)
