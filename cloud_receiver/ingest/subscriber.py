"""The MQTT subscriber: one named thread reads the broker's socket and stores what arrives, in batches.

Why store in this thread rather than hop to the asyncio loop: SQLite calls block, and on the loop
they would stall every HTTP request; in a worker pool they would reorder messages and need a second
hop back for the acknowledgement. In the subscriber's own thread the order is kept and the PUBACKs
follow the commit directly. Only the announcement of stored alerts crosses to the asyncio loop,
through the alert hub's thread-safe inbox.

The MQTT v5 client is our own, and only a subscriber (`cloud_receiver/ingest/codec.py` holds the packet
codec, pure functions): CONNECT, SUBSCRIBE, then PUBLISH in and PUBACK out, PINGREQ when idle.
The socket is read 64 KiB at a time and cut into packets in one pass; the PUBACKs of a batch leave
in one write. paho-mqtt spent two thirds of an alert's time in its receive path (docs/receiver.md).

Group commit: messages are collected into a batch, stored in ONE transaction when it holds
`mqtt.batch_max` messages, when its first message is `mqtt.batch_max_ms` old, or as soon as no
further byte is waiting on the socket, whichever comes first (so a lone alert is stored at once,
and a burst shares one commit). Every message of the batch is acknowledged only after that
commit, in the order received. A rejected message is recorded and acknowledged with its batch; a
storage error leaves the whole batch unacknowledged (retried `mqtt.store_retries` times, then the
subscriber reconnects and the broker delivers it all again); an unexpected exception rolls the
batch back and its messages are stored one by one, so one bad message cannot hold back the others.
The receive maximum we announce (`mqtt.receive_maximum`) lets the broker send the next batch while
one is being stored.

Delivery: MQTT v5, clean_start False with a session expiry, QoS 1 shared subscriptions. A receiver
stopped or killed between a commit and its PUBACKs gets those messages again and recognises them
as repeats (the store is idempotent). A packet that breaks the protocol drops the connection
(with DISCONNECT 0x82); the broker then delivers every unacknowledged message again.
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
from cloud_receiver.ingest import codec
from cloud_receiver.ingest.handler import Ingestor, store_with_retries

log = structlog.get_logger(__name__)

KINDS = ("alert", "media/#", "status", "telemetry", "cmd/result")
MAX_PACKET_BYTES = 8 * 1024 * 1024  # announced as our Maximum Packet Size: the broker drops larger messages for us
SUBSCRIBE_ID = 1


def subscriptions(group: str, shared: bool = True) -> list[str]:
    """The subscriptions of a receiver: shared ones in `group`, or plain ones (single receiver)."""
    prefix = f"$share/{group}/" if shared else ""
    return [f"{prefix}bk/v1/+/{kind}" for kind in KINDS]


class ConnectionEnded(Exception):
    """The connection is over (closed, refused, timed out, or the broker sent DISCONNECT); `str` says why."""


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
        self._password = password
        self._stop = threading.Event()
        self._broken = False  # storage failed: ack nothing more until reconnected
        self._ingestor: Ingestor | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._pending = b""  # the start of a packet not yet wholly received
        self._batch: list[codec.Publish] = []
        self._batch_t0 = 0.0
        self._keepalive = cfg.keepalive_s
        self._connect_t0 = self._last_out = 0.0
        self._ping_sent: float | None = None
        self._got_subscribed = False  # this connection reached SUBACK (then the reconnect back-off starts again)
        self._had_session = False  # an earlier connection of this subscriber was accepted
        self._poll: select.poll | None = None
        self._send_timeout = float(cfg.keepalive_s)
        self._summary = _Summary(summary_interval_s)

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
        delay = self.cfg.reconnect_min_s  # the next wait before reconnecting; doubles up to reconnect_max_s
        wait = 0.0
        try:
            while not self._stop.is_set():
                if wait and self._stop.wait(wait):
                    break
                try:
                    self._connect()
                except (OSError, ValueError) as err:  # ValueError: e.g. a host name IDNA cannot encode
                    wait, delay = delay, min(delay * 2, self.cfg.reconnect_max_s)
                    log.warning("connect failed", host=self.cfg.host, port=self.cfg.port, error=str(err) or repr(err),
                                retry_in_s=wait)
                    continue
                try:
                    self._pump()
                except (OSError, ConnectionEnded, codec.ProtocolError) as err:
                    if isinstance(err, codec.ProtocolError):
                        log.error("broker broke the protocol; reconnecting", error=str(err),
                                  disconnect_reason=f"0x{err.code:02X}")
                        self._send_quietly(codec.disconnect_packet(err.code))
                    elif not self._stop.is_set():
                        log.warning("receiver disconnected", reason=str(err) or type(err).__name__)
                except Exception:  # noqa: BLE001 - a bug or odd input must not end ingest: log, reconnect
                    log.exception("subscriber connection failed unexpectedly; reconnecting")
                finally:
                    self._close()
                if self._got_subscribed:  # the connection worked: start the back-off again
                    delay = self.cfg.reconnect_min_s
                # what is still in the batch was never acknowledged: the broker delivers it again
                self._batch = []
                wait, delay = delay, min(delay * 2, self.cfg.reconnect_max_s)
        finally:
            self._summary.log(self._ingestor.counts, self.batches, final=True)
            self._ingestor.storage.close()
            log.info("subscriber stopped", thread=self.thread_name, counts=self.counts)

    # -- the connection ----------------------------------------------------------------------------
    def _connect(self) -> None:
        c = self.cfg
        sock = socket.create_connection((c.host, c.port), timeout=self.CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if c.tls:
                ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
                sock = ctx.wrap_socket(sock, server_hostname=c.host)
            self._send_timeout = max(self.CONNECT_TIMEOUT_S, c.keepalive_s)
            sock.settimeout(self._send_timeout)  # bounds a send to a stalled broker
            self._poll = select.poll()  # not select(): a busy process may hand us a descriptor above 1023
            self._poll.register(sock, select.POLLIN)
            self._sock, self._pending, self._keepalive, self._ping_sent = sock, b"", c.keepalive_s, None
            self._got_subscribed = False
            self._connect_t0 = time.monotonic()
            self._send(codec.connect_packet(c.client_id, c.keepalive_s, username=c.username,
                                            password=self._password if c.username else None, clean_start=False,
                                            session_expiry_s=c.session_expiry_s, receive_maximum=c.receive_maximum,
                                            maximum_packet_size=MAX_PACKET_BYTES))
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

    def send_acks(self, packet_ids: list[int]) -> None:
        """PUBACK these messages (in this order) in one write. Called only after their commit."""
        if packet_ids:
            self._send(codec.puback_packets(packet_ids))

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
        if self._batch and self.connected.is_set():
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
        if self._pending:
            data = self._pending + data
        packets, used = codec.split_packets(data, MAX_PACKET_BYTES)
        self._pending = data[used:]
        before = len(self._batch)
        for first, body in packets:
            if first >> 4 == codec.PUBLISH:
                if not self.connected.is_set():
                    raise codec.ProtocolError("PUBLISH before CONNACK")
                if not self._batch:
                    self._batch_t0 = time.monotonic()
                self._batch.append(codec.parse_publish(first, body))
            else:
                self._control(first, body)
        self._ping_sent = None  # anything from the broker shows it is alive
        if len(self._batch) > self.cfg.receive_maximum and \
                sum(1 for m in self._batch if m.packet_id) > self.cfg.receive_maximum:
            raise codec.ProtocolError(f"more than our receive maximum of {self.cfg.receive_maximum} unacknowledged "
                                      "messages", codec.RECEIVE_MAXIMUM_EXCEEDED)
        return len(self._batch) != before

    def _control(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == codec.CONNACK and not self.connected.is_set():
            ack = codec.parse_connack(body)
            if ack.reason_code >= 0x80:
                log.error("broker refused the receiver", reason=codec.reason_name(kind, ack.reason_code),
                          detail=ack.reason_string, host=self.cfg.host, port=self.cfg.port)
                raise ConnectionEnded(f"CONNACK {codec.reason_name(kind, ack.reason_code)}")
            if ack.server_keep_alive is not None:
                self._keepalive = ack.server_keep_alive
            self._broken = False
            self.connected.set()
            log.info("receiver connected", host=self.cfg.host, port=self.cfg.port, session_present=ack.session_present)
            if self._had_session and not ack.session_present:
                log.warning("the broker kept no session for the receiver: what was queued for it while away is gone "
                            "(session expired, or the broker restarted without persistence)",
                            client_id=self.cfg.client_id, session_expiry_s=self.cfg.session_expiry_s)
            self._had_session = True
            self._send(codec.subscribe_packet(SUBSCRIBE_ID, [(t, 1) for t in subscriptions(self.cfg.group, self.cfg.shared)]))
        elif kind == codec.SUBACK and self.connected.is_set():
            ack = codec.parse_suback(body)
            filters = subscriptions(self.cfg.group, self.cfg.shared)
            if ack.packet_id != SUBSCRIBE_ID or len(ack.reason_codes) != len(filters):
                raise codec.ProtocolError(f"SUBACK for packet {ack.packet_id} with {len(ack.reason_codes)} reason codes; we "
                                          f"sent SUBSCRIBE {SUBSCRIBE_ID} with {len(filters)} filters", codec.PROTOCOL_ERROR)
            # granted QoS 0 is a refusal too: QoS 0 messages are never acknowledged, so never delivered again
            refused = {f: codec.reason_name(kind, r) for f, r in zip(filters, ack.reason_codes, strict=True) if r != 1}
            if refused:
                log.error("broker refused the receiver's subscriptions (QoS 1 needed); reconnecting", refused=refused,
                          detail=ack.reason_string)
                self._send_quietly(codec.DISCONNECT_PACKET)
                raise ConnectionEnded("subscriptions refused")
            self.subscribed.set()
            self._got_subscribed = True
        elif kind == codec.PINGRESP:
            pass
        elif kind == codec.DISCONNECT:
            end = codec.parse_disconnect(body)
            detail = f" ({end.reason_string})" if end.reason_string else ""
            raise ConnectionEnded(f"the broker sent DISCONNECT {codec.reason_name(kind, end.reason_code)}{detail}")
        else:
            raise codec.ProtocolError(f"unexpected {codec.PACKET_NAMES.get(kind, kind)} from the broker")

    def _tick(self) -> None:
        """Keepalive: PINGREQ after half the keepalive without sending (a slow commit must not reach the broker's
        1.5 x keepalive); give up when the broker stays silent for a keepalive after it."""
        now = time.monotonic()
        if not self.connected.is_set():
            if now - self._connect_t0 > self.CONNECT_TIMEOUT_S:
                raise ConnectionEnded(f"no CONNACK within {self.CONNECT_TIMEOUT_S:g} s")
            return
        if not self._keepalive:
            return
        if self._ping_sent is not None:
            if now - self._ping_sent > self._keepalive:
                raise ConnectionEnded(f"no answer to PINGREQ within {self._keepalive} s")
        elif now - self._last_out >= self._keepalive / 2:
            self._send(codec.PINGREQ_PACKET)
            self._ping_sent = now

    # -- batches -------------------------------------------------------------------------------
    def _flush(self) -> None:
        assert self._ingestor is not None
        batch, self._batch = self._batch, []
        messages = [(_topic_text(m.topic), m.payload) for m in batch]
        done, broken = store_with_retries(self._ingestor, messages, retries=self.cfg.store_retries,
                                          retry_s=self.cfg.store_retry_s, wait=self._stop.wait)
        self.send_acks([m.packet_id for m in batch[:done] if m.packet_id])
        if broken:
            self._broken = True  # the rest stays unacknowledged: the broker delivers it again
            return
        self.batches += 1
        self._summary.log(self._ingestor.counts, self.batches)


def _topic_text(raw: bytes) -> str:
    """The topic as text; invalid UTF-8 (which the broker should refuse) is replaced, then fails validation."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


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
