"""Outbox on real SQLite: atomic events, quota drop order, durability across reopen."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bk_contract
from edge_agent.outbox.priority import Priority
from edge_agent.outbox.store import PENDING, Outbox

pytestmark = pytest.mark.unit

DEV = "64050200001180000001"


def make_alert(i: int, **kw) -> bk_contract.Alert:
    return bk_contract.Alert(id=f"EVT{i:05d}", device_id=DEV, camera_id="cam1", type="phone_use",
                             started_at=datetime(2025, 3, 1, 8, 0, tzinfo=UTC), **kw)


def open_box(tmp_path: Path, **kw) -> Outbox:
    return Outbox(tmp_path / "agent.db", device_id=DEV, **kw)


def test_pragmas_and_migrations(tmp_path):
    """The file is WAL with synchronous=FULL and the migration is recorded once."""
    box = open_box(tmp_path)
    assert box.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    box.close()
    box = open_box(tmp_path)
    names = [r[0] for r in box.db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                                          ["edge_agent.outbox.store"])]
    assert names == ["m001_initial", "m002_commands_seen"]
    box.close()


def test_add_event_with_snapshot_chunks(tmp_path):
    """add_event stores the alert and its snapshot chunks; the returned alert carries the MediaRef."""
    box = open_box(tmp_path, chunk_bytes=1000)
    jpeg = bytes(range(256)) * 10  # 2560 bytes -> 3 chunks
    out = box.add_event(make_alert(1), jpeg)
    assert out.snapshot is not None and out.snapshot.sha256 == hashlib.sha256(jpeg).hexdigest()
    msgs = box.next_pending(limit=10)
    assert [m.priority for m in msgs] == [Priority.ALERT] + [Priority.SNAPSHOT] * 3
    assert msgs[0].topic == f"bk/v1/{DEV}/alert"
    assert bk_contract.Alert.model_validate_json(msgs[0].payload).snapshot == out.snapshot
    data = b""
    for i, m in enumerate(msgs[1:]):
        assert m.topic == f"bk/v1/{DEV}/media/{out.snapshot.id}/{i}"
        header, piece = bk_contract.decode_chunk(m.payload)
        assert (header.index, header.total) == (i, 3)
        data += piece
    assert data == jpeg
    assert box.recent_events() == [out]
    box.close()


def test_add_event_is_atomic(tmp_path, monkeypatch):
    """An exception in the middle of add_event leaves nothing behind, on disk or in the byte count."""
    box = open_box(tmp_path, chunk_bytes=1024)
    real_insert = box._insert
    calls = {"n": 0}

    def failing_insert(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the event row, the alert and the first chunk
            raise OSError("disk gone")
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(box, "_insert", failing_insert)
    with pytest.raises(OSError):
        box.add_event(make_alert(1), b"x" * 4000)
    assert box.stats()["depth_total"] == 0 and box.stats()["bytes"] == 0
    assert box.recent_events() == []
    box.close()
    box = open_box(tmp_path)
    assert box.stats()["depth_total"] == 0 and box.recent_events() == []
    box.close()


def test_reopen_keeps_everything(tmp_path):
    """Messages, events, drop counts and refused marks survive close and reopen."""
    box = open_box(tmp_path, chunk_bytes=1024, quota_bytes=6000)
    for i in range(3):
        box.add_event(make_alert(i), bytes([i]) * 1500)
    box.add_message(f"bk/v1/{DEV}/telemetry", b"t" * 2000, qos=0, priority=Priority.TELEMETRY)
    first = box.next_pending()[0]
    box.mark_refused(first.seq, 0x87, "PUBACK 0x87 Not authorized")
    before = box.stats()
    pending = [(m.seq, m.topic, m.payload) for m in box.next_pending(limit=100)]
    box.close()
    box = open_box(tmp_path, chunk_bytes=1024, quota_bytes=6000)
    assert box.stats() == before
    assert [(m.seq, m.topic, m.payload) for m in box.next_pending(limit=100)] == pending
    assert [a.id for a in box.recent_events()] == ["EVT00002", "EVT00001", "EVT00000"]
    assert box.refused()[0]["code"] == 0x87
    box.close()


def test_quota_drops_lowest_priority_first(tmp_path):
    """Beyond the quota: telemetry, then live, then clips, then snapshots go; alerts stay; counted."""
    box = open_box(tmp_path, chunk_bytes=1024, quota_bytes=10**9)
    topic = bk_contract.topic
    box.add_message(topic(DEV, "telemetry"), b"t" * 1000, qos=0, priority=Priority.TELEMETRY)
    box.add_message(topic(DEV, "live", camera_id="cam1"), b"l" * 1000, qos=0, priority=Priority.LIVE)
    box.add_media(b"c" * 2000, "video/mp4")  # clip: 2 chunks, one group
    box.add_event(make_alert(1), b"s" * 1000)  # alert + 1 snapshot chunk
    for i in range(2, 5):
        box.add_event(make_alert(i))
    used = box.stats()["bytes"]
    # shrink the quota so that telemetry, live and the clip must go but the snapshot fits
    box.quota_bytes = used - 1000 - 1000 - 2000 + 100
    box.add_event(make_alert(5))  # any add enforces the quota
    st = box.stats()
    assert st["dropped"] == {"alert": 0, "snapshot": 0, "clip": 2, "live": 1, "telemetry": 1}
    assert st["depth"]["alert"] == 5 and st["depth"]["snapshot"] == 1
    assert st["bytes"] <= box.quota_bytes
    # now a quota below the alerts alone: snapshot dropped, alerts kept always
    box.quota_bytes = 10
    box.add_event(make_alert(6))
    st = box.stats()
    assert st["dropped"]["snapshot"] == 1 and st["depth"]["snapshot"] == 0
    assert st["depth"]["alert"] == 6 and st["dropped"]["alert"] == 0
    assert st["dropped_total"] == 5 and st["dropped_bytes"]["clip"] > 2000
    box.close()


def test_a_new_gop_supersedes_the_queued_older_ones(tmp_path):
    """A live piece that starts a GOP drops that camera's queued older pieces (counted), not other cameras' or media."""
    box = open_box(tmp_path, chunk_bytes=1024, quota_bytes=10**9)
    cam1, cam2 = (bk_contract.topic(DEV, "live", camera_id=c) for c in ("cam1", "cam2"))
    for i in range(5):
        box.add_message(cam1, b"old-gop-%d" % i, qos=0, priority=Priority.LIVE, group="live:cam1", supersede=i == 0)
    box.add_message(cam2, b"other-camera", qos=0, priority=Priority.LIVE, group="live:cam2")
    box.add_media(b"c" * 2000, "video/mp4")
    sent = box.next_pending(limit=1)[0]  # the uplink took the clip's first chunk (clips go before live)
    box.add_message(cam1, b"new-gop-init", qos=0, priority=Priority.LIVE, group="live:cam1", supersede=True)
    st = box.stats()
    assert st["dropped"]["live"] == 5 and st["depth"]["live"] == 2 and st["depth"]["clip"] == 2
    pending = [m.payload for m in box.next_pending(limit=10) if m.priority == Priority.LIVE]
    assert pending == [b"other-camera", b"new-gop-init"]
    assert box.ack([sent.seq]) == 1
    box.close()


def test_next_pending_order_and_ack(tmp_path):
    """Most urgent priority first, oldest first within it; exclude skips in-flight; ack deletes."""
    box = open_box(tmp_path, chunk_bytes=1024)
    box.add_event(make_alert(1), b"a" * 3000)  # alert 1 + 3 chunks
    box.add_event(make_alert(2))
    msgs = box.next_pending(limit=10)
    assert [m.priority for m in msgs] == [0, 0, 1, 1, 1]
    assert [bk_contract.Alert.model_validate_json(m.payload).id for m in msgs[:2]] == ["EVT00001", "EVT00002"]
    assert box.next_pending(exclude=[msgs[0].seq])[0].seq == msgs[1].seq
    assert box.ack([msgs[0].seq, msgs[2].seq], attempted=[msgs[1].seq]) == 2
    left = box.next_pending(limit=10)
    assert [m.seq for m in left] == [msgs[1].seq, msgs[3].seq, msgs[4].seq]
    assert left[0].attempts == 1
    assert box.stats()["bytes"] == sum(len(m.payload) + len(m.topic) for m in left)
    box.close()


def test_refused_kept_and_retried(tmp_path):
    """A refused message leaves the send queue, stays stored, and returns on retry_refused."""
    box = open_box(tmp_path)
    box.add_event(make_alert(1))
    m = box.next_pending()[0]
    box.mark_refused(m.seq, 0x87, "Not authorized")
    assert box.next_pending() == [] and box.stats()["refused"]["alert"] == 1
    assert box.retry_refused(older_than_s=3600) == 0
    assert box.retry_refused(older_than_s=0) == 1
    assert box.next_pending()[0].seq == m.seq
    assert box.db.execute("SELECT state FROM messages").fetchone()[0] == PENDING
    box.close()


def test_rev_upsert_keeps_highest(tmp_path):
    """The event row keeps the highest revision; every revision is still queued."""
    box = open_box(tmp_path)
    box.add_event(make_alert(1, rev=2, state="update"))
    box.add_event(make_alert(1, rev=1, state="update"))
    assert [a.rev for a in box.recent_events()] == [2]
    assert box.stats()["depth"]["alert"] == 2
    box.close()


def test_event_rows_are_trimmed_to_the_newest(tmp_path, monkeypatch):
    """Only the newest KEEP_EVENTS event rows stay (the messages themselves are not touched)."""
    from edge_agent.outbox import store

    monkeypatch.setattr(store, "KEEP_EVENTS", 5)
    box = open_box(tmp_path)
    for i in range(8):
        box.add_event(make_alert(i))
    kept = [r[0] for r in box.db.execute("SELECT id FROM events ORDER BY updated")]
    assert kept == [make_alert(i).id for i in range(3, 8)]
    assert box.stats()["depth"]["alert"] == 8
    box.close()


def test_concurrent_adds_and_acks(tmp_path):
    """Two producer threads and one acking thread share the outbox without losing a message."""
    box = open_box(tmp_path)
    acked: list[int] = []
    done = threading.Event()

    def produce(base: int) -> None:
        for i in range(100):
            box.add_event(make_alert(base + i))

    def consume() -> None:
        while not done.is_set() or box.next_pending():
            batch = box.next_pending(limit=7)
            box.ack([m.seq for m in batch])
            acked.extend(m.seq for m in batch)

    threads = [threading.Thread(target=produce, args=(b,)) for b in (0, 1000)]
    consumer = threading.Thread(target=consume)
    consumer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    consumer.join(30)
    assert len(acked) == len(set(acked)) == 200
    assert box.stats()["depth_total"] == 0 and box.stats()["bytes"] == 0
    box.close()
