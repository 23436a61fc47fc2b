"""The receiver's MQTT v5 client, in-process: the packet codec, the stream reader, the handshake's judgement
of the broker's answers, and the poison-message guard (tests/test_receiver_mqtt5.py drives the client
against real and fake brokers)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fake_mqtt_broker import connack, prop_byte, prop_u16, prop_u32, raw_publish

from cloud_receiver.config import MqttConfig
from cloud_receiver.ingest import codec as mqtt5
from cloud_receiver.ingest.framing import HEAD_BYTES, TOO_LARGE, PacketReader, TooLargeHead
from cloud_receiver.ingest.handshake import BrokerMismatch, ConnectionEnded, Handshake
from cloud_receiver.ingest.poison import PoisonGuard, Refused

pytestmark = pytest.mark.unit

TOPIC = "bk/v1/64050200001180000101/alert"


# --- the codec ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_000])
def test_publish_round_trip_across_remaining_length_sizes(size):
    """PUBLISH encodes and decodes with remaining lengths of one to three bytes."""
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = mqtt5.publish_packet(TOPIC, payload, 513) + mqtt5.publish_packet("t/零", b"x", qos=0)
    packets, used = mqtt5.split_packets(wire, 1 << 20)
    assert used == len(wire) and len(packets) == 2
    first = mqtt5.parse_publish(*packets[0])
    assert (first.topic, first.packet_id, first.qos, first.payload) == (TOPIC, 513, 1, payload)
    second = mqtt5.parse_publish(*packets[1])
    assert (second.topic, second.packet_id, second.qos, second.payload) == ("t/零", 0, 0, b"x")


def test_split_packets_keeps_partial_packets_for_the_next_read():
    """Fed one byte at a time (the way a socket may deliver them), the same packets come out, in order."""
    wire = b"".join(mqtt5.publish_packet(f"a/{n}", bytes([n]) * (n * 50), n + 1) for n in range(6)) + b"\xd0\x00"
    reader = PacketReader(1 << 20)
    got = [p for i in range(len(wire)) for p in reader.feed(wire[i:i + 1])]
    assert not reader.mid_packet
    assert got == mqtt5.split_packets(wire, 1 << 20)[0] and len(got) == 7
    assert [mqtt5.parse_publish(*p).packet_id for p in got[:6]] == [1, 2, 3, 4, 5, 6]
    assert got[6] == (0xD0, b"")  # PINGRESP


def test_properties_of_a_publish_are_skipped():
    """Payload format, expiry, user property and subscription id are read past, not kept."""
    props = b"\x01\x01" + b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01k\x00\x02vv" + b"\x0b\x81\x01"
    body = b"\x00\x03a/b" + b"\x00\x07" + mqtt5.encode_varint(len(props)) + props + b"payload"
    msg = mqtt5.parse_publish(0x32, body)
    assert (msg.topic, msg.packet_id, msg.payload) == ("a/b", 7, b"payload")


@pytest.mark.parametrize(("first", "body", "problem"), [
    (0x36, b"\x00\x01a\x00\x01\x00", "both QoS bits"),
    (0x32, b"\x00\x01a\x00\x00\x00", "packet identifier 0"),
    (0x32, b"\x00\x09a", "truncated PUBLISH topic"),
    (0x32, b"\x00\x01a", "truncated PUBLISH packet identifier"),
])
def test_a_publish_without_a_usable_packet_identifier_is_a_protocol_error(first, body, problem):
    """Before its packet identifier is known a PUBLISH cannot be refused alone: a plain ProtocolError."""
    with pytest.raises(mqtt5.ProtocolError, match=problem) as err:
        mqtt5.parse_publish(first, body)
    assert not isinstance(err.value, mqtt5.BadPublish)


@pytest.mark.parametrize(("packet", "problem", "code", "ack", "topic"), [
    (raw_publish(b"a", b"", 9, qos=2), "QoS 2", 0x82, 0x83, "a"),
    (raw_publish(b"bk/v1/\xff\xfe/alert", b"x", 9), "not valid UTF-8", 0x81, 0x90, "bk/v1/\\xff\\xfe/alert"),
    (raw_publish(b"bk/v1/a\x00b/alert", b"x", 9), r"U\+0000", 0x81, 0x90, "bk/v1/a\\x00b/alert"),
    (raw_publish(b"bk/v1/+/alert", b"x", 9), "wildcard", 0x81, 0x90, "bk/v1/+/alert"),
    (raw_publish(b"bk/v1/#", b"x", 9), "wildcard", 0x81, 0x90, "bk/v1/#"),
    (raw_publish(TOPIC.encode(), b"x", 9, props=prop_u16(0x23, 1)), "topic alias 1", 0x94, 0x90, TOPIC),
    (raw_publish(b"", b"x", 9, props=prop_u16(0x23, 3)), "topic alias 3", 0x94, 0x90, ""),
    (raw_publish(b"", b"x", 9), "without a topic name", 0x82, 0x90, ""),
    (raw_publish(b"a", b"x", 9, props=b"\x7f\x00"), "unknown property identifier 0x7F", 0x81, 0x80, "a"),
    (b"\x32\x06\x00\x01a\x00\x09\x05", "truncated PUBLISH properties", 0x81, 0x80, "a"),
], ids=["qos2", "bad-utf8", "nul", "plus", "hash", "alias", "alias-no-topic", "no-topic", "unknown-prop", "truncated"])
def test_a_bad_publish_names_its_problem_its_disconnect_reason_and_how_to_refuse_it(packet, problem, code, ack, topic):
    """A topic with bad UTF-8, U+0000 or a wildcard is malformed (0x81), an alias 0x94, QoS 2 0x82: each named."""
    (first, body), = mqtt5.split_packets(packet, 1 << 20)[0]
    with pytest.raises(mqtt5.BadPublish, match=problem) as err:
        mqtt5.parse_publish(first, body)
    bad = err.value
    assert (bad.code, bad.ack_reason, bad.packet_id, bad.topic) == (code, ack, 9, topic)


def test_a_packet_above_our_maximum_is_skipped_not_buffered():
    """Its head comes out once (flagged), its body is dropped as it arrives, and what follows is read normally."""
    big = raw_publish(TOPIC.encode(), bytes(200_000), 77)
    after = mqtt5.publish_packet("a/b", b"next", 78)
    reader = PacketReader(100_000)
    wire = big + after
    got, largest = [], 0
    for i in range(0, len(wire), 4096):
        got += reader.feed(wire[i:i + 4096])
        largest = max(largest, len(reader._pending))
    assert largest <= HEAD_BYTES + 5, "never more than a head is held"
    assert [first for first, _ in got] == [0x32 | TOO_LARGE, 0x32]
    head = got[0][1]
    assert isinstance(head, TooLargeHead) and head.size == len(big)
    fault = mqtt5.too_large_publish(0x32, head, head.size, 100_000)
    assert isinstance(fault, mqtt5.BadPublish)
    assert (fault.packet_id, fault.topic, fault.code, fault.ack_reason) == (77, TOPIC, 0x95, 0x97)
    assert str(fault) == f"PUBLISH of {len(big)} bytes exceeds our maximum packet size of 100000"
    assert mqtt5.parse_publish(*got[1]).payload == b"next"
    qos0 = mqtt5.too_large_publish(0x30, head, head.size, 100_000)
    assert type(qos0) is mqtt5.ProtocolError and qos0.code == 0x95  # no packet identifier to refuse it with


def test_oversized_and_malformed_lengths_are_protocol_errors():
    """split_packets (no skipping) raises 0x95 for a packet above the maximum; a five-byte length is malformed."""
    big = mqtt5.publish_packet("a", bytes(2000), 1)
    with pytest.raises(mqtt5.ProtocolError, match="PUBLISH of 2009 bytes exceeds our maximum packet size of 1000") as err:
        mqtt5.split_packets(big, 1000)
    assert err.value.code == mqtt5.PACKET_TOO_LARGE
    with pytest.raises(mqtt5.ProtocolError, match="more than four bytes"):
        mqtt5.split_packets(b"\x30\xff\xff\xff\xff\x01", 1 << 30)


def test_connect_subscribe_and_acks_encode_as_specified():
    """CONNECT flags and properties, SUBSCRIBE options, PUBACK / PUBREC / PUBCOMP / DISCONNECT bytes."""
    wire = mqtt5.connect_packet("rx-1", 30, username="u", password="p", session_expiry_s=3600,
                                receive_maximum=400, maximum_packet_size=1 << 20)
    (first, body), = mqtt5.split_packets(wire, 1 << 20)[0]
    assert first == 0x10 and body[:7] == b"\x00\x04MQTT\x05" and body[7] == 0xC0  # username + password, no clean start
    assert body[8:10] == struct.pack("!H", 30)
    props = b"\x11\x00\x00\x0e\x10" + b"\x21\x01\x90" + b"\x27\x00\x10\x00\x00"
    assert body[10:11 + len(props)] == bytes([len(props)]) + props
    assert body[11 + len(props):] == b"\x00\x04rx-1" + b"\x00\x01u" + b"\x00\x01p"
    assert mqtt5.connect_packet("rx-1", 30, clean_start=True)[9] == 0x02
    sub = mqtt5.subscribe_packet(1, [("$share/g/a/+", 1), ("b/#", 1)])
    assert sub == b"\x82\x18\x00\x01\x00" + b"\x00\x0c$share/g/a/+\x01" + b"\x00\x03b/#\x01"
    assert mqtt5.puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert mqtt5.ack_packet(258, 1) == b"\x40\x02\x01\x02"
    assert mqtt5.ack_packet(258, 1, 0x97) == b"\x40\x03\x01\x02\x97"
    assert mqtt5.ack_packet(5, 2, 0x83) == b"\x50\x03\x00\x05\x83"
    assert mqtt5.pubcomp_packet(9, 0x92) == b"\x70\x03\x00\x09\x92"
    assert mqtt5.disconnect_packet(0x82) == b"\xe0\x01\x82" and mqtt5.disconnect_packet() == b"\xe0\x00"


def test_connack_suback_disconnect_read_reasons_and_properties():
    """CONNACK properties the receiver acts on are read; unknown properties and reserved bits are faults."""
    ack = mqtt5.parse_connack(b"\x01\x00\x0b\x13\x00\x05\x1f\x00\x05hello")
    assert (ack.session_present, ack.reason_code, ack.server_keep_alive, ack.reason_string) == (True, 0, 5, "hello")
    assert (ack.session_expiry_s, ack.shared_available, ack.wildcard_available, ack.maximum_qos) == (None, True, True, 2)
    ej = mqtt5.parse_connack(connack(props=prop_u16(0x22, 100) + prop_byte(0x2A, 0) + prop_u32(0x11, 300)
                                     + prop_u16(0x13, 30) + prop_byte(0x28, 0) + prop_byte(0x24, 0))[2:])
    assert (ej.session_expiry_s, ej.shared_available, ej.wildcard_available, ej.maximum_qos) == (300, False, False, 0)
    assert mqtt5.parse_connack(b"\x00\x86\x00").reason_code == 0x86
    assert mqtt5.parse_connack(b"\x00\x01").reason_code == 1  # MQTT 3.1.1's form: judged by the handshake
    assert mqtt5.reason_name(mqtt5.CONNACK, 0x86) == "0x86 Bad user name or password"
    assert mqtt5.reason_name(mqtt5.PUBACK, 0x97) == "0x97 Quota exceeded"
    sub = mqtt5.parse_suback(b"\x00\x01\x00\x01\x01\x87")
    assert (sub.packet_id, sub.reason_codes) == (1, (1, 1, 0x87))
    assert mqtt5.parse_disconnect(b"") == mqtt5.Disconnect(0, None)
    assert mqtt5.parse_disconnect(b"\x8e\x00").reason_code == 0x8E
    with pytest.raises(mqtt5.ProtocolError, match="unknown property identifier 0x7F"):
        mqtt5.parse_connack(b"\x00\x00\x02\x7f\x00")
    with pytest.raises(mqtt5.ProtocolError, match="reserved bits"):
        mqtt5.parse_connack(b"\x02\x00")
    with pytest.raises(mqtt5.ProtocolError, match="Shared Subscription Available 2"):
        mqtt5.parse_connack(connack(props=prop_byte(0x2A, 2))[2:])


PARSERS = {mqtt5.CONNACK: mqtt5.parse_connack, mqtt5.SUBACK: mqtt5.parse_suback,
           mqtt5.DISCONNECT: mqtt5.parse_disconnect}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_arbitrary_bytes_only_ever_raise_protocol_error(data, step):
    """Whatever arrives, in whatever pieces, the reader and parsers raise ProtocolError or nothing."""
    reader = PacketReader(200)
    try:
        packets = [p for i in range(0, len(data), step) for p in reader.feed(data[i:i + step])]
    except mqtt5.ProtocolError:
        return
    for first, body in packets:
        try:
            if first & TOO_LARGE:
                mqtt5.too_large_publish(first & 0xFF, body, 999, 200)
            elif first >> 4 == mqtt5.PUBLISH:
                mqtt5.parse_publish(first, body)
            elif first >> 4 in PARSERS:
                PARSERS[first >> 4](body)
        except mqtt5.ProtocolError:
            pass


TOPIC_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(TOPIC_TEXT, st.binary(max_size=600), st.integers(1, 65535), st.integers(1, 40))
def test_publish_round_trip_in_any_cut(topic, payload, packet_id, cut):
    """Any valid topic and payload survive being cut in two reads."""
    wire = mqtt5.publish_packet(topic, payload, packet_id)
    reader = PacketReader(1 << 20)
    packets = reader.feed(wire[:cut]) + reader.feed(wire[cut:])
    msg = mqtt5.parse_publish(*packets[0])
    assert (msg.topic, msg.packet_id, msg.payload) == (topic, packet_id, payload)


# --- the handshake -------------------------------------------------------------------------------------

def _handshake(**mqtt) -> Handshake:
    return Handshake(MqttConfig(**mqtt), None)


def _ack(session_present: bool = False, code: int = 0, props: bytes = b"") -> mqtt5.Connack:
    return mqtt5.parse_connack(connack(session_present, code, props)[2:])


@pytest.mark.parametrize("code", [0x01, 0x05, 0x10, 0x7F])
def test_a_connack_code_below_0x80_other_than_0_is_a_protocol_error(code):
    """MQTT 3.1.1's refusal 1 (no MQTT v5 here) and every other non-zero code below 0x80 is no success."""
    with pytest.raises(mqtt5.ProtocolError, match=f"CONNACK reason 0x{code:02X} is no MQTT v5 success") as err:
        _handshake().on_connack(mqtt5.parse_connack(bytes([0, code])))
    assert err.value.code == 0x82


def test_session_present_after_a_clean_start_is_a_protocol_error_and_clean_start_ends_once_accepted():
    """Clean Start (mqtt.clean_start) holds until the broker first accepts; Session Present 1 in answer is refused."""
    hs = _handshake(clean_start=True)
    assert hs.connect_packet()[9] & 0x02 and hs.clean_start
    with pytest.raises(mqtt5.ProtocolError, match="Session Present 1 in answer to a Clean Start") as err:
        hs.on_connack(_ack(session_present=True))
    assert err.value.code == 0x82
    assert hs.connect_packet()[9] & 0x02, "not accepted yet: still a clean start"
    hs.on_connack(_ack())
    assert not hs.connect_packet()[9] & 0x02 and not hs.clean_start
    assert hs.on_connack(_ack(session_present=True)).session_present  # resuming is what the receiver wants
    plain = _handshake()
    assert plain.on_connack(_ack(session_present=True)).session_present, "a resumed session on the first connect"


def test_shared_subscriptions_unavailable_refuses_unless_mqtt_shared_is_false():
    """ejabberd's CONNACK: with mqtt.shared a BrokerMismatch saying what to change; without, plain filters."""
    no_shared = prop_byte(0x2A, 0)
    with pytest.raises(BrokerMismatch, match="Shared Subscription Available 0.*set mqtt.shared: false"):
        _handshake().on_connack(_ack(props=no_shared))
    plain = _handshake(shared=False)
    plain.on_connack(_ack(props=no_shared))
    assert b"$share" not in plain.subscribe_packet() and b"bk/v1/+/alert" in plain.subscribe_packet()
    with pytest.raises(BrokerMismatch, match="no wildcard subscriptions"):
        _handshake().on_connack(_ack(props=prop_byte(0x28, 0)))
    with pytest.raises(BrokerMismatch, match="QoS 0 only"):
        _handshake().on_connack(_ack(props=prop_byte(0x24, 0)))
    with pytest.raises(BrokerMismatch, match="SUBACK 0x9E"):
        _handshake().on_suback(mqtt5.Suback(1, (0x9E,) * 5, None))
    assert isinstance(_handshake().on_disconnect(mqtt5.Disconnect(0x9E, "Protocol error")), BrokerMismatch)
    assert type(_handshake().on_disconnect(mqtt5.Disconnect(0x8E, None))) is ConnectionEnded


def test_granted_keepalive_and_session_expiry():
    """Server Keep Alive replaces ours unless it is 0 (then we keep pinging at ours); the granted expiry is kept."""
    hs = _handshake(keepalive_s=20, session_expiry_s=604800)
    assert hs.on_connack(_ack(props=prop_u16(0x13, 0))).keepalive_s == 20
    assert hs.on_connack(_ack(props=prop_u16(0x13, 7))).keepalive_s == 7
    assert hs.on_connack(_ack(props=prop_u32(0x11, 3600))).session_expiry_s == 3600
    assert hs.on_connack(_ack()).session_expiry_s == 604800


# --- poison messages -------------------------------------------------------------------------------------

def _bad(packet_id: int) -> mqtt5.BadPublish:
    return mqtt5.BadPublish("PUBLISH with QoS 2", 0x82, packet_id=packet_id, qos=2, topic="t", ack_reason=0x83)


def test_poison_guard_gives_each_packet_identifier_one_strike():
    """First failure: raised (DISCONNECT); the same id failing again: refused alone; a good message clears it."""
    guard = PoisonGuard(limit=2)
    with pytest.raises(mqtt5.BadPublish):
        guard.judge(_bad(5))
    refused = guard.judge(_bad(5))
    assert refused == Refused("t", 5, 2, "poison message: PUBLISH with QoS 2 (delivered again after DISCONNECT 0x82)",
                              0x83)
    with pytest.raises(mqtt5.BadPublish):
        guard.judge(_bad(5))  # a later fault on a reused id starts over
    guard.cleared(5)
    with pytest.raises(mqtt5.BadPublish):
        guard.judge(_bad(5))
    for pid in (6, 7):
        with pytest.raises(mqtt5.BadPublish):
            guard.judge(_bad(pid))
    with pytest.raises(mqtt5.BadPublish):
        guard.judge(_bad(5))  # forgotten: only the last `limit` strikes are kept
    with pytest.raises(mqtt5.BadPublish):
        guard.judge(_bad(0))  # QoS 0 is never delivered again: no strike to remember
    assert guard.judge(_bad(7)).packet_id == 7  # the latest strikes are kept
