"""SQLite storage, migrations, media files and device ids, on real SQLite files."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

import pytest

from bk_contract import Alert, ChunkHeader, MediaRef, split_media
from bk_contract.chunks import decode_chunk
from cloud_receiver.admin.devices import add_device, compose_device_id, device_id_prefix
from cloud_receiver.config import DeviceIdConfig
from cloud_receiver.errors import ProvisioningError, Rejected, StorageError
from cloud_receiver.storage import migrate
from cloud_receiver.storage.media_store import MediaAssembler, relative_media_path
from cloud_receiver.storage.sqlite import SqliteStorage, utc_now

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    s = SqliteStorage(tmp_path / "r.db")
    s.add_canteen("c1", "第一小学食堂", "640502")
    s.add_device("64050200001180000001", "c1", "box")
    yield s
    s.close()


def _alert(**kw) -> Alert:
    base = {"id": "E1", "device_id": "64050200001180000001", "camera_id": "cam1", "type": "phone_use",
            "started_at": datetime(2026, 3, 1, 8, tzinfo=UTC)}
    return Alert(**(base | kw))


def test_migrations_recorded_once_and_wal_enabled(tmp_path):
    """Opening twice migrates once to Alembic's newest revision (recorded); the database is in WAL mode."""
    SqliteStorage(tmp_path / "r.db").close()
    s = SqliteStorage(tmp_path / "r.db")
    assert [r["version_num"] for r in s.db.query("SELECT version_num FROM alembic_version")] == [migrate.head()]
    assert "_sqlite_migrations" not in s.db.table_names()
    assert s.db.journal_mode == "wal"
    s.close()


def test_threads_opening_a_new_database_at_once_migrate_it_once(tmp_path):
    """Four stores opened at the same moment on a new file (a receiver's threads): one migration, no error."""
    import threading

    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            SqliteStorage(tmp_path / "r.db").close()
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    s = SqliteStorage(tmp_path / "r.db")
    assert [r["version_num"] for r in s.db.query("SELECT version_num FROM alembic_version")] == [migrate.head()]
    s.close()


def test_alert_idempotent_and_rev_ordered(store):
    """Same alert twice stores once; higher rev updates event fields; lower or equal rev changes nothing."""
    assert store.upsert_alert(_alert(), utc_now()).outcome == "inserted"
    assert store.upsert_alert(_alert(), utc_now()).outcome == "unchanged"
    store.db.execute("UPDATE alerts SET status = '已整改', deadline = '2026-03-02T08:00:00Z'")
    store.db.conn.commit()
    w = store.upsert_alert(_alert(rev=3, state="end", ended_at=datetime(2026, 3, 1, 8, 5, tzinfo=UTC)), utc_now())
    assert w.outcome == "updated" and w.row["state"] == "end" and w.row["ended_at"] == "2026-03-01T08:05:00.000Z"
    assert (w.row["status"], w.row["deadline"]) == ("已整改", "2026-03-02T08:00:00Z")
    assert store.upsert_alert(_alert(rev=2, state="update"), utc_now()).outcome == "unchanged"
    assert store.count("alerts") == 1 and store.get_alert("E1")["rev"] == 3


def test_alert_id_of_another_device_does_not_overwrite(store):
    """An alert id reused by another device never changes the first device's alert."""
    store.add_device("64050200001180000002", "c1")
    store.upsert_alert(_alert(), utc_now())
    w = store.upsert_alert(_alert(device_id="64050200001180000002", rev=9), utc_now())
    assert w.outcome == "unchanged" and store.get_alert("E1")["device_id"] == "64050200001180000001"


def test_rolled_back_write_leaves_nothing(store):
    """A failure inside a write transaction rolls the whole transaction back."""
    with pytest.raises(RuntimeError), store.write() as db:
        db["rejects"].insert({"at": utc_now(), "device_id": None, "topic": "t", "reason": "r"})
        raise RuntimeError("boom")
    assert store.count("rejects") == 0


def test_duplicate_device_is_a_storage_error(store):
    """Adding the same device id twice is refused."""
    with pytest.raises(StorageError, match="already exists"):
        store.add_device("64050200001180000001", "c1")


def test_media_reassembly_in_any_order_and_repeats(store, tmp_path):
    """Chunks in any order, some twice, give one file named by its sha256 and one media row."""
    data = b"\xff\xd8\xff" + os.urandom(9_997)  # a JPEG start: the receiver checks the bytes
    digest, chunks = split_media(data, "image/jpeg", 3000)
    asm = MediaAssembler(store, tmp_path / "media", chunk_data_bytes=3000, media_max_bytes=100_000)
    states = []
    for i in [2, 0, 2, 3, 1, 1]:
        header, part = decode_chunk(chunks[i])
        states.append(asm.accept("64050200001180000001", "S1", i, header, part, utc_now()).state)
    assert states == ["stored", "stored", "duplicate", "stored", "complete", "duplicate"]
    assert (tmp_path / "media" / relative_media_path(digest)).read_bytes() == data
    assert store.count("media_chunks") == 0 and store.get_media("64050200001180000001", "S1")["bytes"] == 10_000


@pytest.mark.parametrize(("header", "data", "seq", "reason"), [
    (ChunkHeader(1, 2, 10, "a" * 64, "image/jpeg"), b"x" * 5, 0, "differs from topic sequence"),
    (ChunkHeader(0, 2, 10**9, "a" * 64, "image/jpeg"), b"x", 0, "exceeds the limit"),
    (ChunkHeader(0, 1, 10, "a" * 64, "image/jpeg"), b"x" * 20, 0, "larger than the whole media"),
    (ChunkHeader(0, 50, 10, "a" * 64, "image/jpeg"), b"x", 0, "cannot carry"),
    (ChunkHeader(0, 1, 5000, "a" * 64, "image/jpeg"), b"x", 0, "cannot carry"),
    (ChunkHeader(0, 1, 1, "a" * 64, "<script>"), b"x", 0, "not a media type"),
])
def test_bad_chunk_headers_rejected(store, tmp_path, header, data, seq, reason):
    """Inconsistent chunk headers are rejected with a reason."""
    asm = MediaAssembler(store, tmp_path, chunk_data_bytes=3000, media_max_bytes=100_000)
    with pytest.raises(Rejected, match=reason):
        asm.accept("64050200001180000001", "S1", seq, header, data, utc_now())


def test_chunk_disagreeing_with_earlier_chunks_rejected(store, tmp_path):
    """A chunk whose total/size/sha256 differ from the earlier chunks of the same media is rejected."""
    asm = MediaAssembler(store, tmp_path, chunk_data_bytes=3000, media_max_bytes=100_000)
    asm.accept("64050200001180000001", "S1", 0, ChunkHeader(0, 2, 4000, "a" * 64, "image/jpeg"), b"x" * 3000, utc_now())
    with pytest.raises(Rejected, match="disagrees"):
        asm.accept("64050200001180000001", "S1", 1, ChunkHeader(1, 2, 4000, "b" * 64, "image/jpeg"), b"x" * 1000, utc_now())


def test_same_content_from_two_devices_shares_one_file(store, tmp_path):
    """Media is stored by content hash: identical bytes are one file, two rows."""
    store.add_device("64050200001180000002", "c1")
    data = b"\xff\xd8\xff same jpeg"
    digest = hashlib.sha256(data).hexdigest()
    asm = MediaAssembler(store, tmp_path / "m", chunk_data_bytes=3000, media_max_bytes=100_000)
    for dev in ("64050200001180000001", "64050200001180000002"):
        asm.accept(dev, "S1", 0, ChunkHeader(0, 1, len(data), digest, "image/jpeg"), data, utc_now())
    assert store.count("media") == 2
    assert [p.name for p in (tmp_path / "m").rglob("*") if p.is_file()] == [digest[2:]]


def test_device_id_composition():
    """Device ids are 20 digits: district + 00 + industry + type + network + serial."""
    ids = DeviceIdConfig()
    assert compose_device_id("640502", 1, ids) == "64050200001180000001"
    assert len(compose_device_id("640502", 999_999, ids)) == 20
    assert device_id_prefix("640521", DeviceIdConfig(industry="07", type_code="132", network="5")) == "64052100071325"
    for bad in (("64050", 1), ("640502", 0), ("640502", 10**6)):
        with pytest.raises(ValueError):
            compose_device_id(*bad, ids)


def test_add_device_issues_next_serial_and_requires_canteen(store):
    """device add continues the serials of its district and refuses an unknown canteen."""
    creds = add_device(store, None, "c1", "二号机")
    assert creds.device_id == "64050200001180000002" and len(creds.password) >= 24
    assert "password" not in repr(creds) or creds.password not in repr(creds)
    assert store.get_device(creds.device_id)["name"] == "二号机"
    with pytest.raises(ProvisioningError, match="unknown canteen"):
        add_device(store, None, "nope")


def test_media_ref_links_alert_to_snapshot(store):
    """The alert row keeps the snapshot id and sha256 it announced."""
    ref = MediaRef(id="S9", sha256="c" * 64, bytes=10)
    row = store.upsert_alert(_alert(snapshot=ref), utc_now()).row
    assert (row["snapshot_id"], row["snapshot_sha256"], row["canteen_id"]) == ("S9", "c" * 64, "c1")


def test_returned_alert_rows_equal_the_stored_rows(store):
    """The row announced for a new alert (built in Python, not read back) and for a new rev equals the table's row."""
    snap = MediaRef(id="S9", sha256="a" * 64, bytes=10)
    new = store.upsert_alert(_alert(id="E9", score=1, snapshot=snap, zone=[[0, 0], [1, 0.5], [1, 1]],
                                    frame_size=[1920, 1080], detail="persons=3"), "2026-03-01T08:00:01.000Z")
    assert new.outcome == "inserted"
    assert new.row == store.get_alert("E9")
    assert new.row["status"] == "待整改" and new.row["deadline"] is None and new.row["canteen_id"] == "c1"
    upd = store.upsert_alert(_alert(id="E9", rev=1, state="end"), "2026-03-01T08:00:09.000Z")
    assert upd.outcome == "updated" and upd.row == store.get_alert("E9")
    assert upd.row["received_at"] == "2026-03-01T08:00:01.000Z" and upd.row["updated_at"] == "2026-03-01T08:00:09.000Z"
