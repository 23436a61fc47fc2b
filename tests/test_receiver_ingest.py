"""Ingest end to end: a device publishes through a real broker to the real receiver app and SQLite.

Every test runs on Mosquitto and on ejabberd (Debian's other MQTT v5 broker: no shared
subscriptions, so the receiver subscribes without a group there, `mqtt.shared: false`)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import sqlalchemy as sa
import structlog
from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, receiver_config
from support.requirements import pg_schema
from support.waiting import async_wait_until

from bk_contract import MediaRef, split_media, topic
from bk_contract.chunks import ChunkHeader, encode_chunk
from cloud_receiver.appkeys import ALERT_HUB, SUBSCRIBER
from devkit import ejabberd_broker
from devkit.ejabberd_broker import running_ejabberd
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

JPEG_SOI = b"\xff\xd8\xff\xe0"  # the receiver checks that declared JPEG bytes look like one


@pytest.fixture(params=["mosquitto", "ejabberd"])
def broker(request, tmp_path):
    start = running_broker if request.param == "mosquitto" else running_ejabberd
    with start(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def store_url(db_engine):
    """None (SQLite, the default) or a throw-away PostgreSQL schema: the MQTT path on both engines."""
    if db_engine == "sqlite":
        yield None
        return
    with pg_schema("bk_rx") as url:
        yield url


def test_a_missing_ejabberd_fails_naming_the_package(tmp_path, monkeypatch):
    """Without ejabberd's Erlang application the launcher raises, naming what to install (tests fail, never skip)."""
    monkeypatch.setattr(ejabberd_broker.glob, "glob", lambda pattern: [])
    with pytest.raises(RuntimeError, match=r"ejabberd is not installed \(apt-get install ejabberd; scripts/setup.sh"):
        ejabberd_broker.start_ejabberd(tmp_path)


def _register(storage, *device_ids):
    storage.add_canteen("canteen-1", "第一小学食堂", "640502")
    for d in device_ids:
        storage.add_device(d, "canteen-1", "box")


async def test_alert_and_snapshot_stored_once_with_matching_sha256(broker, tmp_path, store_url):
    """An alert and its chunked snapshot are stored once; the file's sha256 is the one sent; repeats change nothing."""
    rx = await RunningReceiver(receiver_config(tmp_path, broker, storage_url=store_url)).start()
    try:
        dev_id, pw = broker.add_device()
        _register(rx.storage, dev_id)
        snapshot = JPEG_SOI + os.urandom(200_000)
        digest, chunks = split_media(snapshot, "image/jpeg", 64 * 1024)
        alert = make_alert(dev_id, 1, snapshot=MediaRef(id="S1", sha256=digest, bytes=len(snapshot)))
        queue = rx.app[ALERT_HUB].subscribe().queue
        dev = DeviceClient(broker, dev_id, pw)
        for _round in range(2):  # the second round is an exact repeat (what QoS 1 redelivery looks like)
            assert dev.publish_alert(alert) == 0
            assert dev.publish_media("S1", chunks, order=[3, 0, 2, 1]) == [0, 0, 0, 0]
        assert await async_wait_until(lambda: rx.app[SUBSCRIBER].counts.get("duplicate", 0) >= 5)
        dev.close()
        assert rx.storage.count("alerts") == 1
        assert rx.storage.count("media") == 1
        assert rx.storage.count("media_chunks") == 0
        media = rx.storage.get_media(dev_id, "S1")
        path = rx.cfg.storage.media_dir / media["path"]
        assert media["path"] == f"{digest[:2]}/{digest[2:]}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        files = [p for p in rx.cfg.storage.media_dir.rglob("*") if p.is_file()]
        assert files == [path]
        row = rx.storage.get_alert(alert.id)
        assert row["snapshot_sha256"] == digest and row["canteen_id"] == "canteen-1"
        assert await async_wait_until(lambda: not queue.empty())  # the loop hands announcements over when it next runs
        _seq, announced = queue.get_nowait()
        assert announced["id"] == alert.id and queue.empty()  # the repeat is not announced again
    finally:
        await rx.stop()


async def test_higher_rev_updates_event_but_keeps_workflow(broker, tmp_path, store_url):
    """A higher rev updates the event fields, a lower one is ignored, the workflow status stays."""
    rx = await RunningReceiver(receiver_config(tmp_path, broker, storage_url=store_url)).start()
    try:
        dev_id, pw = broker.add_device()
        _register(rx.storage, dev_id)
        dev = DeviceClient(broker, dev_id, pw)
        dev.publish_alert(make_alert(dev_id, 7))
        assert await async_wait_until(lambda: rx.storage.get_alert(make_alert(dev_id, 7).id) is not None)
        with rx.storage.sql.write() as conn:  # the workflow's write, as the API makes it
            conn.execute(sa.text("UPDATE alerts SET status = '已整改' WHERE id = :id"), {"id": make_alert(dev_id, 7).id})
        dev.publish_alert(make_alert(dev_id, 7, rev=2, state="end", detail="persons=2"))
        dev.publish_alert(make_alert(dev_id, 7, rev=1, state="update", detail="stale"))
        assert await async_wait_until(lambda: rx.storage.get_alert(make_alert(dev_id, 7).id)["rev"] == 2)
        assert await async_wait_until(lambda: sum(rx.app[SUBSCRIBER].counts.values()) == 3)
        row = rx.storage.get_alert(make_alert(dev_id, 7).id)
        assert (row["state"], row["detail"], row["status"]) == ("end", "persons=2", "已整改")
        dev.close()
    finally:
        await rx.stop()


def _bad_messages(known: str, other: str, unknown: str) -> list[tuple[str, str, bytes | str]]:
    """(name, topic, payload) of messages the receiver must refuse."""
    good = make_alert(known, 1)
    wrong_schema = json.loads(good.model_dump_json())
    wrong_schema["type"] = "dancing"
    extra = json.loads(good.model_dump_json()) | {"surprise": 1}
    huge = json.loads(good.model_dump_json()) | {"detail": "x" * 70_000}
    data = JPEG_SOI + os.urandom(2996)
    bad_digest = hashlib.sha256(b"something else").hexdigest()
    liar = [encode_chunk(ChunkHeader(i, 3, len(data), bad_digest, "image/jpeg"), data[i * 1000:(i + 1) * 1000])
            for i in range(3)]
    return [
        ("bad JSON", topic(known, "alert"), b"{not json"),
        ("not UTF-8", topic(known, "alert"), b"\xff\xfe\x00"),
        ("wrong schema", topic(known, "alert"), json.dumps(wrong_schema)),
        ("unknown field", topic(known, "alert"), json.dumps(extra)),
        ("oversized alert", topic(known, "alert"), json.dumps(huge)),
        ("oversized chunk", topic(known, "media", media_id="BIG", seq=0),
         encode_chunk(ChunkHeader(0, 1, 100_000, "0" * 64, "image/jpeg"), b"\0" * 100_000)),
        ("oversized media", topic(known, "media", media_id="HUGE", seq=0),
         encode_chunk(ChunkHeader(0, 64, 4 * 1024 * 1024, "0" * 64, "video/mp4"), b"\0" * 1000)),
        ("malformed chunk", topic(known, "media", media_id="M2", seq=0), b"BKM0" + b"\0" * 100),
        ("wrong sha256 0", topic(known, "media", media_id="LIAR", seq=0), liar[0]),
        ("wrong sha256 1", topic(known, "media", media_id="LIAR", seq=1), liar[1]),
        ("wrong sha256 2", topic(known, "media", media_id="LIAR", seq=2), liar[2]),
        ("unknown device", topic(unknown, "alert"), make_alert(unknown, 2).model_dump_json()),
        ("device mismatch", topic(known, "alert"), make_alert(other, 3).model_dump_json()),
        ("bad topic", "bk/v1/123/alert", good.model_dump_json()),
    ]


EXPECTED_REASONS = {
    "bad JSON": "not JSON", "not UTF-8": "not JSON", "wrong schema": "schema: type",
    "unknown field": "schema: surprise", "oversized alert": "exceeds the limit",
    "oversized chunk": "exceeds the limit of 65844", "oversized media": "exceeds the limit of 1048576", "malformed chunk": "chunk magic",
    "wrong sha256 2": "sha256", "unknown device": "unknown device",
    "device mismatch": "differs from topic device", "bad topic": "not 20 digits",
}


async def test_malformed_messages_rejected_logged_recorded_and_ingest_continues(broker, tmp_path):
    """Bad JSON, wrong schema, oversize, wrong sha256, unknown or mismatched device: rejected, logged, recorded; a valid alert follows."""
    cfg = receiver_config(tmp_path, broker, chunk_data_bytes=64 * 1024, media_max_bytes=1024 * 1024)
    rx = await RunningReceiver(cfg).start()
    try:
        known, other, unknown = "64050200001180000101", "64050200001180000102", "64050200001180000199"
        _register(rx.storage, known, other)
        dev = DeviceClient(broker, known, broker.add_device(known)[1])  # ejabberd needs a user name
        with structlog.testing.capture_logs() as logs:
            for _name, t, payload in _bad_messages(known, other, unknown):
                assert dev.publish(t, payload) == 0
            valid = make_alert(known, 42)
            dev.publish_alert(valid)
            assert await async_wait_until(lambda: rx.storage.get_alert(valid.id) is not None)
        dev.close()
        rejects = list(reversed(rx.storage.list_rejects()))
        reasons = [r["reason"] for r in rejects]
        # 14 messages, of which the first two LIAR chunks are accepted until the set is complete
        assert len(rejects) == 12, reasons
        refused = [(n, t) for n, t, _p in _bad_messages(known, other, unknown) if n in EXPECTED_REASONS]
        assert [r["topic"] for r in rejects] == [t for _n, t in refused]
        for (name, _t), reason in zip(refused, reasons, strict=True):
            assert EXPECTED_REASONS[name] in reason, (name, reason)
        assert rx.storage.get_media(known, "LIAR") is None
        assert rx.storage.count("media_chunks") == 0 and rx.storage.count("alerts") == 1
        assert not list(rx.cfg.storage.media_dir.rglob("*/*"))
        warned = [e for e in logs if e["event"] == "message rejected"]
        assert [e["reason"] for e in warned] == reasons
        assert next(r for r in rejects if "unknown device" in r["reason"])["device_id"] == unknown
    finally:
        await rx.stop()
