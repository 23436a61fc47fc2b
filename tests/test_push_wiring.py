"""Push wiring in the running app: webhooks table → robots, new alerts from the hub → fake robots.

The robots are `test_push.FakeRobots`, a local imitation of the WeCom / DingTalk webhook API
(the real services cannot be reached from here).
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestServer
from api_kit import ago, jpeg, make_world
from test_push import SECRET, FakeRobots

from bk_contract import Alert
from cloud_receiver.api import API_CONTEXT
from cloud_receiver.api.pushwire import add_webhook, robots_for
from cloud_receiver.push import PushSettings


@pytest.fixture
async def setup(tmp_path, monkeypatch):
    fake = FakeRobots()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url(""))
    monkeypatch.setenv("BK_TEST_DINGTALK_SECRET", SECRET)
    w = await make_world(tmp_path, push_settings=PushSettings(public_base_url="https://bk.example", retry_base_s=0.01))
    add_webhook(w.storage.db, "c1-wecom", "canteen", "C1", "wecom", f"{base}/cgi-bin/webhook/send?key=k1")
    add_webhook(w.storage.db, "sp-ding", "jurisdiction", "640502", "dingtalk", f"{base}/robot/send?access_token=t",
                "BK_TEST_DINGTALK_SECRET")
    add_webhook(w.storage.db, "broken", "jurisdiction", "640521", "dingtalk", f"{base}/robot/send?access_token=u",
                "BK_TEST_UNSET_SECRET")
    yield w, fake
    await w.client.close()
    await server.close()


async def _settle(w, n_msgs, fake, timeout=5.0):
    pusher = w.client.app[API_CONTEXT].pusher
    for _ in range(int(timeout / 0.02)):
        if len(fake.received) >= n_msgs and pusher.pending_count() == 0:
            return
        await asyncio.sleep(0.02)


async def test_new_alert_reaches_canteen_and_jurisdiction_robots(setup):
    """A new C1 alert goes to C1's WeCom robot and the 640502 DingTalk robot, signed, in Chinese."""
    w, fake = setup
    row = w.add_alert("C1", started_at=ago(minutes=5), alert_id="PUSH1", type="no_mask", publish=True,
                      snapshot=jpeg("push1"))
    await _settle(w, 2, fake)
    kinds = sorted(k for _, k, _ in fake.received)
    assert kinds == ["dingtalk", "wecom"] and fake.bad_signatures == 0
    text = fake.received[0][2]
    assert text.startswith("【明厨亮灶预警】第一中学食堂 后厨1 检测到 未戴口罩")
    assert text.endswith(f"前整改。查看：https://bk.example/api/v1/media/{row['snapshot_sha256']}")
    # a later revision of the same alert is not pushed again
    newer = Alert(id="PUSH1", device_id=row["device_id"], camera_id="cam1", type="no_mask", rev=1, state="end",
                  started_at=ago(minutes=5))
    w.client.app[API_CONTEXT].hub.publish(w.storage.upsert_alert(newer, "2099-01-01T00:00:00.000Z").row)
    await asyncio.sleep(0.2)
    assert len(fake.received) == 2


async def test_out_of_scope_and_missing_secret(setup):
    """A C3 alert reaches no working robot: its robot's secret env is unset, so it is skipped and logged."""
    w, fake = setup
    assert robots_for(w.storage.db, "C3", "64052101") == []
    assert [r.id for r in robots_for(w.storage.db, "C2", "64050202")] == ["sp-ding"]
    w.add_alert("C3", started_at=ago(minutes=5), alert_id="PUSH3", publish=True)
    await asyncio.sleep(0.2)
    assert fake.received == []


async def test_add_webhook_validates(setup):
    """Bad webhook settings are refused."""
    w, _ = setup
    with pytest.raises(ValueError):
        add_webhook(w.storage.db, "x", "province", "64", "wecom", "https://x")
    with pytest.raises(ValueError):
        add_webhook(w.storage.db, "x", "canteen", "C1", "wecom", "ftp://x")


class _Recorder:
    """Stands in for the Pusher: records what the router queues."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, str]] = []

    def enqueue(self, robot, notice) -> None:
        self.queued.append((robot.id, notice.alert_id))


async def test_route_burst_reads_the_database_once_per_burst(tmp_path):
    """No robot: one query for a burst of alerts; with a robot: one webhooks, one canteen and one camera query per burst."""
    from api_kit import make_world

    from cloud_receiver.api.pushwire import route_burst
    w = await make_world(tmp_path)
    try:
        rows = [w.add_alert("C1", started_at=ago(minutes=1), alert_id=f"B{n}") for n in range(5)]
        queries: list[str] = []

        class CountingDb:
            def execute(self, sql, params=()):
                queries.append(sql.split()[0] + " " + sql.split("FROM")[1].split()[0])
                return w.storage.db.execute(sql, params)

        rec = _Recorder()
        assert route_burst(CountingDb(), rows, PushSettings(), rec) == 0
        assert queries == ["SELECT webhooks"] and rec.queued == []
        add_webhook(w.storage.db, "c1-wecom", "canteen", "C1", "wecom", "https://robot.invalid/send?key=k")
        add_webhook(w.storage.db, "c2-wecom", "canteen", "C2", "wecom", "https://robot.invalid/send?key=k2")
        queries.clear()
        assert route_burst(CountingDb(), rows, PushSettings(), rec) == 5
        assert queries == ["SELECT webhooks", "SELECT canteens", "SELECT cameras"]
        assert rec.queued == [("c1-wecom", f"B{n}") for n in range(5)]
    finally:
        await w.client.close()
