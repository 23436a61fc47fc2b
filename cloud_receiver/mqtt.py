"""The MQTT subscriber: one named thread runs paho's network loop and stores what arrives, in batches.

Why store in paho's thread rather than hop to the asyncio loop: SQLite calls block, and on the
loop they would stall every HTTP request; in a worker pool they would reorder messages and need
a second hop back for the acknowledgement (paho's client is not safe to write from two threads
when it does not own its loop thread). In paho's own thread the order is kept and the PUBACK
(`client.ack`) follows the commit directly. Only the announcement of stored alerts crosses to the
asyncio loop, through the alert hub's thread-safe inbox.

Group commit: the thread drives paho itself through its external-loop API (`select` on
`client.socket()`, then `loop_read` / `loop_write` / `loop_misc`; without `client.loop`, paho
needs no wake-up socket pair, so an acknowledgement costs one send), collecting messages into a batch,
and stores the batch in ONE transaction when it holds `mqtt.batch_max` messages, when its first
message is `mqtt.batch_max_ms` old, or as soon as no further message is waiting on the socket,
whichever comes first (so a lone alert is stored at once, and a burst shares one commit). Every
message of the batch is acknowledged only after that commit. A rejected message is recorded and
acknowledged with its batch; a storage error leaves the whole batch unacknowledged (retried
`mqtt.store_retries` times, then the subscriber reconnects and the broker delivers it all again);
an unexpected exception rolls the batch back and its messages are stored one by one, so one bad
message cannot hold back the others. The receive maximum we announce (`mqtt.receive_maximum`)
lets the broker send the next batch while one is being stored.

Delivery: MQTT v5, clean_start False with a session expiry, QoS 1 shared subscriptions and
`manual_ack=True`. A receiver stopped or killed between a commit and its PUBACKs gets those
messages again and recognises them as repeats (the store is idempotent).
"""

from __future__ import annotations

import select
import ssl
import threading
import time
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

    IDLE_POLL_S = 0.1  # longest wait on the socket with no batch open: bounds how long stop() takes

    def __init__(self, cfg: MqttConfig, make_ingestor: Callable[[], Ingestor], password: str | None = None,
                 thread_name: str = "bk-mqtt-subscriber", summary_interval_s: float = 60.0) -> None:
        self.cfg = cfg
        self.make_ingestor = make_ingestor
        self.thread_name = thread_name
        self.summary_interval_s = summary_interval_s
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.ready = threading.Event()  # set once the ingestor is open
        self.failed: BaseException | None = None
        self.batches = 0  # committed batches (for the summary and tests)
        self._stop = threading.Event()
        self._broken = False  # storage failed: ack nothing more until reconnected
        self._ingestor: Ingestor | None = None
        self._thread: threading.Thread | None = None
        self._batch: list[mqtt.MQTTMessage] = []
        self._batch_t0 = 0.0
        self._received = 0
        self._summary = _Summary(summary_interval_s)
        self.client = self._make_client(password)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Store what was received, disconnect (the broker keeps the session) and join the thread."""
        self._stop.set()
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
        props.ReceiveMaximum = self.cfg.receive_maximum
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=False,
                                  properties=props)
        delay = self.cfg.reconnect_min_s  # the next wait before reconnecting; doubles up to reconnect_max_s
        wait = 0.0
        try:
            while not self._stop.is_set():
                if wait and self._stop.wait(wait):
                    break
                try:
                    self.client.reconnect()
                except OSError as err:
                    wait, delay = delay, min(delay * 2, self.cfg.reconnect_max_s)
                    log.warning("connect failed", host=self.cfg.host, port=self.cfg.port, error=str(err),
                                retry_in_s=wait)
                    continue
                if self._pump():  # it was subscribed: the connection worked, start the back-off again
                    delay = self.cfg.reconnect_min_s
                # what is still in the batch was never acknowledged: the broker delivers it again
                self._batch = []
                self.connected.clear()
                self.subscribed.clear()
                wait, delay = delay, min(delay * 2, self.cfg.reconnect_max_s)
        finally:
            self._summary.log(self._ingestor.counts, self.batches, final=True)
            self._ingestor.storage.close()
            log.info("subscriber stopped", thread=self.thread_name, counts=self.counts)

    def _pump(self) -> bool:
        """Run paho and store batches until the connection ends; True if it got as far as subscribed."""
        client = self.client
        ok = mqtt.MQTT_ERR_SUCCESS
        was_subscribed = False
        while not self._stop.is_set():
            was_subscribed = was_subscribed or self.subscribed.is_set()
            if not self._batch:  # wait for traffic; write what is pending; keepalive
                if not self._wait_io(self.IDLE_POLL_S):
                    return was_subscribed
                continue
            if len(self._batch) < self.cfg.batch_max and \
                    time.monotonic() - self._batch_t0 < self.cfg.batch_max_ms / 1000:
                before = self._received
                # read what is already waiting on the (non-blocking) socket, without a select per packet
                if client.loop_read() != ok:
                    return was_subscribed
                if self._received != before:
                    continue
            self._flush()  # full, old enough, or nothing more waiting: commit now
            if self._broken:
                client.disconnect()  # come back for redelivery of what was left unacknowledged
                return was_subscribed
            if client.loop_misc() != ok:
                return was_subscribed
        if self._batch and self.connected.is_set():
            self._flush()  # stopping: store and acknowledge what has arrived
        client.disconnect()
        return was_subscribed

    def _wait_io(self, timeout: float) -> bool:
        """One select on the broker socket, then paho's read / write / keepalive; False once the connection is gone."""
        client = self.client
        sock = client.socket()
        if sock is None:
            return False
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted wait inside the SSL object
        buffered = bool(pending and pending())
        try:
            readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [],
                                                  0 if buffered else timeout)
        except (OSError, ValueError):  # the socket was closed under us
            return False
        ok = mqtt.MQTT_ERR_SUCCESS
        if (readable or buffered) and client.loop_read() != ok:
            return False
        if writable and client.socket() is not None and client.loop_write() != ok:
            return False
        return client.loop_misc() == ok

    # -- batches -------------------------------------------------------------------------------
    def _flush(self) -> None:
        assert self._ingestor is not None
        batch, self._batch = self._batch, []
        messages = [(_topic_of(m), m.payload) for m in batch]
        for attempt in range(self.cfg.store_retries + 1):
            try:
                self._ingestor.handle_batch(messages)
                break
            except StorageError as err:
                log.error("storage failed", messages=len(batch), first_topic=messages[0][0], attempt=attempt + 1,
                          error=str(err))
                if attempt == self.cfg.store_retries:
                    self._broken = True  # the whole batch stays unacknowledged
                    return
                self._stop.wait(self.cfg.store_retry_s)
            except Exception:  # noqa: BLE001 - one bad message must not hold back the rest of its batch
                log.exception("batch failed unexpectedly; storing its messages one by one", messages=len(batch))
                self._one_by_one(batch, messages)
                return
        for m in batch:
            self.client.ack(m.mid, m.qos)
        self.batches += 1
        self._summary.log(self._ingestor.counts, self.batches)

    def _one_by_one(self, batch: list[mqtt.MQTTMessage], messages: list[tuple[str, bytes]]) -> None:
        """Each message in its own transaction; a message that fails unexpectedly is recorded as rejected."""
        assert self._ingestor is not None
        for msg, (topic, payload) in zip(batch, messages, strict=True):
            for attempt in range(self.cfg.store_retries + 1):
                try:
                    self._ingestor.handle(topic, payload)
                    break
                except StorageError as err:
                    log.error("storage failed", topic=topic, attempt=attempt + 1, error=str(err))
                    if attempt == self.cfg.store_retries:
                        self._broken = True  # this one and the rest stay unacknowledged
                        return
                    self._stop.wait(self.cfg.store_retry_s)
                except Exception as err:  # noqa: BLE001 - a bug must not stop ingest; keep the evidence
                    log.exception("ingest failed unexpectedly", topic=topic)
                    try:
                        self._ingestor.storage.record_reject(None, topic, f"internal error: {err!r}"[:500], utc_now())
                    except StorageError:
                        self._broken = True
                        return
                    self._ingestor.counts["rejected"] += 1
                    break
            self.client.ack(msg.mid, msg.qos)
        self.batches += 1

    # -- paho callbacks (all in this thread, inside client.loop) --------------------------------
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

    def _on_message(self, _client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not self._batch:
            self._batch_t0 = time.monotonic()
        self._batch.append(msg)
        self._received += 1


def _topic_of(msg: mqtt.MQTTMessage) -> str:
    """The topic as text; invalid UTF-8 (which the broker should refuse) is replaced, then fails validation."""
    try:
        return msg.topic
    except UnicodeDecodeError:
        return bytes(msg._topic).decode("utf-8", "replace")  # noqa: SLF001 - paho exposes no raw topic


class _Summary:
    """An info line with what ingest did, at most once per interval (the per-alert lines are debug)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._since = time.monotonic()
        self._counts: dict[str, int] = {}
        self._batches = 0

    def log(self, counts: dict[str, int], batches: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._since < self.interval_s:
            return
        delta = {k: v - self._counts.get(k, 0) for k, v in counts.items()}
        n = batches - self._batches
        if any(delta.values()) or n:
            log.info("ingest summary", interval_s=round(now - self._since, 1), batches=n,
                     messages_per_batch=round(sum(delta.values()) / n, 1) if n else None, **delta)
        self._since, self._counts, self._batches = now, dict(counts), batches
