"""The command channel end to end: the console's API → the receiver → Mosquitto (dynamic security) →
the real agent reading a real clip → `cmd/result` back into the receiver's database."""

from __future__ import annotations

import os

import pytest
from support.agent_harness import PersonEverywhere, Running, agent_config
from support.command_api import CommandApi
from support.footage import clip_1080p
from support.receiver_harness import DeviceClient, receiver_config, receiver_with_box
from support.waiting import async_wait_until

from bk_contract import topic
from cloud_receiver.admin import auth
from cloud_receiver.appkeys import STORAGE
from cloud_receiver.control import commands as control
from devkit.localbroker import running_broker
from edge_agent.app.agent import PipelineTuning

pytestmark = pytest.mark.integration

DEV = "64050200001180000001"  # the agent harness's device id


async def test_status_and_snapshot_commands_reach_the_box_and_come_back(tmp_path):
    """status and snapshot_now go to the box and their results come back; the snapshot arrives as media;
    a canteen may not push a config; a replayed command and another device's forged command get nowhere."""
    with running_broker(tmp_path / "broker", dynsec=True) as broker:
        _, password = broker.add_device(DEV)
        os.environ["BK_TEST_DEVICE_PASSWORD"] = password
        cfg = agent_config(tmp_path, [{"id": "cam1", "source": {"type": "file", "url": str(clip_1080p("carphone_pristine.mp4"))}}],
                           uplink={"enabled": True, "broker": {"host": broker.host, "port": broker.port,
                                                               "password_env": "BK_TEST_DEVICE_PASSWORD"}})
        async with receiver_with_box(receiver_config(tmp_path, broker), DEV) as client:
            storage = client.app[STORAGE]
            admin = CommandApi(client, auth.create_token(storage.sql, "admin", "", "ops"), DEV)
            canteen = CommandApi(client, auth.create_token(storage.sql, "canteen", "C1", "c1-manager"), DEV)
            with Running(cfg, detector=PersonEverywhere(), tuning=PipelineTuning(housekeeping_s=0.2)) as run:
                status, sent = await admin.send({"name": "status"})
                # the answer shows the command's state when it was published: the box may have answered already
                assert status == 200 and sent["state"] in ("pending", "ok") and sent["issuer"] == "ops"
                done = await admin.answer(sent["id"])
                assert done["state"] == "ok" and done["data"]["cameras"] == 1, done

                run.wait_for(lambda: run.agent.cameras["cam1"].worker.latest_detect is not None, 20, "a decoded frame")
                status, shot = await canteen.send({"name": "snapshot_now", "camera_id": "cam1"})
                assert status == 200
                done = await canteen.answer(shot["id"])
                assert done["state"] == "ok" and done["data"]["width"] > 0, done
                media = f"/api/v1/media/{done['data']['sha256']}"

                async def media_arrived() -> bool:
                    r = await client.get(media, headers=canteen.headers)
                    return r.status == 200 and r.content_type == "image/jpeg"
                assert await async_wait_until(media_arrived, 20, step=0.3)

                status, body = await canteen.send({"name": "config_push", "args": {"config": "x"}},
                                                  until_delivered=False)
                assert status == 403 and "config_push" in body["error"]["message"]

                status, missing = await admin.send({"name": "snapshot_now", "camera_id": "cam9"})
                failed = await admin.answer(missing["id"])
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


def control_now():
    from datetime import UTC, datetime
    return datetime.now(UTC)
