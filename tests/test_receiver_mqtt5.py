"""The receiver's own MQTT v5 subscriber: the packet codec (pure), and the client against a real
Mosquitto (wrong password, TLS) and against a scripted peer for what Mosquitto never does."""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, make_tls_files, receiver_config
from support.requirements import require_open_files
from support.waiting import async_wait_until

from cloud_receiver.appkeys import SUBSCRIBER
from cloud_receiver.ingest import codec as mqtt5
from cloud_receiver.ingest.subscriber import subscriptions
from devkit.localbroker import free_port, running_broker

pytestmark = pytest.mark.integration

# --- the codec ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_000])
def test_publish_round_trip_across_remaining_length_sizes(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    topic = "bk/v1/64050200001180000101/alert"
    wire = mqtt5.publish_packet(topic, payload, 513) + mqtt5.publish_packet("t/零", b"x", qos=0)
    packets, used = mqtt5.split_packets(wire, 1 << 20)
    assert used == len(wire) and len(packets) == 2
    first = mqtt5.parse_publish(*packets[0])
    assert (first.topic, first.packet_id, first.qos, first.payload) == (topic.encode(), 513, 1, payload)
    second = mqtt5.parse_publish(*packets[1])
    assert (second.topic.decode(), second.packet_id, second.qos, second.payload) == ("t/零", 0, 0, b"x")


def test_split_packets_keeps_partial_packets_for_the_next_read():
    """Fed one byte at a time (the way a socket may deliver them), the same packets come out, in order."""
    wire = b"".join(mqtt5.publish_packet(f"a/{n}", bytes([n]) * (n * 50), n + 1) for n in range(6)) + b"\xd0\x00"
    got: list[tuple[int, bytes]] = []
    pending = b""
    for i in range(len(wire)):
        data = pending + wire[i:i + 1]
        packets, used = mqtt5.split_packets(data, 1 << 20)
        got += packets
        pending = data[used:]
    assert pending == b""
    assert got == mqtt5.split_packets(wire, 1 << 20)[0] and len(got) == 7
    assert [mqtt5.parse_publish(*p).packet_id for p in got[:6]] == [1, 2, 3, 4, 5, 6]
    assert got[6] == (0xD0, b"")  # PINGRESP


def test_properties_of_a_publish_are_skipped():
    props = b"\x01\x01" + b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01k\x00\x02vv" + b"\x0b\x81\x01"  # format, expiry, user, sub id
    body = b"\x00\x03a/b" + b"\x00\x07" + mqtt5.encode_varint(len(props)) + props + b"payload"
    msg = mqtt5.parse_publish(0x32, body)
    assert (msg.topic, msg.packet_id, msg.payload) == (b"a/b", 7, b"payload")


@pytest.mark.parametrize(("first", "body", "problem"), [
    (0x34, b"\x00\x01a\x00\x01\x00", "QoS 2"),
    (0x32, b"\x00\x01a\x00\x00\x00", "packet identifier 0"),
    (0x32, b"\x00\x00\x00\x01\x00", "without a topic name"),
    (0x32, b"\x00\x09a", "truncated PUBLISH topic"),
    (0x32, b"\x00\x01a\x00\x01\x05\x01", "truncated PUBLISH properties"),
])
def test_malformed_publish_names_the_problem(first, body, problem):
    with pytest.raises(mqtt5.ProtocolError, match=problem):
        mqtt5.parse_publish(first, body)


def test_oversized_and_malformed_lengths_are_protocol_errors():
    big = mqtt5.publish_packet("a", bytes(2000), 1)
    with pytest.raises(mqtt5.ProtocolError, match="PUBLISH of 2009 bytes exceeds our maximum packet size of 1000") as err:
        mqtt5.split_packets(big, 1000)
    assert err.value.code == mqtt5.PACKET_TOO_LARGE
    with pytest.raises(mqtt5.ProtocolError, match="more than four bytes"):
        mqtt5.split_packets(b"\x30\xff\xff\xff\xff\x01", 1 << 30)


def test_connect_subscribe_and_acks_encode_as_specified():
    wire = mqtt5.connect_packet("rx-1", 30, username="u", password="p", session_expiry_s=3600,
                                receive_maximum=400, maximum_packet_size=1 << 20)
    (first, body), = mqtt5.split_packets(wire, 1 << 20)[0]
    assert first == 0x10 and body[:7] == b"\x00\x04MQTT\x05" and body[7] == 0xC0  # username + password, no clean start
    assert body[8:10] == struct.pack("!H", 30)
    props = b"\x11\x00\x00\x0e\x10" + b"\x21\x01\x90" + b"\x27\x00\x10\x00\x00"
    assert body[10:11 + len(props)] == bytes([len(props)]) + props
    assert body[11 + len(props):] == b"\x00\x04rx-1" + b"\x00\x01u" + b"\x00\x01p"
    sub = mqtt5.subscribe_packet(1, [("$share/g/a/+", 1), ("b/#", 1)])
    assert sub == b"\x82\x18\x00\x01\x00" + b"\x00\x0c$share/g/a/+\x01" + b"\x00\x03b/#\x01"
    assert mqtt5.puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert mqtt5.disconnect_packet(0x82) == b"\xe0\x01\x82" and mqtt5.disconnect_packet() == b"\xe0\x00"


def test_connack_suback_disconnect_read_reasons_and_properties():
    ack = mqtt5.parse_connack(b"\x01\x00\x0b\x13\x00\x05\x1f\x00\x05hello")
    assert (ack.session_present, ack.reason_code, ack.server_keep_alive, ack.reason_string) == (True, 0, 5, "hello")
    assert mqtt5.parse_connack(b"\x00\x86\x00").reason_code == 0x86
    assert mqtt5.reason_name(mqtt5.CONNACK, 0x86) == "0x86 Bad user name or password"
    sub = mqtt5.parse_suback(b"\x00\x01\x00\x01\x01\x87")
    assert (sub.packet_id, sub.reason_codes) == (1, (1, 1, 0x87))
    assert mqtt5.parse_disconnect(b"") == mqtt5.Disconnect(0, None)
    assert mqtt5.parse_disconnect(b"\x8e\x00").reason_code == 0x8E
    with pytest.raises(mqtt5.ProtocolError, match="unknown property identifier 0x7F"):
        mqtt5.parse_connack(b"\x00\x00\x02\x7f\x00")
    with pytest.raises(mqtt5.ProtocolError, match="reserved bits"):
        mqtt5.parse_connack(b"\x02\x00")


PARSERS = {mqtt5.CONNACK: mqtt5.parse_connack, mqtt5.SUBACK: mqtt5.parse_suback,
           mqtt5.DISCONNECT: mqtt5.parse_disconnect}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_protocol_error(data):
    try:
        packets, used = mqtt5.split_packets(data, 4096)
    except mqtt5.ProtocolError:
        return
    assert 0 <= used <= len(data)
    for first, body in packets:
        try:
            if first >> 4 == mqtt5.PUBLISH:
                mqtt5.parse_publish(first, body)
            elif first >> 4 in PARSERS:
                PARSERS[first >> 4](body)
        except mqtt5.ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.binary(max_size=600), st.integers(1, 65535), st.integers(1, 40))
def test_publish_round_trip_in_any_cut(topic, payload, packet_id, cut):
    wire = mqtt5.publish_packet(topic, payload, packet_id)
    head, tail = wire[:cut], wire[cut:]
    packets, used = mqtt5.split_packets(head, 1 << 20)
    rest = head[used:] + tail
    packets += mqtt5.split_packets(rest, 1 << 20)[0]
    msg = mqtt5.parse_publish(*packets[0])
    assert (msg.topic.decode(), msg.packet_id, msg.payload) == (topic, packet_id, payload)


# --- against a real Mosquitto --------------------------------------------------------------------------

DEV = "64050200001180000101"


def _register(storage, *device_ids):
    storage.add_canteen("canteen-1", "第一小学食堂", "640502")
    for d in device_ids:
        storage.add_device(d, "canteen-1", "box")


async def test_wrong_password_is_reported_and_retried_without_crashing(tmp_path, monkeypatch):
    with running_broker(tmp_path / "broker", dynsec=True) as broker:
        cfg = receiver_config(tmp_path, broker)
        monkeypatch.setenv("BK_TEST_RECEIVER_PASSWORD", "not-the-password")
        with structlog.testing.capture_logs() as logs:
            rx = await RunningReceiver(cfg).start(wait_subscribed=False)
            try:
                refused = lambda: [e for e in logs if e["event"] == "broker refused the receiver"]  # noqa: E731
                assert await async_wait_until(lambda: len(refused()) >= 2, 10), "the receiver retries after a refusal"
                # Mosquitto 2.0.11's dynamic-security plugin answers a wrong password with 0x87, others with 0x86
                assert refused()[0]["reason"] in ("0x86 Bad user name or password", "0x87 Not authorized")
                assert not rx.app[SUBSCRIBER].subscribed.is_set() and rx.app[SUBSCRIBER].counts == \
                    {"stored": 0, "duplicate": 0, "rejected": 0}
                assert "not-the-password" not in repr(logs)
            finally:
                await rx.stop()


async def test_tls_listener_delivers_and_a_foreign_ca_is_refused(tmp_path):
    """Over TLS (verified against the deployment's CA) alerts arrive; with another CA the receiver never connects."""
    tls = make_tls_files(tmp_path / "tls")
    other_ca = make_tls_files(tmp_path / "other", "other") / "ca.crt"
    with running_broker(tmp_path / "broker", tls_dir=tls) as broker:
        tls_broker = type("TlsBroker", (), {"host": broker.host, "port": broker.tls_port, "receiver": None})()
        cfg = receiver_config(tmp_path, tls_broker, mqtt={"tls": True, "ca_file": str(tls / "ca.crt")})
        rx = await RunningReceiver(cfg).start()
        try:
            _register(rx.storage, DEV)
            dev = DeviceClient(broker, DEV)  # the device side on the plain listener
            try:
                alerts = [make_alert(DEV, n) for n in range(30)]
                for a in alerts:
                    dev.publish_alert(a)
            finally:
                dev.close()
            assert await async_wait_until(lambda: rx.storage.count("alerts") == 30)
            assert rx.app[SUBSCRIBER].counts["stored"] == 30
        finally:
            await rx.stop()

        bad = receiver_config(tmp_path / "bad", tls_broker, client_id="bk-receiver-test-2",
                              mqtt={"tls": True, "ca_file": str(other_ca)})
        with structlog.testing.capture_logs() as logs:
            rx = await RunningReceiver(bad).start(wait_subscribed=False)
            try:
                failed = lambda: [e for e in logs if e["event"] == "connect failed"]  # noqa: E731
                assert await async_wait_until(lambda: len(failed()) >= 2, 10)
                assert "CERTIFICATE_VERIFY_FAILED" in failed()[0]["error"]
                assert not rx.app[SUBSCRIBER].connected.is_set()
            finally:
                await rx.stop()


# --- against a scripted peer (a FAKE broker: Mosquitto never misbehaves like this on cue) ---------------

CONNACK_OK = b"\x20\x03\x00\x00\x00"


@dataclass
class ScriptedPeer:
    """A FAKE broker for protocol faults: accepts connections, reads the CONNECT, then plays `script(conn, n)`.

    Records every packet each connection sent (until it closed) in `seen[n]`."""

    script: object
    suback_code: int = 1
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    receiver: None = None
    seen: list[list[tuple[int, bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._srv = socket.create_server((self.host, self.port))
        self._srv.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            self.seen.append([])
            threading.Thread(target=self._serve, args=(conn, len(self.seen) - 1), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        conn.settimeout(10)
        pending = b""
        with conn:
            try:
                self.script(conn, n)
                while data := conn.recv(4096):
                    packets, used = mqtt5.split_packets(pending + data, 1 << 20)
                    pending = (pending + data)[used:]
                    self.seen[n] += packets
                    for first, _body in packets:
                        if first >> 4 == mqtt5.SUBSCRIBE:
                            code = self.suback_code if n == 0 else 1  # the first connection is the one under test
                            conn.sendall(b"\x90\x08\x00\x01\x00" + bytes([code]) * len(subscriptions("receivers")))
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._srv.close()


@pytest.fixture
def peer_factory():
    peers: list[ScriptedPeer] = []

    def make(script, **kw) -> ScriptedPeer:
        peers.append(ScriptedPeer(script, **kw))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


async def test_malformed_packet_from_the_broker_drops_the_connection_and_reconnects(tmp_path, peer_factory):
    """A PUBLISH with QoS 2 (we subscribed with at most 1): DISCONNECT 0x82, logged, a new connection follows."""
    peer = peer_factory(lambda conn, n: conn.sendall(CONNACK_OK + (b"\x34\x05\x00\x01a\x00\x01" if n == 0 else b"")))
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, peer)).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: len(peer.seen) >= 2 and rx.app[SUBSCRIBER].subscribed.is_set(), 10)
            errors = [e for e in logs if e["event"] == "broker broke the protocol; reconnecting"]
            assert errors and "QoS 2" in errors[0]["error"]
            assert peer.seen[0][0][0] >> 4 == mqtt5.CONNECT
            assert (0xE0, b"\x82") in peer.seen[0], "the broken connection ends with DISCONNECT 0x82"
        finally:
            await rx.stop()
    assert peer.seen[1][-1] == (0xE0, b""), "a clean stop sends a normal DISCONNECT"


async def test_keepalive_pings_and_a_silent_broker_is_left(tmp_path, peer_factory):
    """With Server Keep Alive 1 s the receiver sends PINGREQ; left unanswered, it reconnects."""
    connack_keepalive_1 = b"\x20\x06\x00\x00\x03\x13\x00\x01"
    peer = peer_factory(lambda conn, n: conn.sendall(connack_keepalive_1))
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, peer)).start()
        t0 = time.monotonic()
        try:
            assert await async_wait_until(lambda: len(peer.seen) >= 2, 10), "a broker that does not answer PINGREQ is left"
            took = time.monotonic() - t0
            assert (mqtt5.PINGREQ << 4, b"") in peer.seen[0]
            assert 1.0 <= took < 6.0, took
            gone = [e for e in logs if e["event"] == "receiver disconnected"]
            assert gone and "no answer to PINGREQ within 1 s" in gone[0]["reason"]
        finally:
            await rx.stop()


async def test_broker_disconnect_reason_is_logged(tmp_path, peer_factory):
    peer = peer_factory(lambda conn, n: conn.sendall(CONNACK_OK + (b"\xe0\x01\x8e" if n == 0 else b"")))
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, peer)).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: rx.app[SUBSCRIBER].subscribed.is_set() and len(peer.seen) >= 2, 10)
            gone = [e for e in logs if e["event"] == "receiver disconnected"]
            assert gone[0]["reason"] == "the broker sent DISCONNECT 0x8E Session taken over"
        finally:
            await rx.stop()


async def test_subscription_granted_with_qos_0_counts_as_refused(tmp_path, peer_factory):
    """QoS 0 messages are never acknowledged, so never redelivered: the receiver does not settle for them."""
    peer = peer_factory(lambda conn, n: conn.sendall(CONNACK_OK), suback_code=0)
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, peer)).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: rx.app[SUBSCRIBER].subscribed.is_set() and len(peer.seen) >= 2, 10)
            refused = [e for e in logs if e["event"].startswith("broker refused the receiver's subscriptions")]
            assert len(refused) == 1 and set(refused[0]["refused"].values()) == {"0x00 Granted QoS 0"}
            assert peer.seen[0][-1] == (0xE0, b"")
        finally:
            await rx.stop()


async def test_socket_above_descriptor_1023_and_an_unexpected_error_do_not_stop_ingest(tmp_path, monkeypatch):
    """A busy process hands out descriptors above 1023 (select() cannot take them); a bug in the
    connection path is logged and the subscriber connects again: ingest goes on in both cases."""
    require_open_files(2048)
    held = [open("/dev/null", "rb") for _ in range(1100)]  # noqa: SIM115 - closed below
    real_connack = mqtt5.parse_connack
    calls = []

    def first_connack_breaks(body):
        calls.append(body)
        if len(calls) == 1:
            raise RuntimeError("a bug in the connection path")
        return real_connack(body)

    monkeypatch.setattr(mqtt5, "parse_connack", first_connack_breaks)
    try:
        with running_broker(tmp_path / "broker") as broker, structlog.testing.capture_logs() as logs:
            rx = await RunningReceiver(receiver_config(tmp_path, broker)).start()
            try:
                assert rx.app[SUBSCRIBER]._sock.fileno() > 1023
                for f in held:  # paho (the device side) still uses select()
                    f.close()
                _register(rx.storage, DEV)
                dev = DeviceClient(broker, DEV)
                try:
                    dev.publish_alert(make_alert(DEV, 1))
                finally:
                    dev.close()
                assert await async_wait_until(lambda: rx.storage.count("alerts") == 1)
                assert len(calls) == 2
                assert [e["event"] for e in logs].count("subscriber connection failed unexpectedly; reconnecting") == 1
            finally:
                await rx.stop()
    finally:
        for f in held:
            f.close()
