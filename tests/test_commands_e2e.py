"""The command channel end to end: the console's API → the receiver → Mosquitto (dynamic security) →
the real agent reading a real clip → `cmd/result` back into the receiver's database."""

from __future__ import annotations

import os

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.agent_harness import PersonEverywhere, Running, agent_config
from support.footage import clip_1080p
from support.receiver_harness import DeviceClient, receiver_config
from support.waiting import async_wait_until

from bk_contract import topic
from cloud_receiver.admin import auth
from cloud_receiver.app.factory import create_app
from cloud_receiver.appkeys import STORAGE, SUBSCRIBER
from cloud_receiver.control import commands as control
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.integration

DEV = "64050200001180000001"  # the agent harness's device id


async def _send(client: TestClient, token: str, body: dict, *, until_delivered: bool = True) -> dict:
    """POST a command; while the box is still subscribing, the broker has nobody to give it to (503): retry."""
    headers = {"Authorization": f"Bearer {token}"}
    answers: list = []

    async def sent() -> bool:
        r = await client.post(f"/api/v1/devices/{DEV}/commands", json=body, headers=headers)
        answers.append((r.status, await r.json()))
        return r.status != 503 or not until_delivered
    assert await async_wait_until(sent, 20, step=0.3), f"never delivered: {answers[-1]}"
    return answers[-1]


async def _result(client: TestClient, token: str, command_id: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    seen: list = []

    async def answered() -> bool:
        seen.append(await (await client.get(f"/api/v1/devices/{DEV}/commands/{command_id}", headers=headers)).json())
        return seen[-1]["state"] != "pending"
    assert await async_wait_until(answered, 20, step=0.2), f"no answer: {seen[-1]}"
    return seen[-1]


async def test_status_and_snapshot_commands_reach_the_box_and_come_back(tmp_path):
    """status and snapshot_now go to the box and their results come back; the snapshot arrives as media;
    a canteen may not push a config; a replayed command and another device's forged command get nowhere."""
    with running_broker(tmp_path / "broker", dynsec=True) as broker:
        _, password = broker.add_device(DEV)
        os.environ["BK_TEST_DEVICE_PASSWORD"] = password
        client = TestClient(TestServer(create_app(receiver_config(tmp_path, broker)), host="127.0.0.1"))
        await client.start_server()
        cfg = agent_config(tmp_path, [{"id": "cam1", "source": {"type": "file", "url": str(clip_1080p("carphone_pristine.mp4"))}}],
                           uplink={"enabled": True, "broker": {"host": broker.host, "port": broker.port,
                                                               "password_env": "BK_TEST_DEVICE_PASSWORD"}})
        try:
            assert await async_wait_until(lambda: client.app[SUBSCRIBER].subscribed.is_set(), 10)
            storage = client.app[STORAGE]
            storage.add_canteen("C1", "第一中学食堂", "64050201")
            storage.add_device(DEV, "C1", "box")
            admin = auth.create_token(storage.sql, "admin", "", "ops")
            canteen = auth.create_token(storage.sql, "canteen", "C1", "c1-manager")
            with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
                status, sent = await _send(client, admin, {"name": "status"})
                assert status == 200 and sent["state"] == "pending" and sent["issuer"] == "ops"
                done = await _result(client, admin, sent["id"])
                assert done["state"] == "ok" and done["data"]["cameras"] == 1, done

                run.wait_for(lambda: run.agent.cameras["cam1"].worker.latest_detect is not None, 20, "a decoded frame")
                status, shot = await _send(client, canteen, {"name": "snapshot_now", "camera_id": "cam1"})
                assert status == 200
                done = await _result(client, canteen, shot["id"])
                assert done["state"] == "ok" and done["data"]["width"] > 0, done
                media = f"/api/v1/media/{done['data']['sha256']}"

                async def media_arrived() -> bool:
                    r = await client.get(media, headers={"Authorization": f"Bearer {canteen}"})
                    return r.status == 200 and r.content_type == "image/jpeg"
                assert await async_wait_until(media_arrived, 20, step=0.3)

                status, body = await _send(client, canteen, {"name": "config_push", "args": {"config": "x"}},
                                           until_delivered=False)
                assert status == 403 and "config_push" in body["error"]["message"]

                status, missing = await _send(client, admin, {"name": "snapshot_now", "camera_id": "cam9"})
                failed = await _result(client, admin, missing["id"])
                assert failed["state"] == "failed" and "no camera 'cam9'" in failed["error"]

                # a replay: the receiver's own credentials publish an already answered command again
                stored = storage.sql.rows("SELECT * FROM commands WHERE id = :id", id=sent["id"])[0]
                replay = control.new_command("status", "ops", control_now()).model_copy(update={
                    "id": stored["id"], "issued_at": control_now()})
                sender = DeviceClient(broker, broker.receiver[0], broker.receiver[1], client_id="replayer")
                try:
                    assert sender.publish(topic(DEV, "cmd"), replay.model_dump_json()) == 0
                finally:
                    sender.close()
                assert await async_wait_until(lambda: "replayed" in (storage.sql.rows(
                    "SELECT error FROM command_results WHERE command_id = :id", id=sent["id"])[0]["error"] or ""), 10)

                # another box may not command this one: the broker refuses the publish (not authorized)
                other, other_pw = broker.add_device()
                forger = DeviceClient(broker, other, other_pw)
                try:
                    forged = control.new_command("status", "forger", control_now())
                    assert forger.publish(topic(DEV, "cmd"), forged.model_dump_json()) == 0x87
                finally:
                    forger.close()
                assert run.agent.commands is not None and run.agent.commands.counts["done"] == 2
        finally:
            await client.close()


def control_now():
    from datetime import UTC, datetime
    return datetime.now(UTC)
