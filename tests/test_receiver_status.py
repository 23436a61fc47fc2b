"""Status (retained, last will), telemetry and command results from a device through a real broker."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from support.receiver_harness import DeviceClient, RunningReceiver, receiver_config
from support.waiting import async_wait_until

from bk_contract import CameraHealth, CommandResult, Status, Telemetry, topic
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 8, tzinfo=UTC)


async def test_status_will_telemetry_and_command_result_are_stored(tmp_path):
    """Online status fills devices and cameras; the last will marks the device offline; telemetry and cmd results kept."""
    with running_broker(tmp_path / "broker") as broker:
        rx = await RunningReceiver(receiver_config(tmp_path, broker)).start()
        try:
            device_id, _ = broker.add_device()
            rx.storage.add_canteen("c1", "第一小学食堂", "640502")
            rx.storage.add_device(device_id, "c1", "box")
            box = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="box", protocol=mqtt.MQTTv5)
            offline = Status(device_id=device_id, online=False, version="1.2.0", ts=NOW)
            box.will_set(topic(device_id, "status"), offline.model_dump_json(), qos=1, retain=True)
            connected = threading.Event()
            box.on_connect = lambda *_a: connected.set()
            box.connect(broker.host, broker.port)
            box.loop_start()
            assert connected.wait(5)
            online = Status(device_id=device_id, online=True, version="1.2.0", ts=NOW, cameras=[
                CameraHealth(id="cam1", name="后厨", state="online", fps=5.0),
                CameraHealth(id="cam2", name="洗消间", state="offline", reconnects=3, error="timeout")])
            box.publish(topic(device_id, "status"), online.model_dump_json(), qos=1, retain=True).wait_for_publish(5)
            assert await async_wait_until(lambda: rx.storage.get_device(device_id)["online"] == 1)
            dev = rx.storage.get_device(device_id)
            assert dev["version"] == "1.2.0" and dev["last_seen"] and json.loads(dev["status_json"])["online"] is True
            cams = {c["camera_id"]: c for c in rx.storage.db.query("SELECT * FROM cameras ORDER BY camera_id")}
            assert (cams["cam1"]["state"], cams["cam1"]["name"]) == ("online", "后厨")
            assert (cams["cam2"]["state"], cams["cam2"]["reconnects"], cams["cam2"]["error"]) == ("offline", 3, "timeout")

            tele = Telemetry(device_id=device_id, ts=NOW, fps={"cam1": 5.0}, inference_ms=41.5, outbox_depth=7)
            box.publish(topic(device_id, "telemetry"), tele.model_dump_json(), qos=0)
            box.publish(topic(device_id, "telemetry"), tele.model_copy(update={"outbox_depth": 3}).model_dump_json(), qos=0)
            result = CommandResult(id="cmd-1", ok=False, error="camera busy")
            box.publish(topic(device_id, "cmd/result"), result.model_dump_json(), qos=1).wait_for_publish(5)
            assert await async_wait_until(lambda: rx.storage.count("command_results") == 1)
            assert await async_wait_until(lambda: json.loads(
                (rx.storage.db.execute("SELECT data_json FROM telemetry").fetchone() or ["{}"])[0]).get("outbox_depth") == 3)
            assert rx.storage.count("telemetry") == 1  # only the latest values are kept
            row = next(iter(rx.storage.db.query("SELECT * FROM command_results")))
            assert (row["command_id"], row["ok"], row["error"]) == ("cmd-1", 0, "camera busy")

            # the box dies: the broker publishes its will, the receiver marks it offline
            box.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
            box.loop_stop()
            assert await async_wait_until(lambda: rx.storage.get_device(device_id)["online"] == 0)
            assert rx.storage.count("rejects") == 0
        finally:
            await rx.stop()


async def test_status_of_another_device_in_payload_is_rejected(tmp_path):
    """A status whose device_id differs from its topic's is rejected and changes nothing."""
    with running_broker(tmp_path / "broker") as broker:
        rx = await RunningReceiver(receiver_config(tmp_path, broker)).start()
        try:
            a, b = "64050200001180000201", "64050200001180000202"
            rx.storage.add_canteen("c1", "一小", "640502")
            rx.storage.add_device(a, "c1")
            rx.storage.add_device(b, "c1")
            dev = DeviceClient(broker, a)
            dev.publish(topic(a, "status"), Status(device_id=b, online=True, ts=NOW).model_dump_json())
            dev.close()
            assert await async_wait_until(lambda: rx.storage.count("rejects") == 1)
            assert rx.storage.get_device(b)["online"] == 0 and rx.storage.get_device(a)["online"] == 0
        finally:
            await rx.stop()
