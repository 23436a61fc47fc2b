"""The receiver's own MQTT v5 subscriber against real brokers (Mosquitto: wrong password, TLS; ejabberd:
no shared subscriptions, a short session expiry) and against a FAKE broker scripted with the faults
no real broker commits on cue (tests/support/fake_mqtt_broker.py). The codec's own tests are in
tests/test_receiver_codec.py."""

from __future__ import annotations

import socket
import time

import pytest
import structlog
from support.fake_mqtt_broker import CONNACK_OK, FakeBroker, connack, prop_byte, prop_u16, prop_u32, raw_publish
from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, make_tls_files, receiver_config
from support.requirements import require_open_files
from support.waiting import async_wait_until

from cloud_receiver.appkeys import SUBSCRIBER
from cloud_receiver.errors import StorageError
from cloud_receiver.ingest import codec as mqtt5
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.storage.sqlite import open_storage
from devkit.ejabberd_broker import running_ejabberd
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

DEV = "64050200001180000101"
TOPIC = f"bk/v1/{DEV}/alert".encode()


def _register(storage, *device_ids):
    storage.add_canteen("canteen-1", "第一小学食堂", "640502")
    for d in device_ids:
        storage.add_device(d, "canteen-1", "box")


def _registered(cfg):
    """The config, with DEV registered in its database before the receiver starts (fake brokers deliver at once)."""
    storage = open_storage(cfg.storage.path)
    _register(storage, DEV)
    storage.close()
    return cfg


def _alert(n: int, packet_id: int) -> bytes:
    return raw_publish(TOPIC, make_alert(DEV, n).model_dump_json().encode(), packet_id)


@pytest.fixture
def fake_broker():
    brokers: list[FakeBroker] = []

    def make(**kw) -> FakeBroker:
        brokers.append(FakeBroker(**kw))
        return brokers[-1]

    yield make
    for b in brokers:
        b.close()


def _events(logs, name):
    return [e for e in logs if e["event"] == name]


# --- against a real Mosquitto --------------------------------------------------------------------------

async def test_wrong_password_is_reported_and_retried_without_crashing(tmp_path, monkeypatch):
    """A refused CONNACK is logged with its reason and retried; the password never reaches the log."""
    with running_broker(tmp_path / "broker", dynsec=True) as broker:
        cfg = receiver_config(tmp_path, broker)
        monkeypatch.setenv("BK_TEST_RECEIVER_PASSWORD", "not-the-password")
        with structlog.testing.capture_logs() as logs:
            rx = await RunningReceiver(cfg).start(wait_subscribed=False)
            try:
                refused = lambda: _events(logs, "broker refused the receiver")  # noqa: E731
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
                for n in range(30):
                    dev.publish_alert(make_alert(DEV, n))
            finally:
                dev.close()
            assert await async_wait_until(lambda: rx.storage.count("alerts") == 30)
            # the counters follow the commit and its acknowledgements: wait for them too
            assert await async_wait_until(lambda: rx.app[SUBSCRIBER].counts["stored"] == 30, 5), rx.app[SUBSCRIBER].counts
        finally:
            await rx.stop()

        bad = receiver_config(tmp_path / "bad", tls_broker, client_id="bk-receiver-test-2",
                              mqtt={"tls": True, "ca_file": str(other_ca)})
        with structlog.testing.capture_logs() as logs:
            rx = await RunningReceiver(bad).start(wait_subscribed=False)
            try:
                assert await async_wait_until(lambda: len(_events(logs, "connect failed")) >= 2, 10)
                assert "CERTIFICATE_VERIFY_FAILED" in _events(logs, "connect failed")[0]["error"]
                assert not rx.app[SUBSCRIBER].connected.is_set()
            finally:
                await rx.stop()


async def test_socket_above_descriptor_1023_and_an_unexpected_error_do_not_stop_ingest(tmp_path, monkeypatch):
    """A socket above descriptor 1023 and a bug in the connection path (logged, reconnect) do not stop ingest."""
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


# --- against a real ejabberd (no shared subscriptions, a short session) ---------------------------------

async def test_ejabberd_without_shared_subscriptions_is_refused_clearly_and_works_with_shared_false(tmp_path):
    """ejabberd: with mqtt.shared the log says what to change; with false it ingests and warns of its 3,600 s."""
    with running_ejabberd(tmp_path / "ejabberd") as broker, structlog.testing.capture_logs() as logs:
        shared = receiver_config(tmp_path / "shared", broker, client_id="bk-rx-shared",
                                 mqtt={"shared": True, "reconnect_max_s": 0.5})
        rx = await RunningReceiver(shared).start(wait_subscribed=False)
        try:
            mismatch = lambda: _events(logs, "the broker cannot serve the receiver as configured; a person must "  # noqa: E731
                                             "change the broker or the mqtt config")
            assert await async_wait_until(lambda: len(mismatch()) >= 2, 10)
            assert "Shared Subscription Available 0" in mismatch()[0]["reason"]
            assert "set mqtt.shared: false" in mismatch()[0]["reason"] and mismatch()[0]["retry_in_s"] == 0.5
            assert not rx.app[SUBSCRIBER].subscribed.is_set()
        finally:
            await rx.stop()

        rx = await RunningReceiver(receiver_config(tmp_path / "plain", broker)).start()  # harness: shared false
        try:
            _register(rx.storage, DEV)
            dev = DeviceClient(broker, DEV, broker.add_device(DEV)[1])
            try:
                assert dev.publish_alert(make_alert(DEV, 1)) == 0
            finally:
                dev.close()
            assert await async_wait_until(lambda: rx.storage.count("alerts") == 1)
        finally:
            await rx.stop()
        connected = _events(logs, "receiver connected")[-1]
        assert connected["session_expiry_s"] == 3600 and connected["server_keep_alive"] == 30
        short = _events(logs, "the broker keeps the receiver's session for less than mqtt.session_expiry_s: what is "
                              "queued for a receiver stopped longer than the granted time is lost")
        assert short and (short[-1]["granted_s"], short[-1]["configured_s"]) == (3600, 604800)


# --- against a FAKE broker: poison messages and back-off -------------------------------------------------

BIG = 8 * 1024 * 1024 + 100
POISON = {  # kind: (the message, DISCONNECT reason on its first delivery, PUBACK/PUBREC answer on its second)
    "qos2": (raw_publish(TOPIC, b"{}", 2, qos=2), 0x82, (mqtt5.PUBREC, 0x83)),
    "too-large": (raw_publish(TOPIC, bytes(BIG), 2), 0x95, (mqtt5.PUBACK, 0x97)),
    "topic-alias": (raw_publish(TOPIC, b"{}", 2, props=prop_u16(0x23, 1)), 0x94, (mqtt5.PUBACK, 0x90)),
    "alias-instead-of-topic": (raw_publish(b"", b"{}", 2, props=prop_u16(0x23, 1)), 0x94, (mqtt5.PUBACK, 0x90)),
    "bad-utf8-topic": (raw_publish(b"bk/v1/\xff\xfe/alert", b"{}", 2), 0x81, (mqtt5.PUBACK, 0x90)),
    "nul-topic": (raw_publish(b"bk/v1/\x00/alert", b"{}", 2), 0x81, (mqtt5.PUBACK, 0x90)),
    "wildcard-topic": (raw_publish(b"bk/v1/+/alert", b"{}", 2), 0x81, (mqtt5.PUBACK, 0x90)),
}


@pytest.mark.parametrize("kind", list(POISON))
async def test_a_poison_message_costs_one_connection_then_is_refused_alone(tmp_path, fake_broker, kind):
    """A resent bad message: DISCONNECT once, then refused alone (a reject row), and what follows is stored."""
    poison, disconnect_reason, refusal = POISON[kind]
    broker = fake_broker(queue=[_alert(1, 1), poison, _alert(2, 3), _alert(3, 4)])
    cfg = _registered(receiver_config(tmp_path, broker))
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(cfg).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: {a[2] for a in broker.acks} >= {1, 2, 3, 4}, 10), \
                f"acks {broker.acks}, connections {len(broker.seen)}"
            assert len(broker.seen) == 2, "one connection lost to the poison, not one per delivery"
            # alert 1 may have been stored and acknowledged before the poison arrived, or go down with it
            final = {pid: (kind, reason) for _n, kind, pid, reason in broker.acks}
            assert final == {1: (mqtt5.PUBACK, 0), 2: refusal, 3: (mqtt5.PUBACK, 0), 4: (mqtt5.PUBACK, 0)}
            again = [pid for n, _kind, pid, _reason in broker.acks if n == 1]
            assert again in ([1, 2, 3, 4], [2, 3, 4]), "acknowledged on the second connection, in order"
            broke = _events(logs, "broker broke the protocol; reconnecting")
            assert [e["disconnect_reason"] for e in broke] == [f"0x{disconnect_reason:02X}"]
            if kind != "too-large":  # the receiver closes under an 8 MiB send: the fake may not read its DISCONNECT
                assert (0xE0, bytes([disconnect_reason])) in broker.seen[0]
            assert rx.storage.count("alerts") == 3
            reject, = rx.storage.list_rejects()
            assert reject["reason"].startswith("poison message: ") and broke[0]["error"] in reject["reason"]
            assert reject["topic"] == broke[0]["topic"] == _events(logs, "poison message refused")[0]["topic"]
            counts = rx.app[SUBSCRIBER].counts  # alert 1 is a duplicate when stored before its PUBACK got lost
            assert (counts["stored"], counts["rejected"]) == (3, 1) and counts["duplicate"] <= 1
        finally:
            await rx.stop()


def _disconnect_after_subscribe(reason: int):
    return lambda conn, n: conn.sendall(bytes([0xE0, 1, reason]))


async def test_back_off_grows_while_connections_fail_at_once(tmp_path, fake_broker):
    """A broker that drops the receiver after SUBACK: waits double to reconnect_max_s (not the minimum forever)."""
    broker = fake_broker(after_subscribe=_disconnect_after_subscribe(0x89))
    cfg = receiver_config(tmp_path, broker, mqtt={"reconnect_min_s": 0.1, "reconnect_max_s": 0.8, "healthy_after_s": 5})
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(cfg).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: len(broker.accepted_at) >= 6, 10)
        finally:
            await rx.stop()
    gaps = [b - a for a, b in zip(broker.accepted_at, broker.accepted_at[1:], strict=False)][:5]
    assert gaps[0] < 0.6 and gaps[3] > 0.7 and gaps[4] > 0.7, gaps
    waits = [e["retry_in_s"] for e in _events(logs, "receiver disconnected")][:5]
    assert waits == [0.1, 0.2, 0.4, 0.8, 0.8]


async def test_back_off_starts_again_after_a_connection_that_stored_something(tmp_path, fake_broker):
    """Each connection stores an alert before it is dropped: the receiver returns at the minimum delay."""
    def deliver_then_drop(conn, n):
        conn.sendall(_alert(10 + n, n + 1))
        deadline = time.monotonic() + 5
        while not broker.acked(n + 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.sendall(b"\xe0\x01\x89")

    broker = fake_broker(after_subscribe=deliver_then_drop)
    cfg = _registered(receiver_config(tmp_path, broker, mqtt={"reconnect_min_s": 0.1, "reconnect_max_s": 0.8,
                                                              "healthy_after_s": 5}))
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(cfg).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: len(broker.accepted_at) >= 5, 10)
        finally:
            await rx.stop()
    assert [e["retry_in_s"] for e in _events(logs, "receiver disconnected")][:4] == [0.1] * 4


# --- against a FAKE broker: CONNACK, SUBACK and DISCONNECT ------------------------------------------------

@pytest.mark.parametrize(("first_connack", "mqtt", "problem"), [
    (b"\x20\x02\x00\x01", {}, "CONNACK reason 0x01 is no MQTT v5 success"),  # MQTT 3.1.1: unacceptable protocol level
    (connack(code=0x10), {}, "CONNACK reason 0x10 is no MQTT v5 success"),
    (connack(session_present=True), {"clean_start": True}, "Session Present 1 in answer to a Clean Start"),
], ids=["mqtt311-refusal", "code-0x10", "session-present-after-clean-start"])
async def test_a_connack_that_is_no_success_is_a_protocol_error(tmp_path, fake_broker, first_connack, mqtt, problem):
    """No SUBSCRIBE on such a connection: DISCONNECT 0x82, and the next connection is accepted normally."""
    broker = fake_broker(connack=lambda n: first_connack if n == 0 else CONNACK_OK)
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, broker, mqtt=mqtt)).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: rx.app[SUBSCRIBER].subscribed.is_set(), 10)
        finally:
            await rx.stop()
    assert mqtt5.SUBSCRIBE not in broker.kinds(0), "nothing subscribed on a refused connection"
    assert broker.seen[0][-1] == (0xE0, b"\x82")
    broke = _events(logs, "broker broke the protocol; reconnecting")
    assert problem in broke[0]["error"] and broke[0]["disconnect_reason"] == "0x82"
    if mqtt:
        assert [broker.seen[n][0][1][7] & 0x02 for n in (0, 1)] == [0x02, 0x02], "clean start until accepted"


@pytest.mark.parametrize("how", ["connack", "disconnect-after-subscribe"])
async def test_a_broker_without_shared_subscriptions_is_named_and_retried_slowly(tmp_path, fake_broker, how):
    """No shared subscriptions (CONNACK, DISCONNECT 0x9E): the log says set mqtt.shared: false; slow retries."""
    if how == "connack":
        broker = fake_broker(connack=lambda n: connack(props=prop_byte(0x2A, 0)))
    else:
        broker = fake_broker(suback=lambda n, pid, k: b"\xe0\x22\x9e\x20\x1f\x00\x1dShared Subscriptions disabled!")
    cfg = receiver_config(tmp_path, broker, mqtt={"reconnect_min_s": 0.1, "reconnect_max_s": 0.6})
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(cfg).start(wait_subscribed=False)
        try:
            assert await async_wait_until(lambda: len(broker.accepted_at) >= 2, 10)
        finally:
            await rx.stop()
    assert broker.accepted_at[1] - broker.accepted_at[0] > 0.55
    said = _events(logs, "the broker cannot serve the receiver as configured; a person must change the broker or "
                         "the mqtt config")[0]
    assert "set mqtt.shared: false" in said["reason"] and said["retry_in_s"] == 0.6
    assert ("Shared Subscription Available 0" if how == "connack" else "0x9E") in said["reason"]
    if how == "connack":
        assert mqtt5.SUBSCRIBE not in broker.kinds(0) and broker.seen[0][-1] == (0xE0, b"")


async def test_without_shared_subscriptions_mqtt_shared_false_subscribes_plainly(tmp_path, fake_broker):
    """With mqtt.shared: false the same broker is fine: plain filters, subscribed."""
    broker = fake_broker(connack=lambda n: connack(props=prop_byte(0x2A, 0)))
    rx = await RunningReceiver(receiver_config(tmp_path, broker, mqtt={"shared": False})).start()
    await rx.stop()
    subscribe = next(body for first, body in broker.seen[0] if first >> 4 == mqtt5.SUBSCRIBE)
    assert b"$share" not in subscribe and b"bk/v1/+/alert" in subscribe


async def test_the_granted_session_expiry_is_logged_and_a_shorter_one_warned(tmp_path, fake_broker):
    """CONNACK Session Expiry 3600 against the configured 7 days: logged, with a warning naming both."""
    broker = fake_broker(connack=lambda n: connack(props=prop_u32(0x11, 3600)))
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, broker)).start()
        await rx.stop()
    assert _events(logs, "receiver connected")[0]["session_expiry_s"] == 3600
    warned = [e for e in logs if e["event"].startswith("the broker keeps the receiver's session for less")]
    assert [(e["granted_s"], e["configured_s"]) for e in warned] == [(3600, 604800)]


@pytest.mark.parametrize(("packet", "before_connack", "reason"), [
    (b"\x62\x02\x00\x01", True, 0x82),  # PUBREL
    (b"\xf0\x00", True, 0x82),  # AUTH
    (raw_publish(TOPIC, b"{}", 1), True, 0x82),  # PUBLISH
    (b"\x90\x04\x00\x01\x00\x01", True, 0x82),  # SUBACK
    (b"\xf0\x00", False, 0x82),  # AUTH: we never started enhanced authentication
    (b"\x40\x02\x00\x07", False, 0x82),  # PUBACK: we never publish
    (CONNACK_OK, False, 0x82),  # a second CONNACK
    (b"\x00\x00", False, 0x81),  # reserved packet type 0
    (b"\xd1\x00", False, 0x81),  # PINGRESP with a reserved flag set
], ids=["pubrel-first", "auth-first", "publish-first", "suback-first", "auth", "puback", "connack-again",
        "type-0", "flags"])
async def test_unexpected_packets_get_the_standards_disconnect_reason(tmp_path, fake_broker, packet, before_connack,
                                                                      reason):
    """A packet that breaks the protocol ends the connection with 0x82 (protocol error) or 0x81 (malformed)."""
    if before_connack:
        broker = fake_broker(connack=lambda n: packet if n == 0 else CONNACK_OK)
    else:
        broker = fake_broker(after_subscribe=lambda conn, n: conn.sendall(packet) if n == 0 else None)
    rx = await RunningReceiver(receiver_config(tmp_path, broker)).start(wait_subscribed=False)
    try:
        assert await async_wait_until(lambda: len(broker.seen) >= 2 and rx.app[SUBSCRIBER].subscribed.is_set(), 10)
    finally:
        await rx.stop()
    assert broker.seen[0][-1] == (0xE0, bytes([reason]))


async def test_pubrel_for_a_message_never_accepted_is_answered_pubcomp_0x92(tmp_path, fake_broker):
    """PUBREL after CONNACK names a QoS 2 message we never took: PUBCOMP 0x92, and the connection stays."""
    broker = fake_broker(after_subscribe=lambda conn, n: conn.sendall(b"\x62\x02\x00\x09" + _alert(1, 1)))
    rx = await RunningReceiver(_registered(receiver_config(tmp_path, broker))).start()
    try:
        assert await async_wait_until(lambda: broker.acked(1), 10)
        assert (0x70, b"\x00\x09\x92") in broker.seen[0]
        assert len(broker.seen) == 1 and rx.app[SUBSCRIBER].subscribed.is_set()
    finally:
        await rx.stop()


# --- against a FAKE broker: keepalive --------------------------------------------------------------------

KEEPALIVE_1 = connack(props=prop_u16(0x13, 1))


async def test_keepalive_pings_and_a_silent_broker_is_left(tmp_path, fake_broker):
    """With Server Keep Alive 1 s the receiver sends PINGREQ; left unanswered, it reconnects."""
    broker = fake_broker(connack=lambda n: KEEPALIVE_1, answer_pings=False)
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, broker)).start()
        t0 = time.monotonic()
        try:
            assert await async_wait_until(lambda: len(broker.seen) >= 2, 10), "a broker that does not answer is left"
            took = time.monotonic() - t0
            assert mqtt5.PINGREQ in broker.kinds(0)
            assert 1.0 <= took < 6.0, took
            gone = _events(logs, "receiver disconnected")
            assert gone and "no answer to PINGREQ within 1 s" in gone[0]["reason"]
        finally:
            await rx.stop()
    assert broker.seen[-1][-1] == (0xE0, b""), "a clean stop sends a normal DISCONNECT"  # on the last connection


async def test_server_keep_alive_0_still_pings_and_the_socket_has_tcp_keepalive(tmp_path, fake_broker):
    """Server Keep Alive 0: the receiver pings at its own keepalive (leaving a mute broker); TCP keepalive is on."""
    broker = fake_broker(connack=lambda n: connack(props=prop_u16(0x13, 0)), answer_pings=False)
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, broker, mqtt={"keepalive_s": 1})).start()
        try:
            sock = rx.app[SUBSCRIBER]._sock
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
            assert await async_wait_until(lambda: len(broker.seen) >= 2, 10)
        finally:
            await rx.stop()
    assert mqtt5.PINGREQ in broker.kinds(0)
    assert "no answer to PINGREQ within 1 s" in _events(logs, "receiver disconnected")[0]["reason"]


async def test_a_broker_dribbling_bytes_cannot_hold_a_dead_link(tmp_path, fake_broker):
    """A PUBLISH dribbled a byte every 0.2 s is no answer to PINGREQ: the receiver leaves after ~1.5 keepalives."""
    dribbling = []

    def dribble(conn, n):
        if n:
            return
        conn.sendall(b"\x32\xa0\x9c\x01")  # a PUBLISH of 20,000 bytes is coming
        for _ in range(100):
            conn.sendall(b"\x00")
            dribbling.append(time.monotonic())
            time.sleep(0.2)

    broker = fake_broker(connack=lambda n: KEEPALIVE_1, after_subscribe=dribble, answer_pings=False)
    with structlog.testing.capture_logs() as logs:
        rx = await RunningReceiver(receiver_config(tmp_path, broker)).start()
        t0 = time.monotonic()
        try:
            assert await async_wait_until(lambda: len(broker.seen) >= 2, 6), "held by the dribble"
            assert time.monotonic() - t0 < 3.5
        finally:
            await rx.stop()
    gone = _events(logs, "receiver disconnected")[0]["reason"]
    assert gone == "no answer to PINGREQ within 1 s (part of a packet arrived, never the whole)"
    assert len(dribbling) >= 3, "the broker was still sending bytes"


async def test_pings_continue_while_storage_retries(tmp_path, fake_broker, monkeypatch):
    """During ~2 s of store retries the receiver keeps pinging, so a broker cutting silent clients keeps it."""
    real = Ingestor.handle_batch
    failures = []

    def failing(self, messages):
        if len(failures) < 20:
            failures.append(1)
            raise StorageError("database is locked (simulated)")
        return real(self, messages)

    monkeypatch.setattr(Ingestor, "handle_batch", failing)
    broker = fake_broker(connack=lambda n: KEEPALIVE_1, queue=[_alert(1, 1)], cut_silent_after_s=1.5)
    cfg = _registered(receiver_config(tmp_path, broker, mqtt={"store_retries": 40, "store_retry_s": 0.1}))
    rx = await RunningReceiver(cfg).start()
    try:
        assert await async_wait_until(lambda: broker.acked(1), 10)
        assert len(failures) == 20 and broker.acked(1) == [(0, mqtt5.PUBACK, 1, 0)]
        assert broker.kinds(0).count(mqtt5.PINGREQ) >= 2 and not broker.cut
        assert rx.storage.count("alerts") == 1
    finally:
        await rx.stop()
