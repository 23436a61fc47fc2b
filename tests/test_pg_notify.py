"""Several receivers on one PostgreSQL: alerts reach every receiver's hub by LISTEN/NOTIFY (once, also after
the listener's connection was lost), stream tickets and token revocation hold across receivers."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.api_kit import make_world
from support.requirements import pg_schema
from support.waiting import async_wait_for

from bk_contract import Alert, topic
from cloud_receiver.admin import auth
from cloud_receiver.api import API_SETTINGS, ApiSettings
from cloud_receiver.app.factory import create_app
from cloud_receiver.config import LimitsConfig, MqttConfig, ReceiverConfig, StorageConfig
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.ingest.pg_notify import alert_listener
from cloud_receiver.storage.alert_notify import alert_channel, notify_payloads, notify_token, parse_token
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import iso

pytestmark = pytest.mark.integration

DEVICE_C1 = "64050200001180000001"  # api_kit's box of canteen C1


def _alert(n: int | str, device: str = DEVICE_C1, rev: int = 1, state: str = "start") -> Alert:
    return Alert(id=f"N{n}", device_id=device, camera_id="cam1", type="phone_use", rev=rev, state=state,
                 started_at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC), score=0.9)


def _now() -> str:
    return iso(datetime.now(UTC)) or ""


def test_notify_payloads_stay_under_the_limit_and_keep_every_id_once():
    """Alert ids are split into space-separated payloads below PostgreSQL's 8000 bytes, in order, each id once."""
    ids = [f"A{n:060d}" for n in range(400)] + ["A" + "0" * 60]  # 61 bytes each; the last repeats the first
    parts = notify_payloads(ids)
    assert len(parts) > 1 and all(len(p.encode()) <= 7900 for p in parts)
    assert [i for p in parts for i in p.split(" ")] == ids[:400]
    assert notify_payloads([]) == [] and notify_payloads(["x", "y"], limit=3) == ["x y"]
    assert alert_channel("public") == "bk_alerts" and alert_channel("s" * 80) == ("bk_alerts." + "s" * 80)[:63]


def test_the_hub_announces_an_id_and_rev_once_when_asked():
    """`publish(once=True)` skips an (id, rev) among the last `remember` announced; a plain publish never skips."""
    hub = AlertHub(remember=2)
    sub = hub.subscribe()
    assert hub.publish({"id": "a", "rev": 1}) and not hub.publish({"id": "a", "rev": 1}, once=True)
    assert hub.publish({"id": "a", "rev": 2}, once=True) and hub.publish({"id": "a", "rev": 2})
    hub.publish({"id": "b", "rev": 1})
    hub.publish({"id": "c", "rev": 1})  # a@1 is forgotten now
    assert hub.publish({"id": "a", "rev": 1}, once=True)
    assert [row["id"] + str(row["rev"]) for _, row in (sub.queue.get_nowait() for _ in range(sub.queue.qsize()))] \
        == ["a1", "a2", "a2", "b1", "c1", "a1"]
    assert (hub.repeats, hub.seq) == (1, 6)


async def _events_until(resp, last_id: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """(event, alert id) of a stream's events up to and including the alert `last_id`."""
    out: list[tuple[str, str]] = []
    event = None
    while not out or out[-1][1] != last_id:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event in ("alert", "alert_update"):
            out.append((event, json.loads(line[6:])["id"]))
    return out


@pytest.fixture
async def two_receivers(tmp_path):
    """Receiver A (api_kit's world) and receiver B (another app) on one PostgreSQL schema, API only."""
    a = await make_world(tmp_path / "a", "postgresql", settings=ApiSettings(sse_keepalive_s=0.1))
    cfg = ReceiverConfig(mqtt=MqttConfig(client_id="bk-receiver-b"),
                         storage=StorageConfig(url=a.cfg.storage.url, media_dir=tmp_path / "b-media"))
    app = create_app(cfg, subscriber=False)
    app[API_SETTINGS] = ApiSettings(sse_keepalive_s=0.1)
    b = TestClient(TestServer(app, host="127.0.0.1"))
    await b.start_server()
    yield a, b
    await b.close()
    await a.close()


async def test_alerts_stored_anywhere_reach_every_receivers_streams_once(two_receivers):
    """What a third writer stores (batch, single write, revision) reaches both receivers' streams in order, once."""
    a, b = two_receivers
    streams = [await a.client.get("/api/v1/alerts/stream", headers=a.h("admin")),
               await b.get("/api/v1/alerts/stream", headers=a.h("admin"))]
    for resp in streams:
        assert resp.status == 200 and (await resp.content.readline()).startswith(b"retry:")
    writer = PostgresStorage(a.cfg.storage.url, migrate=False, push_owner="bk-receiver-c")
    try:
        with writer.batch():
            for n in range(3):
                writer.upsert_alert(_alert(n), _now())
        writer.upsert_alert(_alert(3), _now())
        for resp in streams:
            assert await _events_until(resp, "N3") == [("alert", "N0"), ("alert", "N1"), ("alert", "N2"), ("alert", "N3")]
        writer.upsert_alert(_alert(0), _now())  # a repeat: nothing stored, nothing announced
        writer.upsert_alert(_alert(1, rev=2, state="end"), _now())
        writer.upsert_alert(_alert(4), _now())
    finally:
        writer.close()
    for resp in streams:
        assert await _events_until(resp, "N4") == [("alert_update", "N1"), ("alert", "N4")]
        resp.close()


async def test_a_ticket_from_one_receiver_opens_the_stream_on_another_until_the_token_is_revoked(two_receivers):
    """A stream ticket issued by A opens B's stream; revoking the token through A's database ends B's open stream."""
    a, b = two_receivers
    body = await (await a.post("/alerts/stream/tickets", "c1")).json()
    resp = await b.get(body["url"])
    assert resp.status == 200 and (await resp.content.readline()).startswith(b"retry:")
    a.add_alert("C1", started_at=datetime.now(UTC), alert_id="TK1")  # stored through A; B hears of it
    assert await _events_until(resp, "TK1") == [("alert", "TK1")]
    assert auth.revoke_token(a.storage.sql, "c1-manager") == 1
    await asyncio.wait_for(resp.content.read(), 5)  # returns only when B ended the stream
    assert resp.content.at_eof()
    assert (await b.get(body["url"])).status == 401


async def test_the_listener_catches_up_after_losing_its_connection():
    """Alerts committed while the listener was cut off come by catch-up, none twice; a rollback notifies nothing."""
    hub = AlertHub()
    sub = hub.subscribe()
    with pg_schema("bk_notify") as url:
        writer = PostgresStorage(url, push_owner="bk-receiver-w")
        try:
            writer.add_canteen("C1", "第一中学食堂", "64050201")
            writer.add_device(DEVICE_C1, "C1")
            async with alert_listener(url, hub, keepalive_s=0.2, margin_s=2.0, reconnect_min_s=0.3) as listener:
                writer.upsert_alert(_alert("L1"), _now())
                await async_wait_for(lambda: hub.published == 1, 5, "the first alert announced")
                with psycopg.connect(url, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
                for n in (2, 3):  # while the listener is away
                    writer.upsert_alert(_alert(f"L{n}"), _now())
                await async_wait_for(lambda: listener.counts["connections"] == 2 and listener.listening.is_set(), 10,
                                     "the listener back")
                notified = listener.counts["notifications"]
                with pytest.raises(RuntimeError), writer.batch():
                    writer.upsert_alert(_alert("L9"), _now())
                    raise RuntimeError("rolled back")
                writer.upsert_alert(_alert("L4"), _now())
                await async_wait_for(lambda: hub.published == 4, 5, "every alert announced")
                assert listener.counts["notifications"] == notified + 1  # L4's; none for the rolled-back L9
        finally:
            writer.close()
    got = [sub.queue.get_nowait()[1]["id"] for _ in range(sub.queue.qsize())]
    assert got == ["NL1", "NL2", "NL3", "NL4"]
    assert listener.counts["caught_up"] == 2 and hub.repeats >= 1  # L1 was read again by the catch-up, not announced


def test_notify_tokens_carry_the_rev():
    """`id:rev` both ways; a bare id (what receivers before the rev sent) has no rev, so the listener reads its row."""
    assert parse_token(notify_token("N1", 3)) == ("N1", 3) and parse_token("N1") == ("N1", None)
    assert notify_payloads([notify_token("a", 1), notify_token("b", 12)]) == ["a:1 b:12"]


async def test_the_hub_drains_a_large_burst_in_slices_and_owns_what_ingest_expects():
    """A burst from the ingest thread larger than a stream's queue reaches the stream whole (the loop gets a turn
    between slices); `owned` is true for an (id, rev) expected before its commit and for one announced."""
    hub = AlertHub(queue_size=150, drain_slice=100)
    hub.bind_loop(asyncio.get_running_loop())
    sub = hub.subscribe()
    got: list[str] = []

    async def read() -> None:
        while len(got) < 400:
            got.append((await sub.queue.get())[1]["id"])

    reader = asyncio.create_task(read())
    hub.expect([("E1", 1)])
    assert hub.owned("E1", 1) and not hub.owned("E1", 2)
    await asyncio.to_thread(lambda: [hub.publish_threadsafe({"id": f"B{n}", "rev": 1}) for n in range(400)])
    await asyncio.wait_for(reader, 5)
    assert got == [f"B{n}" for n in range(400)] and sub.lost == 0 and hub.owned("B399", 1)


async def test_the_listener_reads_only_the_rows_of_other_receivers():
    """Alerts this receiver's ingest stored reach its hub from the ingest thread and are not read again by the
    listener; another receiver's alerts, and a bare-id notification, are read and announced once."""
    hub = AlertHub()
    hub.bind_loop(asyncio.get_running_loop())
    sub = hub.subscribe()
    with pg_schema("bk_notify") as url:
        own = PostgresStorage(url, push_owner="bk-receiver-own")
        other = PostgresStorage(url, migrate=False, push_owner="bk-receiver-other")
        try:
            own.add_canteen("C1", "第一中学食堂", "64050201")
            own.add_device(DEVICE_C1, "C1")
            own.on_notify = hub.expect
            ingest = Ingestor(own, Path(tempfile.mkdtemp()), LimitsConfig(), on_alert=hub.publish_threadsafe)
            async with alert_listener(url, hub, keepalive_s=0.2) as listener:
                msgs = [(topic(DEVICE_C1, "alert"), _alert(f"O{n}").model_dump_json().encode()) for n in range(3)]
                await asyncio.to_thread(ingest.handle_batch, msgs)
                other.upsert_alert(_alert("X1"), _now())
                await async_wait_for(lambda: listener.counts["published"] == 1 and listener.counts["own"] == 3, 5,
                                     "X1 read by the listener, O0-O2 skipped")
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("SELECT pg_notify(%s, 'NX1')", (listener.channel,))  # a bare id: read, not re-announced
                await async_wait_for(lambda: listener.counts["repeats"] == 1, 5, "the bare id read")
        finally:
            own.close()
            other.close()
    got = [sub.queue.get_nowait()[1]["id"] for _ in range(sub.queue.qsize())]
    assert sorted(got) == ["NO0", "NO1", "NO2", "NX1"] and listener.counts["own"] == 3
