"""The part of MQTT v5 a QoS 1 subscriber needs, as pure functions over bytes (no sockets).

The receiver only subscribes: it sends CONNECT, SUBSCRIBE, PUBACK (PUBREC and PUBCOMP only to
refuse), PINGREQ and DISCONNECT, and receives CONNACK, SUBACK, PUBLISH, PINGRESP and DISCONNECT.
`split_packets` cuts a received byte buffer into whole packets, many per call (`framing.PacketReader`
keeps the rest between reads and skips a packet above our maximum size); `parse_publish` reads a
PUBLISH and checks what a subscriber must (QoS, topic name, topic alias) without building objects
for its other properties.

Two kinds of fault, each naming what is wrong and carrying the DISCONNECT reason the standard
gives for it (`code`): `ProtocolError` when the byte stream or the session cannot be trusted any
more, and its subclass `BadPublish` for a PUBLISH whose packet identifier could be read, so that
this one message can be named and refused (`ack_reason` is the PUBACK / PUBREC reason to refuse it
with); both live in `mqtt_fields` with the property reader. subscriber.py decides which answer a
fault gets.

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

from cloud_receiver.ingest.mqtt_fields import (
    IMPLEMENTATION_SPECIFIC,
    MALFORMED,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    PACKET_TOO_LARGE,
    PROTOCOL_ERROR,
    QUOTA_EXCEEDED,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY,
    SHARED_AVAILABLE,
    TOPIC_ALIAS,
    TOPIC_ALIAS_INVALID,
    TOPIC_NAME_INVALID,
    UNSPECIFIED_ERROR,
    WILDCARD_AVAILABLE,
    need,
    prop_int,
    prop_str,
    read_properties,
)
from cloud_receiver.ingest.mqtt_fields import BadPublish as BadPublish  # re-exported: codec.BadPublish
from cloud_receiver.ingest.mqtt_fields import ProtocolError as ProtocolError  # re-exported: codec.ProtocolError

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 5, 6, 7, 8, 9
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # reason 0 "normal disconnection": the session stays for its expiry
PACKET_NAMES = {0: "reserved packet type 0", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
                6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
                12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

MAX_REMAINING_LENGTH = 268_435_455  # the largest a four-byte variable byte integer can carry


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str  # checked: UTF-8, no U+0000, no wildcard
    packet_id: int  # 0 for QoS 0
    qos: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason_code: int
    server_keep_alive: int | None = None
    reason_string: str | None = None
    session_expiry_s: int | None = None  # what the broker grants; absent: what the client asked for
    maximum_qos: int = 2
    shared_available: bool = True
    wildcard_available: bool = True


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reason_codes: tuple[int, ...]
    reason_string: str | None


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int
    reason_string: str | None


_REASON_KINDS = {CONNACK: PacketTypes.CONNACK, SUBACK: PacketTypes.SUBACK, PUBACK: PacketTypes.PUBACK,
                 PUBREC: PacketTypes.PUBREC, PUBCOMP: PacketTypes.PUBCOMP}


def reason_name(packet_type: int, code: int) -> str:
    """A reason code as text, e.g. `0x86 Bad user name or password`."""
    try:
        name = ReasonCode(_REASON_KINDS.get(packet_type, PacketTypes.DISCONNECT), identifier=code).getName()
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


def ack_packet(packet_id: int, qos: int, reason: int = 0) -> bytes:
    """The answer to one QoS 1 (PUBACK) or QoS 2 (PUBREC) message; a reason of 0x80 or more refuses it,
    and for QoS 2 also ends the exchange (no PUBREL follows)."""
    kind = PUBACK if qos == 1 else PUBREC
    pid = packet_id.to_bytes(2, "big")
    return bytes([kind << 4, 2]) + pid if not reason else bytes([kind << 4, 3]) + pid + bytes([reason])


def pubcomp_packet(packet_id: int, reason: int) -> bytes:
    return bytes([PUBCOMP << 4, 3]) + packet_id.to_bytes(2, "big") + bytes([reason])


# --- decoding ------------------------------------------------------------------------------------

def scan_packets(buf: bytes | bytearray, pos: int, max_packet_bytes: int
                 ) -> tuple[list[tuple[int, bytes]], int, tuple[int, int, int] | None]:
    """Whole packets from `pos` in `buf` as (first byte, body), where they end, and what stopped the scan early.

    The scan stops at an incomplete packet (left for the next call) or at one whose size exceeds
    `max_packet_bytes`: then the third value is (first byte, offset of its body, whole size), read
    from its fixed header alone; its body need not have arrived.
    """
    out: list[tuple[int, bytes]] = []
    n = len(buf)
    while pos + 2 <= n:
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= n:
                return out, pos, None
            digit = buf[i]
            i += 1
            length |= (digit & 0x7F) << shift
            if not digit & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("malformed remaining length (more than four bytes)")
        if i - pos + length > max_packet_bytes:
            return out, pos, (buf[pos], i, i - pos + length)
        end = i + length
        if end > n:
            return out, pos, None
        out.append((buf[pos], bytes(buf[i:end])))
        pos = end
    return out, pos, None


def too_large_message(first_byte: int, size: int, max_packet_bytes: int) -> str:
    return f"{PACKET_NAMES[first_byte >> 4]} of {size} bytes exceeds our maximum packet size of {max_packet_bytes}"


def split_packets(buf: bytes | bytearray, max_packet_bytes: int) -> tuple[list[tuple[int, bytes]], int]:
    """Whole packets at the start of `buf` as (first byte, body), and how many bytes they used.

    An incomplete packet at the end is left for the next call. A packet longer than
    `max_packet_bytes` (which we announced as our Maximum Packet Size) is a protocol error (0x95).
    """
    out, used, big = scan_packets(buf, 0, max_packet_bytes)
    if big is not None:
        raise ProtocolError(too_large_message(big[0], big[2], max_packet_bytes), PACKET_TOO_LARGE)
    return out, used


def printable_topic(raw: bytes) -> str:
    """A topic name as text for logs and `rejects`, whatever its bytes: bad UTF-8 and U+0000 escaped."""
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _topic_name(raw: bytes) -> str:
    """A PUBLISH's topic name, or ProtocolError (malformed) when the standard forbids it (MQTT-1.5.4, 3.3.2)."""
    try:
        topic = raw.decode("utf-8")  # strict: also refuses encoded surrogates
    except UnicodeDecodeError as err:
        raise ProtocolError(f"topic name is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    if "\x00" in topic:
        raise ProtocolError("topic name contains U+0000")
    if "+" in topic or "#" in topic:
        raise ProtocolError("topic name contains a wildcard (+ or #)")
    return topic


def parse_publish(first_byte: int, body: bytes) -> Publish:
    qos = (first_byte >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with both QoS bits set")
    need(body, 2, "PUBLISH topic length")
    tlen = (body[0] << 8) | body[1]
    pos = 2 + tlen
    need(body, pos, "PUBLISH topic")
    raw = body[2:pos]
    packet_id = 0
    if qos:
        need(body, pos + 2, "PUBLISH packet identifier")
        packet_id = (body[pos] << 8) | body[pos + 1]
        if not packet_id:
            raise ProtocolError("PUBLISH with packet identifier 0", PROTOCOL_ERROR)
        pos += 2

    def bad(message: str, code: int, ack_reason: int) -> BadPublish:
        return BadPublish(message, code, packet_id=packet_id, qos=qos, topic=printable_topic(raw),
                          ack_reason=ack_reason)

    if qos == 2:
        raise bad("PUBLISH with QoS 2; the receiver subscribed with maximum QoS 1", PROTOCOL_ERROR,
                  IMPLEMENTATION_SPECIFIC)
    try:
        topic = _topic_name(raw)
    except ProtocolError as err:
        raise bad(str(err), MALFORMED, TOPIC_NAME_INVALID) from None
    alias = None
    if pos < len(body) and body[pos] == 0:  # no properties: the common case
        pos += 1
    else:
        try:
            props, pos = read_properties(body, pos, (TOPIC_ALIAS,), "PUBLISH properties")
        except ProtocolError as err:
            raise bad(str(err), err.code, UNSPECIFIED_ERROR) from None
        alias = props.get(TOPIC_ALIAS)
    if alias is not None:
        raise bad(f"PUBLISH with topic alias {alias}; the receiver allows none (Topic Alias Maximum 0)",
                  TOPIC_ALIAS_INVALID, TOPIC_NAME_INVALID)
    if not tlen:
        raise bad("PUBLISH without a topic name (and no topic alias)", PROTOCOL_ERROR, TOPIC_NAME_INVALID)
    return Publish(topic, packet_id, qos, body[pos:])


def too_large_publish(first_byte: int, head: bytes, size: int, max_packet_bytes: int) -> ProtocolError:
    """The fault of a PUBLISH of `size` bytes, above our maximum, of which `head` are the first bytes of the body:
    a BadPublish (0x95, refused with 0x97 quota exceeded) when its packet identifier is in `head`, else a
    plain ProtocolError."""
    message = too_large_message(first_byte, size, max_packet_bytes)
    qos = (first_byte >> 1) & 0x03
    if qos in (1, 2) and len(head) >= 2:
        end = 2 + ((head[0] << 8) | head[1])
        if len(head) >= end + 2 and (packet_id := (head[end] << 8) | head[end + 1]):
            return BadPublish(message, PACKET_TOO_LARGE, packet_id=packet_id, qos=qos,
                              topic=printable_topic(head[2:end]), ack_reason=QUOTA_EXCEEDED)
    return ProtocolError(message, PACKET_TOO_LARGE)


def parse_connack(body: bytes) -> Connack:
    """A CONNACK, MQTT v5 (a body of two bytes without properties, as MQTT 3.1.1 answers, is read too: its
    reason code then tells a refusal the caller must see)."""
    need(body, 2, "CONNACK")
    if body[0] & 0xFE:
        raise ProtocolError(f"CONNACK flags 0x{body[0]:02X} have reserved bits set")
    props, _ = read_properties(body, 2, (SERVER_KEEP_ALIVE, REASON_STRING, SESSION_EXPIRY, MAXIMUM_QOS, SHARED_AVAILABLE,
                                     WILDCARD_AVAILABLE)) if len(body) > 2 else ({}, 2)
    for ident, name in ((SHARED_AVAILABLE, "Shared Subscription Available"), (MAXIMUM_QOS, "Maximum QoS"),
                        (WILDCARD_AVAILABLE, "Wildcard Subscription Available")):
        if prop_int(props, ident) not in (None, 0, 1):
            raise ProtocolError(f"CONNACK {name} {props[ident]} (only 0 or 1 allowed)", PROTOCOL_ERROR)
    maximum_qos = prop_int(props, MAXIMUM_QOS)
    return Connack(bool(body[0] & 1), body[1], prop_int(props, SERVER_KEEP_ALIVE), prop_str(props, REASON_STRING),
                   prop_int(props, SESSION_EXPIRY), 2 if maximum_qos is None else maximum_qos,
                   prop_int(props, SHARED_AVAILABLE) != 0, prop_int(props, WILDCARD_AVAILABLE) != 0)


def parse_suback(body: bytes) -> Suback:
    need(body, 2, "SUBACK packet identifier")
    props, pos = read_properties(body, 2, (REASON_STRING,))
    if pos >= len(body):
        raise ProtocolError("SUBACK without reason codes")
    return Suback((body[0] << 8) | body[1], tuple(body[pos:]), prop_str(props, REASON_STRING))


def parse_disconnect(body: bytes) -> Disconnect:
    if not body:
        return Disconnect(0, None)
    props, _ = read_properties(body, 1, (REASON_STRING,)) if len(body) > 1 else ({}, 1)
    return Disconnect(body[0], prop_str(props, REASON_STRING))
