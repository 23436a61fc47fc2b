"""Two real receivers on one broker and one PostgreSQL, one of them killed (-9) in the middle of a flood of
20,000 alerts: every alert stored once, every SSE client of the survivor sees every alert it may see, every
push owed is sent once (the survivor takes over the dead receiver's pushes when their lease runs out)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import psycopg
import pytest
from aiohttp import web
from support.multi_receiver import (
    GatedRobots,
    LeanPublisher,
    ReceiverProcess,
    SseReader,
    tcp_ports,
    write_receiver_config,
)
from support.requirements import pg_schema, require_open_files
from support.waiting import async_wait_for

from bk_contract import Alert, topic
from cloud_receiver.admin import auth
from cloud_receiver.push.wiring import add_webhook
from cloud_receiver.storage.postgres import PostgresStorage
from devkit.localbroker import free_port, running_broker

pytestmark = pytest.mark.system

TOTAL = 20_000
PUSHED = 2_000  # alerts of canteen CP, the one with a robot: each owes one push
KILL_AT = 6_000  # stored alerts when receiver A is killed
LEASE_S = 5.0  # push.claim_lease_s: the survivor takes a dead receiver's pushes over after this
DEVICE_P = "64050200001180000001"  # canteen CP (640502): its alerts owe pushes
DEVICES_Q = [f"6405210000118000000{n}" for n in (2, 3, 4)]  # canteen CQ (640521): no robot
RECEIVER_YAML = (f"push:\n  limit: 1000000\n  merge_when_left: 0\n  retry_base_s: 0.2\n  claim_lease_s: {LEASE_S}\n"
                 "log:\n  level: info\n  format: json\n  summary_interval_s: 5\n")


def _workload() -> list[tuple[str, str, bytes]]:
    """(device, alert id, MQTT payload): every tenth alert is CP's; its camera id names it in the robot's text."""
    base = datetime.now(UTC) - timedelta(hours=1)
    out = []
    q = 0
    for n in range(TOTAL):
        if n % 10 == 0:
            device, camera = DEVICE_P, f"cam-P{n:05d}"
        else:
            device, camera, q = DEVICES_Q[q % 3], "cam1", q + 1
        alert = Alert(id=f"M{n:05d}", device_id=device, camera_id=camera, type="phone_use",
                      started_at=base + timedelta(milliseconds=n), score=0.9)
        out.append((device, alert.id, alert.model_dump_json().encode()))
    return out


def _provision(url: str, robot_url: str) -> dict[str, str]:
    """Canteens, devices, a robot for CP and the tokens; returns token by name."""
    storage = PostgresStorage(url)
    try:
        storage.add_canteen("CP", "推送食堂", "640502")
        storage.add_canteen("CQ", "安静食堂", "640521")
        storage.add_device(DEVICE_P, "CP")
        for d in DEVICES_Q:
            storage.add_device(d, "CQ")
        add_webhook(storage.sql, "robot-cp", "canteen", "CP", "wecom", robot_url)
        return {"admin": auth.create_token(storage.sql, "admin", "", "ops"),
                "cq": auth.create_token(storage.sql, "regulator", "640521", "cq-regulator")}
    finally:
        storage.close()


async def test_two_receivers_one_killed_in_a_flood(tmp_path):
    """A killed -9 mid-flood: every alert stored once, B's SSE clients see each once, each push sent once."""
    # 20,000 alerts through two receivers sharing the subscription; A dies after ~6,000 and is started again
    # later (as systemd would: the broker keeps A's share for its session). B's clients: a bearer token, a
    # ticket A issued, a regulator who sees only CQ. Each of CP's 2,000 alerts reaches the robot once; the
    # pushes A held when it died are sent by B once their lease ran out.
    require_open_files(1024)
    robots = GatedRobots()
    runner = web.AppRunner(robots.app)
    await runner.setup()
    robot_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", robot_port).start()
    work = _workload()
    t0, took = time.monotonic(), {}  # seconds from the start to each stage, printed (pytest -s shows them)
    pubs: list[LeanPublisher] = []
    readers: list[SseReader] = []
    rx: dict[str, ReceiverProcess] = {}
    with pg_schema("bk_multi") as url, running_broker() as broker, psycopg.connect(url, autocommit=True) as db:
        def count(where: str, table: str = "push_outbox") -> int:
            return db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]

        try:
            tokens = _provision(url, f"http://127.0.0.1:{robot_port}/cgi-bin/webhook/send?key=test")
            for name in ("a", "b"):
                cfg = write_receiver_config(tmp_path / f"{name}.yaml", broker=broker, pg_url=url,
                                            client_id=f"bk-rx-{name}", http_port=free_port(), extra=RECEIVER_YAML)
                rx[name] = ReceiverProcess(cfg, tmp_path / f"{name}.log")
                rx[name].launch()
            for r in rx.values():
                await asyncio.to_thread(r.wait_up)
            took["up"] = time.monotonic() - t0
            a, b = rx["a"], rx["b"]
            async with aiohttp.ClientSession() as http:
                bearer = {"Authorization": f"Bearer {tokens['admin']}"}
                ticket_a = await (await http.post(f"{a.api_url}/api/v1/alerts/stream/tickets", headers=bearer)).json()
                ticket_cq = await (await http.post(f"{b.api_url}/api/v1/alerts/stream/tickets",
                                                   headers={"Authorization": f"Bearer {tokens['cq']}"})).json()
                readers = [await SseReader(http, f"{b.api_url}/api/v1/alerts/stream", bearer).start(),
                           await SseReader(http, f"{b.api_url}{ticket_a['url']}").start(),
                           await SseReader(http, f"{b.api_url}{ticket_cq['url']}").start()]
                pubs = [LeanPublisher(broker.host, broker.port, d) for d in [DEVICE_P, *DEVICES_Q]]
                by_device = {p.device_id: p for p in pubs}

                def flood() -> None:
                    for device, _, payload in work:
                        by_device[device].publish(topic(device, "alert"), payload)

                flooding = asyncio.create_task(asyncio.to_thread(flood), name="test-flood")
                await async_wait_for(lambda: count("true", "alerts") >= KILL_AT, 60, f"{KILL_AT} alerts stored")
                # Shut the robot's door, and kill A once its request (one at a time per robot) waits at it: A then
                # holds unsent pushes (B must take them over) and none the robot accepted that A did not mark sent.
                robots.close()
                await async_wait_for(lambda: robots.waiting & tcp_ports(a.proc.pid), 15, "A's push at the door")
                a.kill()
                took["killed"] = time.monotonic() - t0
                held_by_a = {r[0] for r in db.execute("SELECT id FROM push_outbox WHERE owner = 'bk-rx-a'"
                                                      " AND sent_at IS NULL").fetchall()}
                robots.open()
                await flooding
                await async_wait_for(lambda: count("owner = 'bk-rx-a' AND sent_at IS NULL") == 0, 30,
                                     "B taking A's pushes over after their lease")
                took["taken_over"] = time.monotonic() - t0
                a.launch()  # not waited for: it subscribes only after the broker has sent it what it kept for A
                await async_wait_for(lambda: count("true", "alerts") == TOTAL, 120, "every alert stored")
                for p in pubs:
                    assert await asyncio.to_thread(p.wait_acked, sum(1 for d, _, _ in work if d == p.device_id), 30)
                took["stored"] = time.monotonic() - t0
                await async_wait_for(lambda: count("sent_at IS NOT NULL") == PUSHED, 120, "every push sent")
                took["pushed"] = time.monotonic() - t0
                # one more alert, last: once every stream has it, nothing from before can still come (twice)
                marker = Alert(id="MZ", device_id=DEVICES_Q[0], camera_id="cam1", type="phone_use",
                               started_at=datetime.now(UTC), score=0.9)
                by_device[DEVICES_Q[0]].publish(topic(DEVICES_Q[0], "alert"), marker.model_dump_json().encode())
                await async_wait_for(lambda: all(r.ids and r.ids[-1] == "MZ" for r in readers), 60,
                                     "every alert streamed")
                took["streamed"] = time.monotonic() - t0
                stored = [r[0] for r in db.execute("SELECT id FROM alerts").fetchall()]
                takers = db.execute("SELECT DISTINCT owner FROM push_outbox WHERE id = ANY(%s)",
                                    (list(held_by_a),)).fetchall()
        finally:
            for r in readers:
                await r.close()
            for p in pubs:
                p.close()
            for r in rx.values():
                r.stop()
            await runner.cleanup()
            print("stages (s):", {k: round(v, 1) for k, v in took.items()})
    all_ids = {i for _, i, _ in work}
    cq_ids = {i for d, i, _ in work if d != DEVICE_P}
    assert len(stored) == TOTAL + 1 and set(stored) == all_ids | {"MZ"}
    for r, expected in zip(readers, (all_ids, all_ids, cq_ids), strict=True):
        assert r.resyncs == [] and len(r.ids) == len(expected) + 1 and set(r.ids) == expected | {"MZ"}
    cams = [m.group(1) for _, _, text in robots.received for m in [re.search(r"cam-P(\d{5})", text)] if m]
    assert len(robots.received) == PUSHED and len(set(cams)) == PUSHED  # each of CP's alerts once
    assert held_by_a and takers == [("bk-rx-b",)]
    [restarted] = rx["a"].log_events("subscriber stopped")  # only the restarted A stopped cleanly
    # what the broker kept for A's session (if anything: where the kill fell decides, and the broker may hand a
    # shared subscription's queue to the member still connected) was handled without a refusal; every alert
    # stored once is asserted above
    assert restarted["counts"]["rejected"] == 0, restarted["counts"]
