"""Receiver restarts: the persistent MQTT session and the idempotent store lose nothing and double nothing."""

from __future__ import annotations

import asyncio
import threading
import time

from brokerkit import running_broker
from test_receiver_support import DeviceClient, RunningReceiver, make_alert, receiver_config, wait_for

from cloud_receiver.app import SUBSCRIBER


def _register(storage, device_id):
    storage.add_canteen("canteen-1", "第一小学食堂", "640502")
    storage.add_device(device_id, "canteen-1", "box")


async def test_restart_mid_stream_stores_every_alert_exactly_once(tmp_path):
    """Stop the receiver while a device keeps publishing QoS 1 alerts, start it again: every alert stored once."""
    total = 400
    with running_broker(tmp_path / "broker") as broker:
        cfg = receiver_config(tmp_path, broker)
        rx = await RunningReceiver(cfg).start()
        device_id, _ = broker.add_device()
        _register(rx.storage, device_id)
        dev = DeviceClient(broker, device_id)

        def publish_all() -> None:
            for n in range(total):
                dev.publish_alert(make_alert(device_id, n), wait=False)
                time.sleep(0.002)

        publisher = threading.Thread(target=publish_all, name="test-device-publisher")
        publisher.start()
        assert await wait_for(lambda: rx.storage.count("alerts") >= 60)
        await rx.stop()
        at_stop = rx.app[SUBSCRIBER].counts
        assert publisher.is_alive(), "the device must still be publishing while the receiver is down"
        await asyncio.get_running_loop().run_in_executor(None, publisher.join)
        dev.wait_all_acked()
        assert all(code == 0 for code in dev.pubacks.values()) and len(dev.pubacks) == total
        dev.close()

        rx2 = await RunningReceiver(cfg).start()
        try:
            assert await wait_for(lambda: rx2.storage.count("alerts") >= total, 20)
            await asyncio.sleep(0.3)  # anything still arriving would be a duplicate: it must not add rows
            ids = {r["id"] for r in rx2.storage.db.query("SELECT id FROM alerts")}
            assert ids == {make_alert(device_id, n).id for n in range(total)}
            assert rx2.storage.count("alerts") == total
            after = rx2.app[SUBSCRIBER].counts
            assert at_stop["stored"] + after["stored"] == total
            assert at_stop["stored"] < total
        finally:
            await rx2.stop()


async def test_stored_but_unacknowledged_alerts_are_redelivered_and_not_doubled(tmp_path):
    """A crash between the commit and the PUBACK: the broker redelivers, the store recognises every repeat."""
    count = 15  # below Mosquitto's max_inflight_messages (20): more unacknowledged ones would not be sent
    with running_broker(tmp_path / "broker") as broker:
        cfg = receiver_config(tmp_path, broker)
        rx = await RunningReceiver(cfg).start()
        device_id, _ = broker.add_device()
        _register(rx.storage, device_id)
        rx.app[SUBSCRIBER].client.ack = lambda mid, qos: 0  # the commit happens, the PUBACK never leaves
        dev = DeviceClient(broker, device_id)
        try:
            for n in range(count):
                dev.publish_alert(make_alert(device_id, n))
            assert await wait_for(lambda: rx.storage.count("alerts") == count)
        finally:
            dev.close()
            await rx.stop()

        rx2 = await RunningReceiver(cfg).start()
        try:
            assert await wait_for(lambda: rx2.app[SUBSCRIBER].counts.get("duplicate", 0) == count)
            assert rx2.storage.count("alerts") == count
            assert rx2.app[SUBSCRIBER].counts["stored"] == 0
        finally:
            await rx2.stop()
