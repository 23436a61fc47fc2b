"""The devices of scripts/bench_ingest.py: `DevicePublisher`, a lean device-side MQTT v5 publisher
(QoS 1, in-flight window) on cloud_receiver/ingest/codec.py's codec that counts PUBACKs and their reason codes."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

from bench_common import BenchError

from cloud_receiver.ingest import codec


@dataclass
class DevicePublisher:
    """A device's MQTT v5 connection (own username/password), publishing QoS 1 with `inflight` in flight.

    A lean client on cloud_receiver/ingest/codec.py's codec rather than paho: on a 2-core machine the
    load generator shares the CPU with the broker and the receiver, and paho's publish path
    (~80 µs a message) made the generator, not the receiver, the limit of the ingest benchmark.
    `publish` sends at once while the window has room, else queues; a reader thread counts the
    PUBACKs (and their reason codes) and sends what was queued.
    """

    host: str
    port: int
    device_id: str
    password: str
    inflight: int = 100
    acked: int = 0
    failures: dict[int, int] = field(default_factory=dict)  # PUBACK reason code >= 0x80 -> count
    last_ack_at: float = 0.0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._in_flight = 0
        self._next_id = 0
        self._closed = False
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(codec.connect_packet(f"bench-{self.device_id}", 60, username=self.device_id,
                                          password=self.password, clean_start=True))
        data = b""
        while not (packets := codec.split_packets(data, 1 << 20)[0]):
            chunk = sock.recv(4096)
            if not chunk:
                raise BenchError(f"device {self.device_id} could not connect: connection closed")
            data += chunk
        first, body = packets[0]
        ack = codec.parse_connack(body) if first >> 4 == codec.CONNACK else None
        if ack is None or ack.reason_code >= 0x80:
            sock.close()
            raise BenchError(f"device {self.device_id} could not connect: "
                             f"{codec.reason_name(codec.CONNACK, ack.reason_code) if ack else 'no CONNACK'}")
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read, name=f"bench-{self.device_id}", daemon=True)
        self._reader.start()

    def _packets(self, items: list[tuple[str, bytes]]) -> bytes:
        out = []
        for topic, payload in items:
            self._next_id = self._next_id % 65535 + 1
            out.append(codec.publish_packet(topic, payload, self._next_id))
        return b"".join(out)

    def publish(self, topic: str, payload: bytes | str) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        with self._cond:
            if self._closed:
                raise BenchError(f"publish by {self.device_id} after close")
            if self._in_flight < self.inflight and not self._queue:
                self._in_flight += 1
                self._sock.sendall(self._packets([(topic, body)]))
            else:
                self._queue.append((topic, body))

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            packets, used = codec.split_packets(pending + data, 1 << 20)
            pending = (pending + data)[used:]
            acks = [body[2] if len(body) > 2 else 0 for first, body in packets if first >> 4 == codec.PUBACK]
            with self._cond:
                for reason in acks:
                    self.acked += 1
                    self._in_flight -= 1
                    if reason >= 0x80:
                        self.failures[reason] = self.failures.get(reason, 0) + 1
                if acks:
                    self.last_ack_at = time.perf_counter()
                n = min(self.inflight - self._in_flight, len(self._queue))
                if n > 0 and not self._closed:
                    self._in_flight += n
                    self._sock.sendall(self._packets([self._queue.popleft() for _ in range(n)]))
                self._cond.notify_all()

    def wait_acked(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.acked >= n, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            with contextlib.suppress(OSError):
                self._sock.sendall(codec.DISCONNECT_PACKET)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(5)
        self._sock.close()
