"""Group commit: messages stored in one transaction per batch and acknowledged only after it commits."""

from __future__ import annotations

import sqlite3

import pytest
from support.receiver_harness import DeviceClient, RunningReceiver, make_alert, receiver_config
from support.waiting import async_wait_until

from bk_contract import topic
from cloud_receiver.appkeys import SUBSCRIBER
from cloud_receiver.config import LimitsConfig
from cloud_receiver.errors import StorageError
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.storage.sqlite import SqliteStorage
from devkit.localbroker import running_broker

pytestmark = pytest.mark.integration

DEV = "64050200001180000501"
UNKNOWN = "64050200001180000599"


@pytest.fixture
def broker(tmp_path):
    with running_broker(tmp_path / "broker") as b:
        yield b


def _register(storage, device_id=DEV):
    storage.add_canteen("canteen-1", "第一小学食堂", "640502")
    storage.add_device(device_id, "canteen-1", "box")


def _committed_alerts(db_path) -> int:
    """Alerts visible to another connection, i.e. committed."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
    finally:
        conn.close()


async def _queue_while_down(cfg, broker, messages: list[tuple[str, bytes | str]]) -> None:
    """Make the receiver's persistent session, stop it, publish: the broker holds the messages for it."""
    rx = await RunningReceiver(cfg).start()
    _register(rx.storage)
    await rx.stop()
    dev = DeviceClient(broker, DEV)
    try:
        assert [dev.publish(t, p) for t, p in messages] == [0] * len(messages)
    finally:
        dev.close()


def test_handle_batch_one_transaction_counts_and_announces_after_commit(tmp_path):
    """A batch with rejects stores the good messages in one commit; a storage error mid-batch leaves nothing."""
    store = SqliteStorage(tmp_path / "r.db")
    _register(store)
    announced: list[dict] = []
    ing = Ingestor(store, tmp_path / "media", LimitsConfig(), on_alert=announced.append)
    batch = [(topic(DEV, "alert"), make_alert(DEV, 1).model_dump_json().encode()),
             (topic(DEV, "alert"), b"{not json"),
             (topic(UNKNOWN, "alert"), make_alert(UNKNOWN, 2).model_dump_json().encode()),
             (topic(DEV, "alert"), make_alert(DEV, 3).model_dump_json().encode()),
             (topic(DEV, "alert"), make_alert(DEV, 1).model_dump_json().encode())]  # repeat inside the batch
    outcomes = [r.outcome for r in ing.handle_batch(batch)]
    assert outcomes == ["stored", "rejected", "rejected", "stored", "duplicate"]
    assert _committed_alerts(tmp_path / "r.db") == 2 and store.count("rejects") == 2
    assert [r["id"] for r in announced] == [make_alert(DEV, 1).id, make_alert(DEV, 3).id]
    assert ing.counts == {"stored": 2, "duplicate": 1, "rejected": 2}

    real = store.upsert_alert
    calls = []

    def fail_third(alert, received_at):
        calls.append(alert.id)
        if len(calls) == 3:
            raise StorageError("disk I/O error (simulated)")
        return real(alert, received_at)

    store.upsert_alert = fail_third
    batch2 = [(topic(DEV, "alert"), make_alert(DEV, n).model_dump_json().encode()) for n in (10, 11, 12, 13)]
    with pytest.raises(StorageError):
        ing.handle_batch(batch2 + [(topic(DEV, "alert"), b"{not json")])
    assert _committed_alerts(tmp_path / "r.db") == 2 and store.count("rejects") == 2  # the whole batch rolled back
    assert ing.counts == {"stored": 2, "duplicate": 1, "rejected": 2} and len(announced) == 2
    store.close()


async def test_batch_with_invalid_messages_stores_the_others_and_acks_all(broker, tmp_path):
    """Queued alerts arrive as batches; the invalid ones are rejected and recorded, the others stored, every one acked."""
    cfg = receiver_config(tmp_path, broker)
    good = [make_alert(DEV, n) for n in range(60)]
    messages: list[tuple[str, bytes | str]] = [(topic(DEV, "alert"), a.model_dump_json()) for a in good]
    messages.insert(10, (topic(DEV, "alert"), b"{not json"))
    messages.insert(30, (topic(UNKNOWN, "alert"), make_alert(UNKNOWN, 1).model_dump_json()))
    await _queue_while_down(cfg, broker, messages)

    rx = await RunningReceiver(cfg).start(wait_subscribed=False)
    try:
        sub = rx.app[SUBSCRIBER]
        assert await async_wait_until(lambda: sum(sub.counts.values()) == len(messages))
        assert sub.counts == {"stored": 60, "duplicate": 0, "rejected": 2}
        assert rx.storage.count("alerts") == 60
        assert sorted(r["reason"][:15] for r in rx.storage.list_rejects()) == ["not JSON: Expec", "unknown device "]
    finally:
        await rx.stop()
    # (counted once the subscriber thread has ended: a batch is counted after its PUBACKs, after its rows)
    # 62 messages waiting together: a commit per message (62) or per pair (31) cannot meet this bound
    assert 1 <= sub.batches <= len(messages) // 10, f"{sub.batches} commits for {len(messages)} messages"
    rx2 = await RunningReceiver(cfg).start()  # everything was acknowledged: nothing comes again
    try:
        dev = DeviceClient(broker, DEV)
        assert dev.publish_alert(make_alert(DEV, 999)) == 0  # a marker: once it is stored, any redelivery came first
        dev.close()
        assert await async_wait_until(lambda: rx2.storage.get_alert(make_alert(DEV, 999).id) is not None)
        # counts follow the commit and its acknowledgements: wait for the marker's count too
        assert await async_wait_until(lambda: rx2.app[SUBSCRIBER].counts.get("stored") == 1, 5)
        assert rx2.app[SUBSCRIBER].counts == {"stored": 1, "duplicate": 0, "rejected": 0}
    finally:
        await rx2.stop()


async def test_a_burst_is_committed_in_transactions_of_at_most_batch_max(broker, tmp_path, monkeypatch):
    """500 small alerts queued for a stopped receiver arrive as one burst (several per socket read): they are
    committed in transactions of at most `mqtt.batch_max` (200) messages each, and in few of them."""
    sizes: list[int] = []  # messages per handle_batch call, i.e. per transaction
    real = Ingestor.handle_batch

    def spy(self, messages):
        sizes.append(len(messages))
        return real(self, messages)

    monkeypatch.setattr(Ingestor, "handle_batch", spy)
    cfg = receiver_config(tmp_path, broker)
    assert cfg.mqtt.batch_max == 200 and cfg.mqtt.receive_maximum > cfg.mqtt.batch_max
    good = [make_alert(DEV, n) for n in range(500)]
    # the defaults left out: ~150-byte payloads, so one 64 KiB read carries well over 200 messages
    await _queue_while_down(cfg, broker, [(topic(DEV, "alert"), a.model_dump_json(exclude_defaults=True))
                                          for a in good])
    sizes.clear()
    rx = await RunningReceiver(cfg).start(wait_subscribed=False)
    try:
        sub = rx.app[SUBSCRIBER]
        assert await async_wait_until(lambda: sum(sub.counts.values()) == len(good), 15)
        assert sub.counts == {"stored": 500, "duplicate": 0, "rejected": 0}
    finally:
        await rx.stop()
    assert sum(sizes) == 500 and sub.batches == len(sizes), (sizes, sub.batches)
    assert max(sizes) <= cfg.mqtt.batch_max, f"a transaction held more than batch_max messages: {sizes}"
    assert len(sizes) <= len(good) // 20, f"{len(sizes)} commits for a burst of {len(good)}: {sizes}"


def _patch_upsert(monkeypatch, replacement):
    """Replace SqliteStorage.upsert_alert before the receiver starts; `replacement(real, self, alert, at)`."""
    real = SqliteStorage.upsert_alert

    def patched(self, alert, received_at):
        return replacement(real, self, alert, received_at)

    monkeypatch.setattr(SqliteStorage, "upsert_alert", patched)


async def test_storage_failure_mid_batch_leaves_all_unacked_then_stored_once(broker, tmp_path, monkeypatch):
    """A storage error in the middle of a batch commits none of it; after redelivery every alert is stored exactly once."""
    cfg = receiver_config(tmp_path, broker, mqtt={"store_retries": 1})
    good = [make_alert(DEV, n) for n in range(40)]
    await _queue_while_down(cfg, broker, [(topic(DEV, "alert"), a.model_dump_json()) for a in good])
    failures: list[tuple[int, int]] = []  # (rows this connection sees, rows committed) at each failure

    def failing(real, store, alert, received_at):
        if len(failures) < 2 and alert.id == good[20].id:  # twice: the first try and the one retry
            mine = store.db.conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
            failures.append((mine, _committed_alerts(cfg.storage.path)))
            raise StorageError("database is locked (simulated)")
        return real(store, alert, received_at)

    _patch_upsert(monkeypatch, failing)
    rx = await RunningReceiver(cfg).start(wait_subscribed=False)
    try:
        sub = rx.app[SUBSCRIBER]
        assert await async_wait_until(lambda: rx.storage.count("alerts") == len(good), 15)
        assert len(failures) == 2
        mine, committed = failures[0]
        assert mine > committed, "the failing alert sits in the middle of a batch whose first part is not committed"
        assert await async_wait_until(lambda: sum(sub.counts.values()) == len(good))  # counts follow the commit
        # redelivered and stored once: had any of the failed batch been committed, it would come back as a duplicate
        assert sub.counts == {"stored": len(good), "duplicate": 0, "rejected": 0}
        ids = [r["id"] for r in rx.storage.db.query("SELECT id FROM alerts")]
        assert sorted(ids) == sorted(a.id for a in good)
    finally:
        await rx.stop()


async def test_unexpected_error_in_batch_falls_back_to_one_by_one(broker, tmp_path, monkeypatch):
    """A message that breaks ingest (a bug) is recorded as an internal error; the rest of its batch is stored."""
    cfg = receiver_config(tmp_path, broker)
    good = [make_alert(DEV, n) for n in range(30)]
    await _queue_while_down(cfg, broker, [(topic(DEV, "alert"), a.model_dump_json()) for a in good])

    def buggy(real, store, alert, received_at):
        if alert.id == good[7].id:
            raise KeyError("a bug")
        return real(store, alert, received_at)

    _patch_upsert(monkeypatch, buggy)
    rx = await RunningReceiver(cfg).start(wait_subscribed=False)
    try:
        sub = rx.app[SUBSCRIBER]
        assert await async_wait_until(lambda: sum(sub.counts.values()) == len(good), 15)
        assert sub.counts == {"stored": 29, "duplicate": 0, "rejected": 1}
        assert rx.storage.get_alert(good[7].id) is None and rx.storage.count("alerts") == 29
        assert [r["reason"] for r in rx.storage.list_rejects()] == ["internal error: KeyError('a bug')"]
    finally:
        await rx.stop()


async def test_hub_inbox_wakes_the_loop_once_per_burst():
    """Rows handed over from another thread while the loop is busy arrive in order with one wake-up."""
    import asyncio
    import threading

    from cloud_receiver.ingest.hub import AlertHub
    hub = AlertHub()
    hub.bind_loop(asyncio.get_running_loop())
    queue = hub.subscribe().queue
    sender = threading.Thread(target=lambda: [hub.publish_threadsafe({"id": n}) for n in range(100)])
    sender.start()
    sender.join()  # blocks the loop: the whole burst is in the inbox before the loop drains it
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [queue.get_nowait() for _ in range(100)] == [(n + 1, {"id": n}) for n in range(100)]  # (seq, row)
    assert hub.wakeups == 1 and hub.published == 100
    hub.publish_threadsafe({"id": "later"})  # the inbox is empty again: the next burst wakes it again
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert queue.get_nowait() == (101, {"id": "later"}) and hub.wakeups == 2
