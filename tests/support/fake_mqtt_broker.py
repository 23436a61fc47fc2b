"""A FAKE MQTT v5 broker for the receiver's tests: it commits on cue the faults a real broker (Mosquitto,
ejabberd) never does, and nothing of a real broker but the wire format.

Per connection n (counted from 0) it reads packets and answers:
- CONNECT with `connack(n)` (any bytes: a refusal, a 3.1.1 CONNACK, a packet that is no CONNACK);
- SUBSCRIBE with `suback(n, packet_id, filters)` (default: QoS 1 granted for every filter), then
  delivers `queue`: every held message not yet acknowledged, in order, again on every connection
  (DUP set from the second time), as a broker with a persistent session does; then runs
  `after_subscribe(conn, n)` in a thread of its own (to dribble bytes, disconnect, ...);
- PINGREQ with PINGRESP when `answer_pings`;
- PUBACK / PUBREC: recorded in `acks` as (connection, packet type, packet id, reason); a message is
  no longer held once acknowledged (a PUBREC with a reason of 0x80 or more ends QoS 2 too).
With `cut_silent_after_s` it closes a connection whose client sent nothing that long (what a real
broker does at 1.5 x keepalive), noting it in `cut`. Every packet the client sent is in `seen[n]`,
the time each connection was accepted in `accepted_at[n]`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_receiver.ingest import codec
from devkit.localbroker import free_port

CONNACK_OK = b"\x20\x03\x00\x00\x00"
PINGRESP = b"\xd0\x00"


def connack(session_present: bool = False, code: int = 0, props: bytes = b"") -> bytes:
    """A v5 CONNACK with these raw properties (e.g. `prop_u16(0x13, 1)` for Server Keep Alive 1)."""
    body = bytes([int(session_present), code]) + codec.encode_varint(len(props)) + props
    return bytes([0x20]) + codec.encode_varint(len(body)) + body


def prop_byte(ident: int, value: int) -> bytes:
    return bytes([ident, value])


def prop_u16(ident: int, value: int) -> bytes:
    return bytes([ident]) + struct.pack("!H", value)


def prop_u32(ident: int, value: int) -> bytes:
    return bytes([ident]) + struct.pack("!I", value)


def raw_publish(topic: bytes, payload: bytes, packet_id: int = 0, qos: int = 1, props: bytes = b"",
                dup: bool = False) -> bytes:
    """A PUBLISH built byte by byte, so a test can make it as wrong as it needs (any topic bytes, QoS 2, aliases)."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", packet_id) if qos else b"")
    body += codec.encode_varint(len(props)) + props + payload
    return bytes([0x30 | qos << 1 | (0x08 if dup else 0)]) + codec.encode_varint(len(body)) + body


def suback_ok(_n: int, packet_id: int, filters: int) -> bytes:
    return bytes([0x90, 3 + filters]) + struct.pack("!H", packet_id) + b"\x00" + b"\x01" * filters


@dataclass
class Held:
    packet: bytes
    packet_id: int
    sent: bool = False


@dataclass
class FakeBroker:
    """A FAKE broker (see the module docstring); `close()` when done."""

    connack: Callable[[int], bytes] = lambda _n: CONNACK_OK
    queue: list[bytes] = field(default_factory=list)
    suback: Callable[[int, int, int], bytes] = suback_ok
    after_subscribe: Callable[[socket.socket, int], None] | None = None
    answer_pings: bool = True
    cut_silent_after_s: float | None = None
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    receiver: None = None  # no user: receiver_config() reads this
    seen: list[list[tuple[int, bytes]]] = field(default_factory=list)
    acks: list[tuple[int, int, int, int]] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    cut: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._held = [Held(p, _packet_id(p)) for p in self.queue]
        self._lock = threading.Lock()
        self._srv = socket.create_server((self.host, self.port))
        self._srv.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fake-broker", daemon=True)
        self._thread.start()

    def acked(self, packet_id: int) -> list[tuple[int, int, int, int]]:
        return [a for a in self.acks if a[2] == packet_id]

    def kinds(self, n: int) -> list[int]:
        """The packet types connection n sent."""
        return [first >> 4 for first, _body in self.seen[n]]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            self.seen.append([])
            self.accepted_at.append(time.monotonic())
            threading.Thread(target=self._serve, args=(conn, len(self.seen) - 1), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        conn.settimeout(0.05)
        pending = b""
        last_in = time.monotonic()
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    if self.cut_silent_after_s and time.monotonic() - last_in > self.cut_silent_after_s:
                        self.cut.append(n)
                        return
                    continue
                except OSError:
                    return
                if not data:
                    return
                last_in = time.monotonic()
                packets, used = codec.split_packets(pending + data, 1 << 30)
                pending = (pending + data)[used:]
                self.seen[n] += packets
                try:
                    for first, body in packets:
                        self._answer(conn, n, first, body)
                except OSError:
                    return

    def _answer(self, conn: socket.socket, n: int, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == codec.CONNECT:
            conn.sendall(self.connack(n))
        elif kind == codec.SUBSCRIBE:
            filters, pos = 0, 3 + body[2]  # packet id, then the property block (empty or short)
            while pos < len(body):
                pos += 2 + int.from_bytes(body[pos:pos + 2], "big") + 1
                filters += 1
            conn.sendall(self.suback(n, int.from_bytes(body[:2], "big"), filters))
            with self._lock:
                out = [h.packet if not h.sent else bytes([h.packet[0] | 0x08]) + h.packet[1:] for h in self._held]
                for h in self._held:
                    h.sent = True
            conn.sendall(b"".join(out))
            if self.after_subscribe is not None:
                threading.Thread(target=self._after, args=(conn, n), daemon=True).start()
        elif kind == codec.PINGREQ and self.answer_pings:
            conn.sendall(PINGRESP)
        elif kind in (codec.PUBACK, codec.PUBREC):
            packet_id, reason = int.from_bytes(body[:2], "big"), body[2] if len(body) > 2 else 0
            self.acks.append((n, kind, packet_id, reason))
            if kind == codec.PUBACK or reason >= 0x80:
                with self._lock:
                    self._held = [h for h in self._held if h.packet_id != packet_id]

    def _after(self, conn: socket.socket, n: int) -> None:
        assert self.after_subscribe is not None
        with contextlib.suppress(OSError):  # the receiver may close the connection under it
            self.after_subscribe(conn, n)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._srv.close()


def _packet_id(packet: bytes) -> int:
    """The packet identifier of a raw QoS 1 or 2 PUBLISH (read past its fixed header and topic)."""
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    tlen = int.from_bytes(packet[i:i + 2], "big")
    return int.from_bytes(packet[i + 2 + tlen:i + 4 + tlen], "big")
