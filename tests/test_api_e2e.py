"""End to end: a device publishes an alert over a real Mosquitto; the receiver stores it, the API
lists it, the SSE stream announces it and the push reaches a fake robot (`test_push.FakeRobots`,
a local imitation of the WeCom webhook: the real service is unreachable here)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.fake_robots import FakeRobots
from support.receiver_harness import DeviceClient, make_alert, receiver_config
from support.waiting import async_wait_until

from cloud_receiver.admin import auth
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from cloud_receiver.push.wiring import add_webhook
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

DEVICE = "64050200001180000077"


async def test_mqtt_alert_to_api_stream_and_robot(tmp_path):
    """An alert published by a device appears in /alerts, on the regulator's stream and at the robot."""
    fake = FakeRobots()
    robot_server = TestServer(fake.app, host="127.0.0.1")
    await robot_server.start_server()
    with running_broker(tmp_path / "broker") as broker:
        client = TestClient(TestServer(create_app(receiver_config(tmp_path, broker)), host="127.0.0.1"))
        await client.start_server()
        try:
            app = client.app
            assert await async_wait_until(lambda: app[SUBSCRIBER].subscribed.is_set(), 10)
            storage = app[STORAGE]
            storage.add_canteen("C1", "第一中学食堂", "64050201")
            storage.add_device(DEVICE, "C1", "box")
            token = auth.create_token(storage.sql, "regulator", "640502", "reg")
            add_webhook(storage.sql, "w", "canteen", "C1", "wecom", str(robot_server.make_url("/cgi-bin/webhook/send")))
            headers = {"Authorization": f"Bearer {token}"}
            stream = await client.get("/api/v1/alerts/stream", headers=headers)
            assert stream.status == 200
            while not (await stream.content.readline()).startswith(b": connected"):
                pass

            device = DeviceClient(broker, DEVICE)
            try:
                assert device.publish_alert(make_alert(DEVICE, 1)) == 0
            finally:
                device.close()

            data = None
            while data is None:
                line = (await asyncio.wait_for(stream.content.readline(), 10)).decode()
                if line.startswith("data: "):
                    data = json.loads(line[6:])
            assert data["id"] == f"A000001-{DEVICE[-4:]}" and data["canteen_id"] == "C1"
            stream.close()
            listed = await (await client.get("/api/v1/alerts", headers=headers)).json()
            assert [a["id"] for a in listed["items"]] == [data["id"]]
            assert await async_wait_until(lambda: len(fake.received) == 1, 5)
            assert "第一中学食堂 cam1 检测到 玩手机" in fake.received[0][2]
        finally:
            await client.close()
            await robot_server.close()
