"""Push wiring in the running app: webhooks table → robots, new alerts from the hub → fake robots.

The robots are `test_push.FakeRobots`, a local imitation of the WeCom / DingTalk webhook API
(the real services cannot be reached from here).
"""

from __future__ import annotations

import pytest
import sqlalchemy
import structlog
from aiohttp.test_utils import TestClient, TestServer
from support.api_kit import ago, jpeg, make_world
from support.fake_robots import SECRET, FakeRobots
from support.waiting import async_wait_for

from bk_contract import Alert
from bk_contract.violations import type_name
from cloud_receiver.api import API_CONTEXT
from cloud_receiver.push.robots import PushSettings
from cloud_receiver.push.wiring import add_webhook, robots_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def setup(tmp_path, monkeypatch, db_engine):
    fake = FakeRobots()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url(""))
    monkeypatch.setenv("BK_TEST_DINGTALK_SECRET", SECRET)
    w = await make_world(tmp_path, db_engine, push_settings=PushSettings(public_base_url="https://bk.example",
                                                                         retry_base_s=0.01))
    add_webhook(w.storage.sql, "c1-wecom", "canteen", "C1", "wecom", f"{base}/cgi-bin/webhook/send?key=k1")
    add_webhook(w.storage.sql, "sp-ding", "jurisdiction", "640502", "dingtalk", f"{base}/robot/send?access_token=t",
                "BK_TEST_DINGTALK_SECRET")
    add_webhook(w.storage.sql, "broken", "jurisdiction", "640521", "dingtalk", f"{base}/robot/send?access_token=u",
                "BK_TEST_UNSET_SECRET")
    yield w, fake
    await w.close()
    await server.close()


async def _settle(w, n_msgs, fake, timeout=5.0):
    """Wait until the robots got `n_msgs` messages and the pusher holds nothing more."""
    pusher = w.client.app[API_CONTEXT].pusher
    await async_wait_for(lambda: len(fake.received) >= n_msgs and pusher.pending_count() == 0, timeout,
                         f"{n_msgs} robot messages and an idle pusher")


async def test_new_alert_reaches_canteen_and_jurisdiction_robots(setup):
    """A new C1 alert goes to C1's WeCom robot and the 640502 DingTalk robot, signed, in Chinese; its later
    revision is not pushed again (a new alert routed after it reaches the robots alone)."""
    w, fake = setup
    row = w.add_alert("C1", started_at=ago(minutes=5), alert_id="PUSH1", type="no_mask", publish=True,
                      snapshot=jpeg("push1"))
    await _settle(w, 2, fake)
    kinds = sorted(k for _, k, _ in fake.received)
    assert kinds == ["dingtalk", "wecom"] and fake.bad_signatures == 0
    text = fake.received[0][2]
    assert text.startswith("【明厨亮灶预警】第一中学食堂 后厨1 检测到 未戴口罩")
    assert text.endswith(f"前整改。查看：https://bk.example/alerts/{row['id']}")  # the console's page of the alert
    newer = Alert(id="PUSH1", device_id=row["device_id"], camera_id="cam1", type="no_mask", rev=1, state="end",
                  started_at=ago(minutes=5))
    w.client.app[API_CONTEXT].hub.publish(w.storage.upsert_alert(newer, "2099-01-01T00:00:00.000Z").row)
    # the proof that the revision's announcement was routed: a new alert announced after it reaches both robots;
    # each robot's messages leave in order, so a push owed for the revision would have arrived first
    w.add_alert("C1", started_at=ago(minutes=4), alert_id="PUSH2", type="smoking", publish=True)
    await _settle(w, 4, fake)
    later = [text for _, _, text in fake.received[2:]]
    assert len(later) == 2 and all(f"检测到 {type_name('smoking')}" in t for t in later), fake.received


async def test_out_of_scope_and_missing_secret(setup):
    """A C3 alert reaches no working robot: its robot's secret env is unset, so the router skips it and logs
    why; pushing is on (a C1 alert announced after it reaches both C1 robots) and nothing went out for C3."""
    w, fake = setup
    assert robots_for(w.storage.sql, "C3", "64052101") == []
    assert [r.id for r in robots_for(w.storage.sql, "C2", "64050202")] == ["sp-ding"]
    pusher = w.client.app[API_CONTEXT].pusher
    assert pusher is not None, "pushing must be enabled for this test to mean anything"
    with structlog.testing.capture_logs() as logs:
        w.add_alert("C3", started_at=ago(minutes=5), alert_id="PUSH3", publish=True)
        owed = w.storage.sql.rows("SELECT robot_id FROM push_outbox WHERE alert_id = 'PUSH3'")
        assert owed == [{"robot_id": "broken"}]  # the C3 alert owes a push to its (broken) jurisdiction robot
        skipped = await async_wait_for(lambda: [e for e in logs if e["event"] == "push_not_routable"], 5,
                                       "the router to log the skipped push")
        w.add_alert("C1", started_at=ago(minutes=4), alert_id="AFTER3", type="smoking", publish=True)
        await _settle(w, 2, fake)
    assert [(e["alert_id"], e["robot"], e["log_level"]) for e in skipped] == [("PUSH3", "broken", "error")]
    assert "without its secret" in skipped[0]["reason"]
    missing = [e for e in logs if e["event"] == "push_secret_missing"]
    assert missing and all((e["robot"], e["secret_env"]) == ("broken", "BK_TEST_UNSET_SECRET") for e in missing)
    assert sorted(k for _, k, _ in fake.received) == ["dingtalk", "wecom"]
    assert all("第一中学食堂" in text and "中宁一中食堂" not in text for _, _, text in fake.received)
    unsent = w.storage.sql.rows("SELECT robot_id FROM push_outbox WHERE alert_id = 'PUSH3' AND sent_at IS NULL")
    assert unsent == [{"robot_id": "broken"}]  # still owed, for when its secret is set


async def test_add_webhook_validates(setup):
    """Bad webhook settings are refused."""
    w, _ = setup
    with pytest.raises(ValueError):
        add_webhook(w.storage.sql, "x", "province", "64", "wecom", "https://x")
    with pytest.raises(ValueError):
        add_webhook(w.storage.sql, "x", "canteen", "C1", "wecom", "ftp://x")


class _Recorder:
    """Stands in for the Pusher: records what the router queues."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, str, int | None]] = []

    def enqueue(self, robot, notice) -> None:
        self.queued.append((robot.id, notice.alert_id, notice.outbox_id))


def _statements(conn=None, engine=None):
    """Record the tables each statement on `conn` (sqlite3 trace callback) or `engine` (SQLAlchemy) reads or writes."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        words = sql.replace("(", " ").split()
        for key in ("FROM", "INTO", "UPDATE"):
            if key in words and words.index(key) + 1 < len(words):
                seen.append(f"{words[0]} {words[words.index(key) + 1]}")
                return
    if conn is not None:
        conn.set_trace_callback(trace)
    else:
        sqlalchemy.event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_: trace(sql))
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
        add_webhook(w.storage.sql, "c1-wecom", "canteen", "C1", "wecom", "https://robot.invalid/send?key=k")
        add_webhook(w.storage.sql, "sp-wecom", "jurisdiction", "6405", "wecom", "https://robot.invalid/send?key=j")
        add_webhook(w.storage.sql, "c2-wecom", "canteen", "C2", "wecom", "https://robot.invalid/send?key=k2")
        with w.storage.batch():
            rows = [w.add_alert("C1", started_at=ago(minutes=1), alert_id=f"B{n}") for n in range(5)]
        again = Alert(id="B0", device_id=rows[0]["device_id"], camera_id="cam1", type="phone_use", rev=1,
                      started_at=ago(minutes=1))
        w.storage.upsert_alert(again, "2099-01-01T00:00:00.000Z")
        owed = w.storage.db.execute("SELECT robot_id, alert_id, owner FROM push_outbox ORDER BY id").fetchall()
        assert owed == [(r, f"B{n}", w.storage.push_owner) for n in range(5) for r in ("c1-wecom", "sp-wecom")]
        seen = _statements(engine=w.storage.sql.engine)
        rec = _Recorder()
        router = Router(w.storage, PushSettings(), rec)
        high = router.route()
        assert sorted(set(seen)) == ["SELECT alerts", "SELECT cameras", "SELECT canteens", "SELECT push_outbox",
                                     "SELECT webhooks", "UPDATE push_outbox"]  # the update: this receiver's claim
        assert len(seen) == 6  # each once (one canteen, one camera here)
        assert [(r, a) for r, a, _ in rec.queued] == [(r, f"B{n}") for n in range(5) for r in ("c1-wecom", "sp-wecom")]
        assert high == max(i for _, _, i in rec.queued)
        assert router.route(high) == high and len(rec.queued) == 10  # nothing twice
    finally:
        await w.close()


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


def _unsent(storage) -> int:
    return storage.db.execute("SELECT count(*) FROM push_outbox WHERE sent_at IS NULL").fetchone()[0]


def _sent(storage, alert_id: str) -> int:
    return storage.db.execute("SELECT count(*) FROM push_outbox WHERE alert_id = ? AND sent_at IS NOT NULL",
                              [alert_id]).fetchone()[0]


def _announce_marker(app, name: str) -> None:
    """Store and announce a new C1 alert (through the restarted app's own storage and hub)."""
    storage = app[API_CONTEXT].storage
    marker = Alert(id=name, device_id="64050200001180000001", camera_id="cam1", type="smoking",
                   started_at=ago(minutes=1))
    app[API_CONTEXT].hub.publish(storage.upsert_alert(marker, "2099-01-01T00:00:00.000Z").row)


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
        add_webhook(w.storage.sql, "c1-wecom", "canteen", "C1", "wecom",
                    f"{str(server.make_url(''))}/cgi-bin/webhook/send?key=k1")
        for n in range(4):
            w.add_alert("C1", started_at=ago(minutes=5), alert_id=f"R{n}", publish=True)
        pusher = w.client.app[API_CONTEXT].pusher
        await async_wait_for(lambda: "c1-wecom" in pusher.queues and pusher.queues["c1-wecom"].failures >= 2, 4,
                             "two failed sends to the robot")
        assert fake.received == []
        failed = w.storage.db.execute("SELECT count(*) FROM push_outbox WHERE last_error IS NOT NULL"
                                      " AND sent_at IS NULL").fetchone()[0]
        assert failed >= 1
        await w.close()  # stops with 4 alerts owed
        assert fake.received == []

        fake.fail_first = fake.calls  # the robot is back
        for start in range(2):
            client = await _restart(tmp_path, settings)
            try:
                storage = client.app[API_CONTEXT].storage
                await async_wait_for(lambda s=storage: _unsent(s) == 0, 5, "every owed push sent")
                # a new alert announced now is routed after the start's scan of what was owed, and the robot's
                # messages leave in order: once the marker is sent, any push sent twice would already be here
                _announce_marker(client.app, f"MARK{start}")
                await async_wait_for(lambda s=storage, m=f"MARK{start}": _sent(s, m) == 1, 5, "the marker's push")
                assert _unsent(storage) == 0
                assert sum(_alerts_in(text) for _, _, text in fake.received) == 4 + start + 1, (start, fake.received)
                marker_texts = [t for _, _, t in fake.received if type_name("smoking") in t]
                assert len(marker_texts) == start + 1, fake.received
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
                add_webhook(rx.storage.sql, "j-wecom", "jurisdiction", "6405", "wecom",
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
    """A DingTalk robot without its secret in the environment: its owed push waits (logged once over several
    rescans) and is sent by the periodic rescan once the secret is there; exactly once (further rescans
    send nothing again)."""
    from support.api_kit import make_world

    from cloud_receiver.push import wiring as pushwire
    monkeypatch.setattr(pushwire, "RESCAN_S", 0.2)
    monkeypatch.delenv("BK_TEST_LATE_SECRET", raising=False)
    full_scans = [0]  # Router.route(0): the start's scan and each periodic rescan of everything owed
    real_route = pushwire.Router.route

    def counting_route(self, after_id=0):
        high = real_route(self, after_id)
        if after_id == 0:
            full_scans[0] += 1
        return high

    monkeypatch.setattr(pushwire.Router, "route", counting_route)
    fake = FakeRobots()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    try:
        w = await make_world(tmp_path, push_settings=PushSettings(retry_base_s=0.01))
        add_webhook(w.storage.sql, "late-ding", "jurisdiction", "640502", "dingtalk",
                    f"{str(server.make_url(''))}/robot/send?access_token=t", "BK_TEST_LATE_SECRET")
        with structlog.testing.capture_logs() as logs:
            w.add_alert("C1", started_at=ago(minutes=5), alert_id="LATE1", publish=True)
            await async_wait_for(lambda: [e["event"] for e in logs].count("push_not_routable") == 1, 5,
                                 "the push logged as not routable")
            scans = full_scans[0]
            await async_wait_for(lambda: full_scans[0] >= scans + 3, 5, "three rescans")
            assert fake.received == []
            assert [e["event"] for e in logs].count("push_not_routable") == 1
        monkeypatch.setenv("BK_TEST_LATE_SECRET", SECRET)
        await async_wait_for(lambda: fake.received, 5, "the push once the secret is set")
        scans = full_scans[0]
        await async_wait_for(lambda: full_scans[0] >= scans + 2, 5, "two more rescans")  # what could send it again
        assert len(fake.received) == 1 and fake.bad_signatures == 0
        assert w.storage.db.execute("SELECT count(*) FROM push_outbox WHERE sent_at IS NULL").fetchone()[0] == 0
        await w.close()
    finally:
        await server.close()
