"""The same ingest behaviour on both Storage backends: SQLite (default) and PostgreSQL (real server, own schema)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from support.receiver_harness import make_alert
from support.requirements import PG_DSN_DEFAULT, pg_schema, require_postgres

from bk_contract import MediaRef, Status, split_media, topic
from cloud_receiver.config import LimitsConfig
from cloud_receiver.errors import StorageError
from cloud_receiver.ingest.handler import ALERT_GROUP, Ingestor
from cloud_receiver.storage.media_store import relative_media_path
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import SqliteStorage

pytestmark = pytest.mark.integration

PG_DSN = os.environ.get("BK_TEST_PG_DSN", PG_DSN_DEFAULT)
DEV = "64050200001180000301"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStorage(tmp_path / "r.db")
        yield s
        s.close()
        return
    require_postgres(PG_DSN)
    schema = f"bk_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            s = PostgresStorage(make_conninfo(PG_DSN, options=f"-c search_path={schema}"))
            yield s
            s.close()
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def ingestor(store, tmp_path):
    store.add_canteen("c1", "第一小学食堂", "640502")
    store.add_device(DEV, "c1", "box")
    announced: list[dict] = []
    ing = Ingestor(store, tmp_path / "media", LimitsConfig(chunk_data_bytes=4096), on_alert=announced.append)
    ing.announced = announced
    return ing


def test_alert_snapshot_and_repeats(ingestor, tmp_path):
    """Alert + chunked snapshot stored once, file sha256 equal to the one sent, repeats recognised, higher rev updates."""
    data = b"\xff\xd8\xff" + os.urandom(9_997)  # a JPEG start: the receiver checks the bytes
    digest, chunks = split_media(data, "image/jpeg", 4096)
    alert = make_alert(DEV, 1, snapshot=MediaRef(id="S1", sha256=digest, bytes=len(data)))
    outcomes = []
    for _ in range(2):
        outcomes.append(ingestor.handle(topic(DEV, "alert"), alert.model_dump_json().encode()).outcome)
        for i in (2, 0, 1):
            outcomes.append(ingestor.handle(topic(DEV, "media", media_id="S1", seq=i), chunks[i]).outcome)
    assert outcomes == ["stored"] * 4 + ["duplicate"] * 4
    media = ingestor.storage.get_media(DEV, "S1")
    assert media["path"] == relative_media_path(digest)
    assert hashlib.sha256((tmp_path / "media" / media["path"]).read_bytes()).hexdigest() == digest
    assert ingestor.storage.count("alerts") == 1 and ingestor.storage.count("media_chunks") == 0
    update = make_alert(DEV, 1, rev=2, state="end", snapshot=alert.snapshot)
    assert ingestor.handle(topic(DEV, "alert"), update.model_dump_json().encode()).outcome == "stored"
    assert [a["rev"] for a in ingestor.announced] == [0, 2]
    assert ingestor.storage.get_alert(alert.id)["state"] == "end"


def test_batch_of_alerts_keeps_each_outcome_in_order(ingestor, store):
    """One batch: new alerts, a repeat and a higher rev of one of them, another device's id and bad JSON, each its own outcome."""
    other = "64050200001180000302"
    store.add_device(other, "c1", "box 2")
    theirs = make_alert(other, 7)
    assert ingestor.handle(topic(other, "alert"), theirs.model_dump_json().encode()).outcome == "stored"
    before = len(ingestor.announced)
    first = make_alert(DEV, 1)
    batch = [(topic(DEV, "alert"), first.model_dump_json().encode()),
             (topic(DEV, "alert"), make_alert(DEV, 2).model_dump_json().encode()),
             (topic(DEV, "alert"), first.model_dump_json().encode()),  # a repeat of the first, inside the batch
             (topic(DEV, "alert"), b"{oops"),
             (topic(DEV, "alert"), make_alert(DEV, 1, rev=3, state="end").model_dump_json().encode()),
             (topic(DEV, "alert"), theirs.model_copy(update={"device_id": DEV}).model_dump_json().encode())]
    results = ingestor.handle_batch(batch)
    assert [r.outcome for r in results] == ["stored", "stored", "duplicate", "rejected", "stored", "rejected"]
    assert "belongs to another device" in results[5].reason
    assert [(a["id"], a["rev"]) for a in ingestor.announced[before:]] == [(first.id, 0), (make_alert(DEV, 2).id, 0),
                                                                         (first.id, 3)]
    assert store.get_alert(first.id)["state"] == "end" and store.get_alert(theirs.id)["device_id"] == other
    assert store.count("alerts") == 3 and store.count("rejects") == 2


def test_rejects_recorded_on_both_backends(ingestor):
    """Bad JSON, unknown device, mismatched device and a wrong sha256 are rejected and recorded."""
    _, chunks = split_media(b"x" * 5000, "image/jpeg", 4096)
    _, other_chunks = split_media(b"y" * 5000, "image/jpeg", 4096)
    results = [
        ingestor.handle(topic(DEV, "alert"), b"{oops"),
        ingestor.handle(topic("64050200001180000399", "alert"), make_alert("64050200001180000399", 1).model_dump_json().encode()),
        ingestor.handle(topic(DEV, "alert"), make_alert("64050200001180000302", 1).model_dump_json().encode()),
        ingestor.handle(topic(DEV, "media", media_id="M", seq=0), chunks[0]),
        ingestor.handle(topic(DEV, "media", media_id="M", seq=1), other_chunks[1]),  # same media id, other sha256
    ]
    assert [r.outcome for r in results] == ["rejected"] * 3 + ["stored", "rejected"]
    reasons = [r["reason"] for r in reversed(ingestor.storage.list_rejects())]
    assert reasons[0].startswith("not JSON") and reasons[1].startswith("unknown device")
    assert "differs from topic device" in reasons[2] and "disagrees" in reasons[3]
    assert ingestor.storage.count("rejects") == 4 and ingestor.storage.get_media(DEV, "M") is None


def test_status_on_both_backends(ingestor):
    """A status message sets online, version and camera rows."""
    status = Status(device_id=DEV, online=True, version="2.0.0", ts=datetime(2026, 3, 1, tzinfo=UTC),
                    cameras=[{"id": "cam1", "state": "online", "fps": 5}])
    assert ingestor.handle(topic(DEV, "status"), status.model_dump_json().encode()).outcome == "stored"
    dev = ingestor.storage.get_device(DEV)
    assert (dev["online"], dev["version"]) == (1, "2.0.0") and json.loads(dev["status_json"])["cameras"][0]["id"] == "cam1"
    assert ingestor.storage.count("cameras") == 1
    assert ingestor.storage.max_device_serial("64050200001180") == 301


def test_nul_characters_are_refused_alike_on_both_backends(ingestor, store):
    """A NUL (\\u0000) in any text (PostgreSQL's text cannot hold one, SQLite's can) is refused with the field that
    holds it, on both engines, and the rest of the batch is stored: no batch fails and comes back forever."""
    nul_detail = json.loads(make_alert(DEV, 1).model_dump_json())
    nul_detail["detail"] = "persons=\u00009"
    nul_key = json.loads(make_alert(DEV, 2).model_dump_json())
    nul_key["x\u0000y"] = 1  # not in the contract: its refusal names the key, which holds the NUL
    status = json.loads(Status(device_id=DEV, online=True, version="2.0.0", ts=datetime(2026, 3, 1, tzinfo=UTC),
                               cameras=[{"id": "cam1", "state": "online", "name": "后厨\u0000"}]).model_dump_json())
    _, chunks = split_media(b"x" * 100, "image/jpeg\x00", 4096)
    batch = [(topic(DEV, "alert"), json.dumps(nul_detail).encode()),
             (topic(DEV, "alert"), json.dumps(nul_key).encode()),
             (topic(DEV, "status"), json.dumps(status).encode()),
             (topic(DEV, "media", media_id="M", seq=0), chunks[0]),
             (topic(DEV, "alert"), make_alert(DEV, 3, detail="a \\u0000 b").model_dump_json().encode())]  # text, no NUL
    results = ingestor.handle_batch(batch)
    assert [r.outcome for r in results] == ["rejected"] * 4 + ["stored"], results
    assert "detail" in results[0].reason and "NUL" in results[0].reason
    assert "NUL" in results[1].reason and "\x00" not in results[1].reason
    assert "cameras.0.name" in results[2].reason
    assert "content type" in results[3].reason
    assert store.get_alert(make_alert(DEV, 3).id)["detail"] == "a \\u0000 b"
    assert store.count("alerts") == 1 and store.count("rejects") == 4


def test_a_batch_in_several_alert_groups_keeps_message_order(ingestor):
    """A batch longer than one alert group (`ALERT_GROUP`; on PostgreSQL a group is inserted while the next is
    validated): a later rev in a later group updates, a lower rev and a repeat are duplicates, announced in order."""
    assert 2 * ALERT_GROUP < 130
    msgs = [(topic(DEV, "alert"), make_alert(DEV, n).model_dump_json().encode()) for n in range(130)]
    x = [(topic(DEV, "alert"), make_alert(DEV, 999, rev=rev).model_dump_json().encode()) for rev in (0, 2, 1)]
    for at, msg in ((20, x[0]), (75, x[1]), (110, x[2]), (125, msgs[5])):  # X in groups 1, 2 and 3
        msgs.insert(at, msg)
    results = ingestor.handle_batch(msgs)
    outcomes = {i: r.outcome for i, r in enumerate(results) if r.outcome != "stored"}
    assert outcomes == {110: "duplicate", 125: "duplicate"} and ingestor.counts["stored"] == 132
    assert [r["id"] for r in ingestor.announced] == [json.loads(p)["id"] for i, (_, p) in enumerate(msgs)
                                                    if i not in outcomes]
    assert ingestor.storage.get_alert("A000999-0301")["rev"] == 2 and ingestor.storage.count("alerts") == 131


@pytest.fixture
def pg_store():
    require_postgres(PG_DSN)
    with pg_schema("bk_pipeline") as url:
        s = PostgresStorage(url)
        yield s
        s.close()


def test_a_failed_group_on_postgresql_rolls_the_batch_back(pg_store, tmp_path, monkeypatch):
    """In pipeline mode (PostgreSQL's batches) a group's error shows only when its outcome is read: the whole batch
    still rolls back, nothing is announced, the error leaves as StorageError, and the batch is stored on a retry."""
    store = pg_store
    store.add_canteen("c1", "第一小学食堂", "640502")
    store.add_device(DEV, "c1", "box")
    announced: list[dict] = []
    ing = Ingestor(store, tmp_path / "media", LimitsConfig(), on_alert=announced.append)
    msgs = [(topic(DEV, "alert"), make_alert(DEV, n).model_dump_json().encode()) for n in range(4 * ALERT_GROUP)]
    monkeypatch.setitem(store.__dict__, "_insert_many", "SELECT 1 / (length(%s::text) * 0) AS id")
    with pytest.raises(StorageError, match="DivisionByZero"):
        ing.handle_batch(msgs)
    assert store.count("alerts") == 0 and announced == [] and ing.counts["stored"] == 0
    monkeypatch.undo()
    assert {r.outcome for r in ing.handle_batch(msgs)} == {"stored"} and store.count("alerts") == len(announced) == len(msgs)
