"""The MQTT subscriber: one named thread reads the broker's socket and stores what arrives, in batches.

Why store in this thread rather than hop to the asyncio loop: SQLite calls block, and on the loop
they would stall every HTTP request; in a worker pool they would reorder messages and need a second
hop back for the acknowledgement. Here the order is kept and the PUBACKs follow the commit
directly; only the announcement of stored alerts crosses to the loop (the alert hub's inbox).

The MQTT v5 client is our own, and only a subscriber: `codec` (with `mqtt_fields`) is the packet
codec, `framing` cuts the byte stream into packets, `handshake` builds CONNECT / SUBSCRIBE and
judges the broker's answers, `poison` settles a message that keeps breaking the connection; this
module drives the socket, reading 64 KiB at a time (paho spent two thirds of an alert's time in
its receive path, docs/receiver.md).

Group commit: a batch is stored in ONE transaction when it holds `mqtt.batch_max` messages, when
its first message is `mqtt.batch_max_ms` old, or as soon as nothing more is waiting on the socket;
its messages are acknowledged after the commit, in the order received (a rejected one too). A
storage error leaves the batch unacknowledged: retried `mqtt.store_retries` times while the
connection is kept alive, then the subscriber reconnects and the broker delivers it all again.

Delivery: MQTT v5, clean_start False with a session expiry, QoS 1 (shared) subscriptions; the store
is idempotent, so a redelivered message is a harmless repeat. A packet that breaks the protocol
ends the connection with the DISCONNECT reason the standard gives. Liveness: PINGREQ after half a
keepalive without sending (also when the broker's Server Keep Alive is 0), and only a whole packet
proves the link; TCP keepalive is on. Reconnects back off from `mqtt.reconnect_min_s` to
`mqtt.reconnect_max_s`, starting again only after a connection that acknowledged a message or
stayed subscribed `mqtt.healthy_after_s`. docs/receiver.md tells the whole story.
"""
from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

import structlog

from cloud_receiver.config import MqttConfig
from cloud_receiver.ingest import codec, handshake
from cloud_receiver.ingest.framing import TOO_LARGE, PacketReader, TooLargeHead
from cloud_receiver.ingest.handler import Ingestor, store_with_retries
from cloud_receiver.ingest.handshake import BrokerMismatch, ConnectionEnded, Handshake
from cloud_receiver.ingest.handshake import subscriptions as subscriptions  # re-exported: admin.dynsec uses it
from cloud_receiver.ingest.mqtt_fields import MALFORMED, PACKET_ID_NOT_FOUND, PROTOCOL_ERROR, RECEIVE_MAXIMUM_EXCEEDED
from cloud_receiver.ingest.poison import PoisonGuard, Refused, record_refused
from cloud_receiver.ingest.summary import IngestSummary

log = structlog.get_logger(__name__)


class Subscriber:
    """Owns the broker connection and the thread that runs it. `start()`, then `stop()` joins it.

    `make_ingestor` is called inside the thread, so the Ingestor (and its SQLite connection)
    belongs to that thread alone.
    """

    IDLE_POLL_S = 0.1  # longest wait on the socket with no batch open: bounds how long stop() takes
    READ_BYTES = 65536
    CONNECT_TIMEOUT_S = 10.0  # TCP (and TLS) connect, and the wait for CONNACK

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
        self._handshake = Handshake(cfg, password)
        self._poison = PoisonGuard()
        self._stop = threading.Event()
        self._broken = False  # storage failed: ack nothing more until reconnected
        self._ingestor: Ingestor | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._reader = PacketReader(handshake.MAX_PACKET_BYTES)
        self._batch: list[codec.Publish | Refused] = []
        self._refused = 0  # poison messages in the open batch
        self._batch_t0 = 0.0
        self._keepalive = cfg.keepalive_s
        self._connect_t0 = self._last_out = 0.0
        self._ping_sent: float | None = None
        self._subscribed_at: float | None = None  # when this connection reached SUBACK
        self._acked = 0  # messages acknowledged on this connection
        self._poll: select.poll | None = None
        self._send_timeout = float(cfg.keepalive_s)
        self._summary = IngestSummary(summary_interval_s)

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

    def _run(self) -> None:
        try:
            self._ingestor = self.make_ingestor()
        except BaseException as err:  # noqa: BLE001 - reported to the app, which fails its startup
            self.failed = err
            self.ready.set()
            log.error("subscriber cannot open storage", error=str(err))
            return
        self.ready.set()
        c = self.cfg
        delay = c.reconnect_min_s  # the next wait before reconnecting; doubles up to reconnect_max_s
        wait = 0.0
        try:
            while not self._stop.is_set():
                if wait and self._stop.wait(wait):
                    break
                try:
                    self._connect()
                except (OSError, ValueError) as err:  # ValueError: e.g. a host name IDNA cannot encode
                    wait, delay = delay, min(delay * 2, c.reconnect_max_s)
                    log.warning("connect failed", host=c.host, port=c.port, error=str(err) or repr(err),
                                retry_in_s=wait)
                    continue
                ended: Exception | None = None
                try:
                    self._pump()
                except Exception as err:  # noqa: BLE001 - every way a connection ends is reported below
                    ended = err
                    if isinstance(err, codec.ProtocolError):
                        self._send_quietly(codec.disconnect_packet(err.code))
                finally:
                    self._close()
                if self._worked():  # the connection did its job: start the back-off again
                    delay = c.reconnect_min_s
                wait = c.reconnect_max_s if isinstance(ended, BrokerMismatch) else delay
                delay = min(delay * 2, c.reconnect_max_s)
                self._report(ended, wait)
                # what is still in the batch was never acknowledged: the broker delivers it again
                self._batch, self._refused = [], 0
        finally:
            self._summary.log(self._ingestor.counts, self.batches, final=True)
            self._ingestor.storage.close()
            log.info("subscriber stopped", thread=self.thread_name, counts=self.counts)

    def _worked(self) -> bool:
        return self._acked > 0 or (self._subscribed_at is not None and
                                   time.monotonic() - self._subscribed_at >= self.cfg.healthy_after_s)

    def _report(self, ended: Exception | None, retry_in_s: float) -> None:
        if ended is None or self._stop.is_set() and isinstance(ended, (OSError, ConnectionEnded)):
            return  # stopped, or storage failed (logged where it happened)
        if isinstance(ended, codec.ProtocolError):
            where = {"packet_id": ended.packet_id, "topic": ended.topic} if isinstance(ended, codec.BadPublish) else {}
            log.error("broker broke the protocol; reconnecting", error=str(ended),
                      disconnect_reason=f"0x{ended.code:02X}", retry_in_s=retry_in_s, **where)
        elif isinstance(ended, BrokerMismatch):
            log.error("the broker cannot serve the receiver as configured; a person must change the broker or the "
                      "mqtt config", reason=str(ended), retry_in_s=retry_in_s)
        elif isinstance(ended, (OSError, ConnectionEnded)):
            log.warning("receiver disconnected", reason=str(ended) or type(ended).__name__, retry_in_s=retry_in_s)
        else:  # a bug or odd input must not end ingest: log it, reconnect
            log.error("subscriber connection failed unexpectedly; reconnecting", exc_info=ended, retry_in_s=retry_in_s)

    # -- the connection ----------------------------------------------------------------------------
    def _connect(self) -> None:
        c = self.cfg
        sock = socket.create_connection((c.host, c.port), timeout=self.CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_tcp_keepalive(sock, c.keepalive_s)
            if c.tls:
                ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
                sock = ctx.wrap_socket(sock, server_hostname=c.host)
            self._send_timeout = max(self.CONNECT_TIMEOUT_S, c.keepalive_s)
            sock.settimeout(self._send_timeout)  # bounds a send to a stalled broker
            self._poll = select.poll()  # not select(): a busy process may hand us a descriptor above 1023
            self._poll.register(sock, select.POLLIN)
            self._sock, self._keepalive, self._ping_sent = sock, c.keepalive_s, None
            self._reader = PacketReader(handshake.MAX_PACKET_BYTES)
            self._subscribed_at, self._acked = None, 0
            self._connect_t0 = time.monotonic()
            self._send(self._handshake.connect_packet())
        except BaseException:
            self._close(sock)
            raise

    def _close(self, sock: socket.socket | None = None) -> None:
        sock = sock or self._sock
        self._sock = self._poll = None
        self.connected.clear()
        self.subscribed.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)
        self._last_out = time.monotonic()

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            if self._sock is not None:
                self._send(data)

    def _pump(self) -> None:
        """Read, store and acknowledge until the connection ends (an exception) or we stop."""
        while not self._stop.is_set():
            if not self._batch:
                self._read(self.IDLE_POLL_S)
            elif len(self._batch) >= self.cfg.batch_max or \
                    time.monotonic() - self._batch_t0 >= self.cfg.batch_max_ms / 1000 or not self._read(0):
                self._flush()  # full, old enough, or nothing more waiting: commit now
                if self._broken:  # come back for redelivery of what was left unacknowledged
                    self._send_quietly(codec.DISCONNECT_PACKET)
                    return
            self._tick()
        while self._batch and self.connected.is_set() and not self._broken:
            self._flush()  # stopping: store and acknowledge what has arrived
        self._send_quietly(codec.DISCONNECT_PACKET)

    def _read(self, timeout: float) -> bool:
        """Wait up to `timeout` for bytes, take what is there and handle its packets; True if messages were added."""
        sock = self._sock
        assert sock is not None and self._poll is not None
        tls = isinstance(sock, ssl.SSLSocket)
        if not (tls and sock.pending() > 0) and not self._poll.poll(timeout * 1000):  # TLS: decrypted bytes poll cannot see
            return False
        if tls:  # the readable bytes may not complete an application-data record: never block on them
            sock.settimeout(0.0)
            try:
                data = sock.recv(self.READ_BYTES)
            except ssl.SSLWantReadError:
                return False
            finally:
                sock.settimeout(self._send_timeout)
        else:
            data = sock.recv(self.READ_BYTES)
        if not data:
            raise ConnectionEnded("the broker closed the connection")
        packets = self._reader.feed(data)
        if not packets:
            return False  # part of a packet proves nothing: the ping deadline stands
        before = len(self._batch)
        for first, body in packets:
            if first >> 4 == codec.PUBLISH:
                if not self.connected.is_set():
                    raise codec.ProtocolError("PUBLISH before CONNACK", PROTOCOL_ERROR)
                if not self._batch:
                    self._batch_t0 = time.monotonic()
                try:
                    msg = codec.parse_publish(first, body)
                except codec.BadPublish as bad:
                    self._batch.append(self._poison.judge(bad))
                    self._refused += 1
                    continue
                if self._poison:
                    self._poison.cleared(msg.packet_id)
                self._batch.append(msg)
            elif first & TOO_LARGE:
                self._too_large(first & 0xFF, body)
            else:
                self._control(first, body)
        self._ping_sent = None  # a whole packet from the broker shows the link works
        if len(self._batch) > self.cfg.receive_maximum and \
                sum(1 for m in self._batch if m.packet_id) > self.cfg.receive_maximum:
            raise codec.ProtocolError(f"more than our receive maximum of {self.cfg.receive_maximum} unacknowledged "
                                      "messages", RECEIVE_MAXIMUM_EXCEEDED)
        return len(self._batch) != before

    def _too_large(self, first: int, head: bytes) -> None:
        size = head.size if isinstance(head, TooLargeHead) else len(head)
        fault = codec.too_large_publish(first, head, size, handshake.MAX_PACKET_BYTES)
        if first >> 4 != codec.PUBLISH or not self.connected.is_set() or not isinstance(fault, codec.BadPublish):
            raise codec.ProtocolError(codec.too_large_message(first, size, handshake.MAX_PACKET_BYTES), fault.code)
        if not self._batch:
            self._batch_t0 = time.monotonic()
        self._batch.append(self._poison.judge(fault))
        self._refused += 1

    def _control(self, first: int, body: bytes) -> None:
        kind, flags = first >> 4, first & 0x0F
        name = codec.PACKET_NAMES[kind]
        if flags != (0x02 if kind == codec.PUBREL else 0):
            raise codec.ProtocolError(f"{name} with reserved flags 0x{flags:X}", MALFORMED)
        if not self.connected.is_set():
            if kind != codec.CONNACK:
                raise codec.ProtocolError(f"{name} before CONNACK", MALFORMED if kind == 0 else PROTOCOL_ERROR)
            try:
                granted = self._handshake.on_connack(codec.parse_connack(body))
            except BrokerMismatch:
                self._send_quietly(codec.DISCONNECT_PACKET)
                raise
            self._keepalive = granted.keepalive_s
            self._broken = False
            self.connected.set()
            self._send(self._handshake.subscribe_packet())
        elif kind == codec.SUBACK:
            try:
                self._handshake.on_suback(codec.parse_suback(body))
            except ConnectionEnded:
                self._send_quietly(codec.DISCONNECT_PACKET)
                raise
            self.subscribed.set()
            self._subscribed_at = time.monotonic()
        elif kind == codec.PINGRESP:
            pass
        elif kind == codec.DISCONNECT:
            raise self._handshake.on_disconnect(codec.parse_disconnect(body))
        elif kind == codec.PUBREL:  # we never accept QoS 2, so we hold no such message: say so (MQTT-4.3.3)
            packet_id = int.from_bytes(body[:2], "big") if len(body) >= 2 else 0
            if not packet_id:
                raise codec.ProtocolError("PUBREL without a packet identifier")
            log.warning("broker released a QoS 2 message the receiver never accepted", packet_id=packet_id)
            self._send(codec.pubcomp_packet(packet_id, PACKET_ID_NOT_FOUND))
        else:
            raise codec.ProtocolError(f"unexpected {name} from the broker", MALFORMED if kind == 0 else PROTOCOL_ERROR)

    def _tick(self) -> None:
        """Keepalive: PINGREQ after half the keepalive without sending (a slow commit must not reach the broker's
        1.5 x keepalive); give up when no whole packet arrives within a keepalive after it."""
        now = time.monotonic()
        if not self.connected.is_set():
            if now - self._connect_t0 > self.CONNECT_TIMEOUT_S:
                raise ConnectionEnded(f"no CONNACK within {self.CONNECT_TIMEOUT_S:g} s")
            return
        if self._ping_sent is not None:
            if now - self._ping_sent > self._keepalive:
                partly = " (part of a packet arrived, never the whole)" if self._reader.mid_packet else ""
                raise ConnectionEnded(f"no answer to PINGREQ within {self._keepalive} s{partly}")
        elif now - self._last_out >= self._keepalive / 2:
            self._send(codec.PINGREQ_PACKET)
            self._ping_sent = now

    def _serve_while_waiting(self, seconds: float) -> None:
        """The pause between store attempts: keep the connection alive meanwhile (PINGREQ, read what arrives;
        new messages join the next batch)."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            self._tick()
            self._read(min(left, self.IDLE_POLL_S))

    # -- batches -------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Commit the first `mqtt.batch_max` messages of the batch (one read can bring more) and acknowledge them."""
        assert self._ingestor is not None
        n = self.cfg.batch_max
        batch, self._batch = self._batch[:n], self._batch[n:]
        refused = sum(1 for m in batch if isinstance(m, Refused)) if self._refused else 0
        self._refused -= refused
        if refused and not record_refused(self._ingestor, [m for m in batch if isinstance(m, Refused)]):
            self._broken = True  # nothing acknowledged: the broker delivers it all again
            return
        good = [m for m in batch if isinstance(m, codec.Publish)] if refused else batch
        messages = [(m.topic, m.payload) for m in good]  # type: ignore[union-attr]
        done, broken = store_with_retries(self._ingestor, messages, retries=self.cfg.store_retries,
                                          retry_s=self.cfg.store_retry_s, wait=self._serve_while_waiting) \
            if messages else (0, False)
        if not refused:
            acks = [m.packet_id for m in batch[:done] if m.packet_id]
            wire = codec.puback_packets(acks)
        else:  # in the order received, a refused message in its place
            cut = len(batch) if done == len(good) else next(i for i, m in enumerate(batch) if m is good[done])
            acks = [m.packet_id for m in batch[:cut] if m.packet_id]
            wire = b"".join(codec.ack_packet(m.packet_id, m.qos, m.ack_reason if isinstance(m, Refused) else 0)
                            for m in batch[:cut] if m.packet_id)
        if acks:
            self._send(wire)
            self._acked += len(acks)
        if broken:
            self._broken = True  # the rest stays unacknowledged: the broker delivers it again
            return
        self.batches += 1
        self._summary.log(self._ingestor.counts, self.batches)


def enable_tcp_keepalive(sock: socket.socket, idle_s: int) -> None:
    """TCP keepalive probes after `idle_s` of silence, three of them a third of that apart: a dead link is
    found even when nothing else is sent (Linux names; elsewhere only SO_KEEPALIVE)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", idle_s), ("TCP_KEEPINTVL", max(1, idle_s // 3)), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
