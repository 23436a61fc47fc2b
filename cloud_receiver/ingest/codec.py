"""The part of MQTT v5 a QoS 1 subscriber needs, as pure functions over bytes (no sockets).

The receiver only subscribes: it sends CONNECT, SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT, and
receives CONNACK, SUBACK, PUBLISH (QoS 0 or 1; it subscribes with maximum QoS 1), PINGRESP and
DISCONNECT. `split_packets` cuts a received byte buffer into whole packets, many per call;
`parse_publish` reads a PUBLISH without building objects for its properties (it skips them: the
receiver announces no topic aliases and needs none of them). Anything that breaks the protocol
raises `ProtocolError` naming what is wrong; the caller drops the connection (the broker then
delivers every unacknowledged message again).

Why not paho here (paho-mqtt stays on the edge, and for the broker's admin client): on the
receiver's hot path paho spent about two thirds of the time of an alert (three `recv` calls and a
`Properties` object per PUBLISH, a callback and an `MQTTMessage`); reading 64 KiB at a time and
cutting packets out of it here costs a few microseconds per message. See docs/receiver.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # reason 0 "normal disconnection": the session stays for its expiry
PACKET_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
                8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
                14: "DISCONNECT", 15: "AUTH"}

# property identifiers we write or read, and the wire type of every v5 property (to skip or read one)
SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, SERVER_KEEP_ALIVE, REASON_STRING = 0x11, 0x21, 0x27, 0x13, 0x1F
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _UTF8, 0x08: _UTF8, 0x09: _BINARY, 0x0B: _VARINT, 0x11: _U32, 0x12: _UTF8,
    0x13: _U16, 0x15: _UTF8, 0x16: _BINARY, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE, 0x1A: _UTF8, 0x1C: _UTF8,
    0x1F: _UTF8, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _U32,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}
MAX_REMAINING_LENGTH = 268_435_455  # the largest a four-byte variable byte integer can carry


MALFORMED, PROTOCOL_ERROR, RECEIVE_MAXIMUM_EXCEEDED, PACKET_TOO_LARGE = 0x81, 0x82, 0x93, 0x95


class ProtocolError(ValueError):
    """A packet from the broker breaks MQTT v5 (or what this subscriber asked for).

    `code` is the DISCONNECT reason to answer with: 0x81 malformed (the default), 0x82 protocol
    error, 0x93 receive maximum exceeded, 0x95 packet too large."""

    def __init__(self, message: str, code: int = MALFORMED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Publish:
    topic: bytes  # raw: the caller decodes (and names invalid UTF-8 as a rejected message)
    packet_id: int  # 0 for QoS 0
    qos: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason_code: int
    server_keep_alive: int | None
    reason_string: str | None


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reason_codes: tuple[int, ...]
    reason_string: str | None


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int
    reason_string: str | None


def reason_name(packet_type: int, code: int) -> str:
    """A reason code as text, e.g. `0x86 Bad user name or password`."""
    kind = {CONNACK: PacketTypes.CONNACK, SUBACK: PacketTypes.SUBACK}.get(packet_type, PacketTypes.DISCONNECT)
    try:
        name = ReasonCode(kind, identifier=code).getName()
    except (KeyError, ValueError):
        name = "unknown reason"
    return f"0x{code:02X} {name}"


# --- encoding ------------------------------------------------------------------------------------

def encode_varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{n} does not fit a variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


def connect_packet(client_id: str, keepalive_s: int, *, username: str | None = None, password: str | None = None,
                   clean_start: bool = False, session_expiry_s: int = 0, receive_maximum: int = 65535,
                   maximum_packet_size: int | None = None) -> bytes:
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0) | \
        (0x40 if password is not None else 0)
    props = struct.pack("!BI", SESSION_EXPIRY, session_expiry_s) + struct.pack("!BH", RECEIVE_MAXIMUM, receive_maximum)
    if maximum_packet_size is not None:
        props += struct.pack("!BI", MAXIMUM_PACKET_SIZE, maximum_packet_size)
    body = _utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive_s) + encode_varint(len(props)) + props
    body += _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        raw = password.encode("utf-8")
        body += struct.pack("!H", len(raw)) + raw
    return _packet(CONNECT << 4, body)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE with options byte = maximum QoS (no-local, retain-as-published and retain handling 0)."""
    if not filters:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    body = struct.pack("!H", packet_id) + b"\x00" + b"".join(_utf8(f) + bytes([qos]) for f, qos in filters)
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def disconnect_packet(reason_code: int = 0) -> bytes:
    return DISCONNECT_PACKET if not reason_code else bytes([DISCONNECT << 4, 1, reason_code])


def publish_packet(topic: str, payload: bytes, packet_id: int = 0, qos: int = 1) -> bytes:
    """A PUBLISH without properties (the receiver never publishes: tests and scripts/bench_ingest.py's devices do)."""
    if qos not in (0, 1) or bool(packet_id) != bool(qos):
        raise ValueError("QoS 0 without a packet id, or QoS 1 with one")
    head = _utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + b"\x00"
    return bytes([PUBLISH << 4 | qos << 1]) + encode_varint(len(head) + len(payload)) + head + payload


def puback_packets(packet_ids: list[int]) -> bytes:
    """PUBACKs with reason 0 (success, so the short form), in the given order, as one write."""
    return b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid in packet_ids)


# --- decoding ------------------------------------------------------------------------------------

def split_packets(buf: bytes | bytearray, max_packet_bytes: int) -> tuple[list[tuple[int, bytes]], int]:
    """Whole packets at the start of `buf` as (first byte, body), and how many bytes they used.

    An incomplete packet at the end is left for the next call. A packet longer than
    `max_packet_bytes` (which we announced as our Maximum Packet Size) is a protocol error.
    """
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(buf)
    while pos + 2 <= n:
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= n:
                return out, pos
            digit = buf[i]
            i += 1
            length |= (digit & 0x7F) << shift
            if not digit & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("malformed remaining length (more than four bytes)")
        if i - pos + length > max_packet_bytes:
            raise ProtocolError(f"{PACKET_NAMES.get(buf[pos] >> 4, 'packet')} of {i - pos + length} bytes exceeds "
                                f"our maximum packet size of {max_packet_bytes}", PACKET_TOO_LARGE)
        end = i + length
        if end > n:
            return out, pos
        out.append((buf[pos], bytes(buf[i:end])))
        pos = end
    return out, pos


def _varint_at(body: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(body):
            raise ProtocolError("truncated variable byte integer")
        digit = body[pos]
        pos += 1
        value |= (digit & 0x7F) << shift
        if not digit & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("malformed variable byte integer (more than four bytes)")


def _need(body: bytes, end: int, what: str) -> None:
    if end > len(body):
        raise ProtocolError(f"truncated {what}")


def parse_publish(first_byte: int, body: bytes) -> Publish:
    qos = (first_byte >> 1) & 0x03
    if qos > 1:
        raise ProtocolError(f"PUBLISH with QoS {qos}; we subscribed with maximum QoS 1",
                            PROTOCOL_ERROR if qos == 2 else MALFORMED)
    _need(body, 2, "PUBLISH topic length")
    tlen = (body[0] << 8) | body[1]
    pos = 2 + tlen
    _need(body, pos, "PUBLISH topic")
    topic = body[2:pos]
    packet_id = 0
    if qos:
        _need(body, pos + 2, "PUBLISH packet identifier")
        packet_id = (body[pos] << 8) | body[pos + 1]
        if not packet_id:
            raise ProtocolError("PUBLISH with packet identifier 0", PROTOCOL_ERROR)
        pos += 2
    plen, pos = _varint_at(body, pos)
    _need(body, pos + plen, "PUBLISH properties")
    if not tlen:
        raise ProtocolError("PUBLISH without a topic name (topic aliases were not allowed)", PROTOCOL_ERROR)
    return Publish(topic, packet_id, qos, body[pos + plen:])


def _properties(body: bytes, pos: int, wanted: tuple[int, ...]) -> tuple[dict[int, int | str], int]:
    """Read a property block at `pos`; the `wanted` ones by identifier (ints and strings), the rest checked and skipped."""
    length, pos = _varint_at(body, pos)
    end = pos + length
    _need(body, end, "properties")
    found: dict[int, int | str] = {}
    while pos < end:
        ident, pos = _varint_at(body, pos)
        kind = PROPERTY_TYPES.get(ident)
        if kind is None:
            raise ProtocolError(f"unknown property identifier 0x{ident:02X}")
        value: int | str | None = None
        if kind == _BYTE:
            _need(body, pos + 1, "property")
            value, pos = body[pos], pos + 1
        elif kind == _U16:
            _need(body, pos + 2, "property")
            value, pos = (body[pos] << 8) | body[pos + 1], pos + 2
        elif kind == _U32:
            _need(body, pos + 4, "property")
            value, pos = int.from_bytes(body[pos:pos + 4], "big"), pos + 4
        elif kind == _VARINT:
            value, pos = _varint_at(body, pos)
        else:
            for _ in range(2 if kind == _PAIR else 1):
                _need(body, pos + 2, "property")
                size = (body[pos] << 8) | body[pos + 1]
                _need(body, pos + 2 + size, "property")
                if kind == _UTF8:
                    value = _text(body[pos + 2:pos + 2 + size])
                pos += 2 + size
        if pos > end:
            raise ProtocolError("property runs past its block")
        if ident in wanted and value is not None:
            found[ident] = value
    return found, end


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError("property string is not UTF-8") from err


def parse_connack(body: bytes) -> Connack:
    _need(body, 2, "CONNACK")
    if body[0] & 0xFE:
        raise ProtocolError(f"CONNACK flags 0x{body[0]:02X} have reserved bits set")
    props, _ = _properties(body, 2, (SERVER_KEEP_ALIVE, REASON_STRING)) if len(body) > 2 else ({}, 2)
    keep = props.get(SERVER_KEEP_ALIVE)
    reason = props.get(REASON_STRING)
    return Connack(bool(body[0] & 1), body[1], keep if isinstance(keep, int) else None,
                   reason if isinstance(reason, str) else None)


def parse_suback(body: bytes) -> Suback:
    _need(body, 2, "SUBACK packet identifier")
    props, pos = _properties(body, 2, (REASON_STRING,))
    if pos >= len(body):
        raise ProtocolError("SUBACK without reason codes")
    reason = props.get(REASON_STRING)
    return Suback((body[0] << 8) | body[1], tuple(body[pos:]), reason if isinstance(reason, str) else None)


def parse_disconnect(body: bytes) -> Disconnect:
    if not body:
        return Disconnect(0, None)
    props, _ = _properties(body, 1, (REASON_STRING,)) if len(body) > 1 else ({}, 1)
    reason = props.get(REASON_STRING)
    return Disconnect(body[0], reason if isinstance(reason, str) else None)
