"""The fields MQTT v5 packets are made of, read from bytes (pure), and the faults reading them can find.

codec.py builds and reads whole packets from these: variable byte integers, UTF-8 strings and
property blocks (every v5 property's wire type is known, so an unknown property is a fault and a
known one we do not need is skipped). The reason codes the receiver sends are named here, so every
module of the client uses the same names.
"""

from __future__ import annotations

# property identifiers we write or read, and the wire type of every v5 property (to skip or read one)
SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, SERVER_KEEP_ALIVE, REASON_STRING = 0x11, 0x21, 0x27, 0x13, 0x1F
TOPIC_ALIAS, MAXIMUM_QOS, WILDCARD_AVAILABLE, SHARED_AVAILABLE = 0x23, 0x24, 0x28, 0x2A
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _UTF8, 0x08: _UTF8, 0x09: _BINARY, 0x0B: _VARINT, 0x11: _U32, 0x12: _UTF8,
    0x13: _U16, 0x15: _UTF8, 0x16: _BINARY, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE, 0x1A: _UTF8, 0x1C: _UTF8,
    0x1F: _UTF8, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _U32,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}

# DISCONNECT reasons we send
MALFORMED, PROTOCOL_ERROR, RECEIVE_MAXIMUM_EXCEEDED, TOPIC_ALIAS_INVALID, PACKET_TOO_LARGE = 0x81, 0x82, 0x93, 0x94, 0x95
# PUBACK / PUBREC / PUBCOMP reasons we send to refuse a message
UNSPECIFIED_ERROR, IMPLEMENTATION_SPECIFIC, TOPIC_NAME_INVALID, PACKET_ID_NOT_FOUND, QUOTA_EXCEEDED = \
    0x80, 0x83, 0x90, 0x92, 0x97
# reasons a broker gives (CONNACK, SUBACK, DISCONNECT) when it lacks a feature the receiver needs
SHARED_NOT_SUPPORTED, WILDCARDS_NOT_SUPPORTED = 0x9E, 0xA2


class ProtocolError(ValueError):
    """A packet from the broker breaks MQTT v5 (or what this subscriber asked for).

    `code` is the DISCONNECT reason to answer with: 0x81 malformed (the default), 0x82 protocol
    error, 0x93 receive maximum exceeded, 0x94 topic alias invalid, 0x95 packet too large."""

    def __init__(self, message: str, code: int = MALFORMED) -> None:
        super().__init__(message)
        self.code = code


class BadPublish(ProtocolError):
    """A PUBLISH the receiver cannot take, whose packet identifier (0 for QoS 0) and topic could still be read.

    `topic` is printable (invalid UTF-8 and U+0000 escaped); `ack_reason` is the PUBACK (QoS 1) or
    PUBREC (QoS 2) reason code that refuses it."""

    def __init__(self, message: str, code: int, *, packet_id: int, qos: int, topic: str, ack_reason: int) -> None:
        super().__init__(message, code)
        self.packet_id, self.qos, self.topic, self.ack_reason = packet_id, qos, topic, ack_reason


def need(body: bytes, end: int, what: str) -> None:
    if end > len(body):
        raise ProtocolError(f"truncated {what}")


def varint_at(body: bytes, pos: int) -> tuple[int, int]:
    """The variable byte integer at `pos`, and the position after it."""
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


def read_properties(body: bytes, pos: int, wanted: tuple[int, ...], what: str = "properties"
                    ) -> tuple[dict[int, int | str], int]:
    """Read a property block at `pos`; the `wanted` ones by identifier (ints and strings), the rest checked and skipped.
    Returns them and the position after the block."""
    length, pos = varint_at(body, pos)
    end = pos + length
    need(body, end, what)
    found: dict[int, int | str] = {}
    while pos < end:
        ident, pos = varint_at(body, pos)
        kind = PROPERTY_TYPES.get(ident)
        if kind is None:
            raise ProtocolError(f"unknown property identifier 0x{ident:02X}")
        value: int | str | None = None
        if kind == _BYTE:
            need(body, pos + 1, "property")
            value, pos = body[pos], pos + 1
        elif kind == _U16:
            need(body, pos + 2, "property")
            value, pos = (body[pos] << 8) | body[pos + 1], pos + 2
        elif kind == _U32:
            need(body, pos + 4, "property")
            value, pos = int.from_bytes(body[pos:pos + 4], "big"), pos + 4
        elif kind == _VARINT:
            value, pos = varint_at(body, pos)
        else:
            for _ in range(2 if kind == _PAIR else 1):
                need(body, pos + 2, "property")
                size = (body[pos] << 8) | body[pos + 1]
                need(body, pos + 2 + size, "property")
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


def prop_int(props: dict[int, int | str], ident: int) -> int | None:
    value = props.get(ident)
    return value if isinstance(value, int) else None


def prop_str(props: dict[int, int | str], ident: int) -> str | None:
    value = props.get(ident)
    return value if isinstance(value, str) else None
