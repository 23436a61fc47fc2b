"""Receiver restarts: the persistent MQTT session and the idempotent store lose nothing and double nothing."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, receiver_config
from support.waiting import async_wait_until

from cloud_receiver.appkeys import SUBSCRIBER
from cloud_receiver.errors import StorageError
from cloud_receiver.ingest import codec
from devkit.localbroker import running_broker

pytestmark = pytest.mark.system

NO_MATCHING_SUBSCRIBERS = 0x10


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
        assert await async_wait_until(lambda: rx.storage.count("alerts") >= 60)
        await rx.stop()
        at_stop = rx.app[SUBSCRIBER].counts
        assert publisher.is_alive(), "the device must still be publishing while the receiver is down"
        await asyncio.get_running_loop().run_in_executor(None, publisher.join)
        dev.wait_all_acked()
        assert all(code == 0 for code in dev.pubacks.values()) and len(dev.pubacks) == total
        dev.close()

        rx2 = await RunningReceiver(cfg).start()
        try:
            assert await async_wait_until(lambda: rx2.storage.count("alerts") >= total, 20)
            # a marker published now is queued behind everything the broker still holds for the receiver:
            # once it is stored, every earlier message (a duplicate included) has been handled
            marker = make_alert(device_id, total)
            dev = DeviceClient(broker, device_id)
            assert dev.publish_alert(marker) == 0
            dev.close()
            assert await async_wait_until(lambda: rx2.storage.get_alert(marker.id) is not None, 10)
            ids = {r["id"] for r in rx2.storage.db.query("SELECT id FROM alerts")}
            assert ids == {make_alert(device_id, n).id for n in range(total + 1)}
            assert rx2.storage.count("alerts") == total + 1
            after = rx2.app[SUBSCRIBER].counts
            assert at_stop["stored"] + after["stored"] == total + 1
            assert at_stop["stored"] < total
        finally:
            await rx2.stop()


async def test_stored_but_unacknowledged_alerts_are_redelivered_and_not_doubled(tmp_path, monkeypatch):
    """A crash between the commit and the PUBACK: the broker redelivers, the store recognises every repeat."""
    count = 15  # below Mosquitto's max_inflight_messages (20): more unacknowledged ones would not be sent
    with running_broker(tmp_path / "broker") as broker:
        cfg = receiver_config(tmp_path, broker)
        rx = await RunningReceiver(cfg).start()
        device_id, _ = broker.add_device()
        _register(rx.storage, device_id)
        dev = DeviceClient(broker, device_id)
        with monkeypatch.context() as m:
            m.setattr(codec, "puback_packets", lambda ids: b"")  # the commit happens, the PUBACK never leaves
            try:
                for n in range(count):
                    dev.publish_alert(make_alert(device_id, n))
                assert await async_wait_until(lambda: rx.storage.count("alerts") == count)
            finally:
                dev.close()
                await rx.stop()

        rx2 = await RunningReceiver(cfg).start()
        try:
            assert await async_wait_until(lambda: rx2.app[SUBSCRIBER].counts.get("duplicate", 0) == count)
            assert rx2.storage.count("alerts") == count
            assert rx2.app[SUBSCRIBER].counts["stored"] == 0
        finally:
            await rx2.stop()


async def test_storage_failure_leaves_message_unacknowledged_until_stored(tmp_path):
    """While the store fails the message is not acknowledged; the subscriber reconnects, gets it again, stores it once."""
    with running_broker(tmp_path / "broker") as broker:
        cfg = receiver_config(tmp_path, broker)  # store_retries 3: four failed attempts, then reconnect
        rx = await RunningReceiver(cfg).start()
        device_id, _ = broker.add_device()
        _register(rx.storage, device_id)
        storage = rx.app[SUBSCRIBER]._ingestor.storage
        real_upsert = storage.upsert_alert
        failures = []

        def failing_upsert(alert, received_at):
            if len(failures) < 6:
                failures.append(alert.id)
                raise StorageError("disk I/O error (simulated)")
            return real_upsert(alert, received_at)

        storage.upsert_alert = failing_upsert
        dev = DeviceClient(broker, device_id)
        try:
            assert dev.publish_alert(make_alert(device_id, 1)) == 0
            assert dev.publish_alert(make_alert(device_id, 2)) == 0
            assert await async_wait_until(lambda: rx.storage.count("alerts") == 2)
            # a third alert, sent once the two are stored, arrives after any redelivery of them
            assert dev.publish_alert(make_alert(device_id, 3)) == 0
            assert await async_wait_until(lambda: rx.storage.get_alert(make_alert(device_id, 3).id) is not None)
            assert rx.storage.count("alerts") == 3 and rx.storage.count("rejects") == 0
            assert len(failures) == 6
            assert rx.app[SUBSCRIBER].counts == {"stored": 3, "duplicate": 0, "rejected": 0}
        finally:
            dev.close()
            await rx.stop()


@pytest.mark.parametrize("shared", [False, True])
async def test_broker_restart_receiver_reconnects_and_nothing_is_lost(tmp_path, shared):
    """Broker restart: plain subscriptions survive it; shared ones do not (Mosquitto 2.0), the device sees 0x10 and resends."""
    with running_broker(tmp_path / "broker") as broker:
        cfg = receiver_config(tmp_path, broker, mqtt={"shared": shared, "reconnect_min_s": 2.0, "reconnect_max_s": 2.0})
        rx = await RunningReceiver(cfg).start()
        try:
            device_id, _ = broker.add_device()
            _register(rx.storage, device_id)
            dev = DeviceClient(broker, device_id)
            assert dev.publish_alert(make_alert(device_id, 1)) == 0
            dev.close()
            assert await async_wait_until(lambda: rx.storage.count("alerts") == 1)
            broker.restart()
            dev = DeviceClient(broker, device_id)  # the receiver is still waiting 2 s before it reconnects
            codes = {n: dev.publish_alert(make_alert(device_id, n)) for n in range(2, 12)}
            assert not rx.app[SUBSCRIBER].connected.is_set(), "test premise: receiver not back yet"
            if shared:
                assert set(codes.values()) == {NO_MATCHING_SUBSCRIBERS}  # nobody holds them: the device must resend
                assert await async_wait_until(lambda: rx.app[SUBSCRIBER].subscribed.is_set(), 10)
                assert {dev.publish_alert(make_alert(device_id, n)) for n in codes} == {0}
            else:
                assert set(codes.values()) == {0}  # queued in the receiver's restored session
            dev.close()
            assert await async_wait_until(lambda: rx.storage.count("alerts") == 11, 15)
            # the counters follow the commit and its acknowledgements: wait for them too
            assert await async_wait_until(lambda: rx.app[SUBSCRIBER].counts["stored"] == 11, 5), rx.app[SUBSCRIBER].counts
        finally:
            await rx.stop()
