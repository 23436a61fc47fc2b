"""Broker-side confinement with Mosquitto's dynamic-security plugin, provisioned by the receiver's code."""

from __future__ import annotations

import asyncio

import pytest
from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, receiver_config
from support.waiting import async_wait_until

from bk_contract import topic
from cloud_receiver.appkeys import SUBSCRIBER
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87


@pytest.fixture
def broker(tmp_path):
    with running_broker(tmp_path / "broker", dynsec=True) as b:
        yield b


def test_publish_under_another_devices_prefix_is_refused_with_0x87(broker):
    """A device publishing under another device's prefix gets PUBACK 0x87 Not authorized; its own prefix is accepted."""
    mine, mine_pw = broker.add_device()
    other, _ = broker.add_device()
    dev = DeviceClient(broker, mine, mine_pw)
    try:
        assert dev.publish(topic(other, "alert"), make_alert(other, 1).model_dump_json()) == NOT_AUTHORIZED
        assert dev.publish(topic(other, "status"), b"{}") == NOT_AUTHORIZED
        assert dev.publish("bk/v1/alert", b"{}") == NOT_AUTHORIZED
        # accepted: 0x10 "No matching subscribers" is a success code (nobody subscribed in this test)
        assert dev.publish(topic(mine, "alert"), make_alert(mine, 1).model_dump_json()) in (0x00, 0x10)
    finally:
        dev.close()


def test_wrong_password_and_unknown_device_cannot_connect(broker):
    """Without the issued password a device does not get in at all."""
    mine, _ = broker.add_device()
    with pytest.raises(AssertionError, match="could not connect"):
        DeviceClient(broker, mine, "wrong-password")
    with pytest.raises(AssertionError, match="could not connect"):
        DeviceClient(broker, "64050200001189999999", "whatever")


async def test_device_cannot_join_receivers_group_and_receivers_get_every_alert(broker, tmp_path):
    """A device subscribing to the receivers' shared group or others' topics is refused; two receivers still store every alert."""
    rx1 = await RunningReceiver(receiver_config(tmp_path, broker, client_id="bk-receiver-a")).start()
    rx2 = await RunningReceiver(receiver_config(tmp_path, broker, client_id="bk-receiver-b")).start()
    thief_id, thief_pw = broker.add_device()
    honest_id, honest_pw = broker.add_device()
    rx1.storage.add_canteen("canteen-1", "第一小学食堂", "640502")
    for d in (thief_id, honest_id):
        rx1.storage.add_device(d, "canteen-1", "box")
    thief = DeviceClient(broker, thief_id, thief_pw)
    honest = DeviceClient(broker, honest_id, honest_pw)
    try:
        for stolen in ("$share/receivers/bk/v1/+/alert", "$share/receivers/bk/v1/#", f"bk/v1/{honest_id}/alert",
                       f"bk/v1/{honest_id}/cmd", "bk/v1/+/alert", "#"):
            codes = thief.subscribe(stolen)
            assert len(codes) == 1 and codes[0] >= 0x80, (stolen, codes)
        assert thief.subscribe(f"bk/v1/{thief_id}/cmd") == [1]  # its own command topic is allowed

        per_device = 40
        for n in range(per_device):
            assert honest.publish_alert(make_alert(honest_id, n)) == 0
            assert thief.publish_alert(make_alert(thief_id, n)) == 0
        total = 2 * per_device
        assert await async_wait_until(lambda: rx1.storage.count("alerts") >= total, 15)
        await asyncio.sleep(0.2)
        assert rx1.storage.count("alerts") == total
        stored = [rx.app[SUBSCRIBER].counts["stored"] for rx in (rx1, rx2)]
        assert sum(stored) == total and min(stored) > 0  # shared: both receivers took part
        assert thief.received == []
        assert rx1.storage.count("rejects") == 0
    finally:
        thief.close()
        honest.close()
        await rx1.stop()
        await rx2.stop()
