"""Push wiring in the running app: webhooks table → robots, new alerts from the hub → fake robots.

The robots are `test_push.FakeRobots`, a local imitation of the WeCom / DingTalk webhook API
(the real services cannot be reached from here).
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.api_kit import ago, jpeg, make_world
from support.fake_robots import SECRET, FakeRobots

from bk_contract import Alert
from cloud_receiver.api import API_CONTEXT
from cloud_receiver.push.robots import PushSettings
from cloud_receiver.push.wiring import add_webhook, robots_for

pytestmark = pytest.mark.integration


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
        self.queued: list[tuple[str, str, int | None]] = []

    def enqueue(self, robot, notice) -> None:
        self.queued.append((robot.id, notice.alert_id, notice.outbox_id))


def _statements(conn):
    """Record the tables each statement on `conn` reads or writes (sqlite3 trace callback)."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        words = sql.replace("(", " ").split()
        for key in ("FROM", "INTO", "UPDATE"):
            if key in words and words.index(key) + 1 < len(words):
                seen.append(f"{words[0]} {words[words.index(key) + 1]}")
                return
    conn.set_trace_callback(trace)
    return seen


async def test_alerts_owe_their_pushes_in_their_own_transaction_and_routing_reads_once_per_burst(tmp_path):
    """No robot: storing alerts reads the robots once per transaction and owes nothing. With robots, each new
    alert owes one outbox row per responsible robot (not its later revisions), and routing a burst reads the
    outbox, the robots, the alerts, canteens and cameras once each."""
    from support.api_kit import make_world

    from cloud_receiver.push.wiring import Router
    w = await make_world(tmp_path)
    try:
        with w.storage.batch():
            seen = _statements(w.storage.db.conn)
            for n in range(3):
                w.add_alert("C1", started_at=ago(minutes=1), alert_id=f"N{n}")
        assert seen.count("SELECT webhooks") == 1 and w.storage.count("push_outbox") == 0
        add_webhook(w.storage.db, "c1-wecom", "canteen", "C1", "wecom", "https://robot.invalid/send?key=k")
        add_webhook(w.storage.db, "sp-wecom", "jurisdiction", "6405", "wecom", "https://robot.invalid/send?key=j")
        add_webhook(w.storage.db, "c2-wecom", "canteen", "C2", "wecom", "https://robot.invalid/send?key=k2")
        with w.storage.batch():
            rows = [w.add_alert("C1", started_at=ago(minutes=1), alert_id=f"B{n}") for n in range(5)]
        again = Alert(id="B0", device_id=rows[0]["device_id"], camera_id="cam1", type="phone_use", rev=1,
                      started_at=ago(minutes=1))
        w.storage.upsert_alert(again, "2099-01-01T00:00:00.000Z")
        owed = w.storage.db.execute("SELECT robot_id, alert_id, owner FROM push_outbox ORDER BY id").fetchall()
        assert owed == [(r, f"B{n}", w.storage.push_owner) for n in range(5) for r in ("c1-wecom", "sp-wecom")]
        seen.clear()
        rec = _Recorder()
        router = Router(w.storage, PushSettings(), rec)
        high = router.route()
        assert sorted(set(seen)) == ["SELECT alerts", "SELECT cameras", "SELECT canteens", "SELECT push_outbox",
                                     "SELECT webhooks"]
        assert [(r, a) for r, a, _ in rec.queued] == [(r, f"B{n}") for n in range(5) for r in ("c1-wecom", "sp-wecom")]
        assert high == max(i for _, _, i in rec.queued)
        assert router.route(high) == high and len(rec.queued) == 10  # nothing twice
    finally:
        await w.client.close()


async def _restart(tmp_path, settings: PushSettings) -> TestClient:
    """The same receiver (same database, same client id) started again, API and push only."""
    from cloud_receiver.api import PUSH_SETTINGS
    from cloud_receiver.app.factory import create_app
    from cloud_receiver.config import ReceiverConfig, StorageConfig
    app = create_app(ReceiverConfig(storage=StorageConfig(path=tmp_path / "receiver.db", media_dir=tmp_path / "media")),
                     subscriber=False)
    app[PUSH_SETTINGS] = settings
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_pushes_owed_at_shutdown_are_sent_after_the_restart_exactly_once(tmp_path):
    """The robot is down while alerts arrive; the receiver stops with every push pending; after a restart
    (robot back) each alert reaches it once, and the next start sends nothing again."""
    from support.api_kit import make_world

    from cloud_receiver.api import API_CONTEXT
    fake = FakeRobots(fail_first=10**6)  # refuses everything for now
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    settings = PushSettings(retry_base_s=0.05, retry_max_s=0.1)
    try:
        w = await make_world(tmp_path, push_settings=settings)
        add_webhook(w.storage.db, "c1-wecom", "canteen", "C1", "wecom",
                    f"{str(server.make_url(''))}/cgi-bin/webhook/send?key=k1")
        for n in range(4):
            w.add_alert("C1", started_at=ago(minutes=5), alert_id=f"R{n}", publish=True)
        pusher = w.client.app[API_CONTEXT].pusher
        for _ in range(200):
            if "c1-wecom" in pusher.queues and pusher.queues["c1-wecom"].failures >= 2:
                break
            await asyncio.sleep(0.02)
        assert pusher.queues["c1-wecom"].failures >= 2 and fake.received == []
        failed = w.storage.db.execute("SELECT count(*) FROM push_outbox WHERE last_error IS NOT NULL"
                                      " AND sent_at IS NULL").fetchone()[0]
        assert failed >= 1
        await w.client.close()  # stops with 4 alerts owed
        assert fake.received == []

        fake.fail_first = fake.calls  # the robot is back
        for start in range(2):
            client = await _restart(tmp_path, settings)
            try:
                storage = client.app[API_CONTEXT].storage
                for _ in range(250):
                    if storage.db.execute("SELECT count(*) FROM push_outbox WHERE sent_at IS NULL").fetchone()[0] == 0:
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)
                assert storage.db.execute("SELECT count(*) FROM push_outbox WHERE sent_at IS NULL").fetchone()[0] == 0
                assert sum(_alerts_in(text) for _, _, text in fake.received) == 4, (start, fake.received)
            finally:
                await client.close()
    finally:
        await server.close()


def _alerts_in(text: str) -> int:
    """How many alerts a robot message carries: one, or the count a summary announces."""
    if text.startswith("【明厨亮灶预警汇总】共 "):
        return int(text.split("共 ")[1].split(" 条")[0])
    return 1


async def test_alerts_through_mqtt_owe_and_get_their_pushes(tmp_path):
    """Alerts ingested from a real broker owe their pushes in the ingest transaction and reach the robot once."""
    from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, receiver_config
    from support.waiting import async_wait_until

    from devkit.localbroker import running_broker
    fake = FakeRobots()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    device = "64050200001180000101"
    try:
        with running_broker(tmp_path / "broker") as broker:
            cfg = receiver_config(tmp_path, broker)
            rx = await RunningReceiver(cfg).start()
            try:
                rx.storage.add_canteen("canteen-1", "第一小学食堂", "640502")
                rx.storage.add_device(device, "canteen-1", "box")
                add_webhook(rx.storage.db, "j-wecom", "jurisdiction", "6405", "wecom",
                            f"{str(server.make_url(''))}/cgi-bin/webhook/send?key=k")
                dev = DeviceClient(broker, device)
                try:
                    for n in range(3):
                        dev.publish_alert(make_alert(device, n))
                    dev.publish_alert(make_alert(device, 0, rev=1, state="end"))  # a later revision owes nothing
                finally:
                    dev.close()
                assert await async_wait_until(lambda: sum(_alerts_in(t) for _, _, t in fake.received) == 3)
                assert await async_wait_until(lambda: rx.storage.db.execute(
                    "SELECT count(*) FROM push_outbox WHERE sent_at IS NOT NULL").fetchone()[0] == 3)
                owners = rx.storage.db.execute("SELECT DISTINCT owner FROM push_outbox").fetchall()
                assert owners == [(cfg.mqtt.client_id,)] and rx.storage.count("push_outbox") == 3
                assert all(text.startswith("【明厨亮灶预警") and "第一小学食堂" in text for _, _, text in fake.received)
            finally:
                await rx.stop()
    finally:
        await server.close()


async def test_a_push_that_could_not_be_routed_goes_out_once_its_robot_works(tmp_path, monkeypatch):
    """A DingTalk robot without its secret in the environment: its owed push waits (logged once) and is sent by
    the periodic rescan once the secret is there; exactly once."""
    import structlog
    from support.api_kit import make_world

    from cloud_receiver.push import wiring as pushwire
    monkeypatch.setattr(pushwire, "RESCAN_S", 0.2)
    monkeypatch.delenv("BK_TEST_LATE_SECRET", raising=False)
    fake = FakeRobots()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    try:
        w = await make_world(tmp_path, push_settings=PushSettings(retry_base_s=0.01))
        add_webhook(w.storage.db, "late-ding", "jurisdiction", "640502", "dingtalk",
                    f"{str(server.make_url(''))}/robot/send?access_token=t", "BK_TEST_LATE_SECRET")
        with structlog.testing.capture_logs() as logs:
            w.add_alert("C1", started_at=ago(minutes=5), alert_id="LATE1", publish=True)
            await asyncio.sleep(0.7)  # three rescans
            assert fake.received == []
            assert [e["event"] for e in logs].count("push_not_routable") == 1
        monkeypatch.setenv("BK_TEST_LATE_SECRET", SECRET)
        for _ in range(100):
            if fake.received:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert len(fake.received) == 1 and fake.bad_signatures == 0
        assert w.storage.db.execute("SELECT count(*) FROM push_outbox WHERE sent_at IS NULL").fetchone()[0] == 0
        await w.client.close()
    finally:
        await server.close()
