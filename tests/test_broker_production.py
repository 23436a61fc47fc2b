"""config/mosquitto/production.conf as shipped, run by a real Mosquitto with the dynamic-security
plugin: devices over TLS, the receiver and the admin on the local listener.

Only what a test cannot use is moved: ports 8883/1883 to free ports on 127.0.0.1, /etc/mosquitto/certs
and /var/lib/mosquitto to temp folders, syslog to a file. Everything else is the file as installed."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support.receiver_harness import RunningReceiver, make_alert, make_tls_files, receiver_config
from support.waiting import async_wait_until

from bk_contract import topic
from devkit.localbroker import Broker, dynsec_plugin, free_port, tool
from edge_agent.errors import RetryLater
from edge_agent.uplink.session import Connack, MqttSession, Puback

pytestmark = pytest.mark.integration

PRODUCTION_CONF = Path(__file__).resolve().parents[1] / "config" / "mosquitto" / "production.conf"


def _moved(text: str, old: str, new: str) -> str:
    assert old in text, f"production.conf no longer contains {old!r}: update this test"
    return text.replace(old, new)


@pytest.fixture
def production_broker(tmp_path):
    certs = make_tls_files(tmp_path / "certs")
    state = tmp_path / "state"
    state.mkdir()
    local = Broker("127.0.0.1", free_port(), state, dynsec=True, admin=("bk-admin", secrets.token_urlsafe(16)))
    tls_port = free_port()
    text = PRODUCTION_CONF.read_text()
    text = _moved(text, "listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    text = _moved(text, "listener 1883 127.0.0.1\n", f"listener {local.port} 127.0.0.1\n")
    text = _moved(text, "/etc/mosquitto/certs/", f"{certs}/")
    text = _moved(text, "/var/lib/mosquitto/", f"{state}/")
    text = _moved(text, "log_dest syslog", f"log_dest file {state}/mosquitto.log")
    text = _moved(text, "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", dynsec_plugin())
    if os.geteuid() == 0:
        text += "user root\n"
    (state / "mosquitto.conf").write_text(text)
    subprocess.run([tool("mosquitto_ctrl"), "dynsec", "init", str(state / "dynamic-security.json"), *local.admin],
                   check=True, capture_output=True)
    local.start()
    local.receiver = ("bk-receiver", secrets.token_urlsafe(16))
    try:
        with local.admin_client() as admin:
            admin.add_receiver(*local.receiver)
        yield local, tls_port, certs
    finally:
        local.stop()


def _device_session(port: int, device_id: str | None, password: str | None, ca: Path | None,
                    tls: bool = True) -> MqttSession:
    """The edge agent's own MQTT session (as the uplink makes it), connected: raises RetryLater when refused.
    `device_id` None: no username at all (anonymous)."""
    s = MqttSession(host="127.0.0.1", port=port, client_id=f"box-{device_id or 'anonymous'}", username=device_id,
                    password=password,
                    keepalive_s=30, tls=tls, ca_file=ca, connect_timeout_s=3)
    s.connect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for e in s.poll(0.1):
            if isinstance(e, Connack):
                if not e.ok:
                    s.close()
                    raise RetryLater(f"refused: {e.reason}")
                return s
    s.close()
    raise RetryLater("no CONNACK")


def _publish(s: MqttSession, topic_name: str, payload: bytes) -> int:
    mid = s.publish(topic_name, payload, qos=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for e in s.poll(0.1):
            if isinstance(e, Puback) and e.mid == mid:
                return e.code
    raise AssertionError("no PUBACK")


async def test_devices_over_tls_reach_the_receiver_on_the_local_listener(production_broker, tmp_path):
    broker, tls_port, certs = production_broker
    device, password = broker.add_device()
    cfg = receiver_config(tmp_path, broker)
    rx = await RunningReceiver(cfg).start()
    try:
        rx.storage.add_canteen("canteen-1", "第一小学食堂", "640502")
        rx.storage.add_device(device, "canteen-1", "box")
        box = _device_session(tls_port, device, password, certs / "ca.crt")
        try:
            alert = make_alert(device, 1)
            assert _publish(box, topic(device, "alert"), alert.model_dump_json().encode()) == 0
            other, _ = broker.add_device()
            assert _publish(box, topic(other, "alert"), make_alert(other, 1).model_dump_json().encode()) == 0x87
        finally:
            box.close()
        assert await async_wait_until(lambda: rx.storage.get_alert(alert.id) is not None)
    finally:
        await rx.stop()


def test_what_the_production_listeners_refuse(production_broker, tmp_path):
    broker, tls_port, certs = production_broker
    device, password = broker.add_device()
    other_ca = make_tls_files(tmp_path / "other", "other") / "ca.crt"
    with pytest.raises(RetryLater, match="CERTIFICATE_VERIFY_FAILED"):  # a broker certificate from another CA
        _device_session(tls_port, device, password, other_ca)
    with pytest.raises(RetryLater):  # plain MQTT on the TLS listener gets no CONNACK
        _device_session(tls_port, device, password, None, tls=False)
    with pytest.raises(RetryLater, match="refused"):  # a wrong password, over TLS
        _device_session(tls_port, device, "wrong", certs / "ca.crt")
    with pytest.raises(RetryLater, match="refused"):  # anonymous on the local listener
        _device_session(broker.port, None, None, None, tls=False)
    with socket.create_connection(("127.0.0.1", tls_port), timeout=2):
        pass  # the TLS listener is up (on 127.0.0.1 here; on all interfaces as installed)
