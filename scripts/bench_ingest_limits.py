"""The limit side of scripts/bench_ingest.py: the same alert rows inserted by plain sqlite3
(one transaction per row, and per batch), and the receiver's own layers run in-process without MQTT
(`SqliteStorage.upsert_alert`, `Ingestor.handle`, `Ingestor.handle_batch`)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any

import bench_common as bc

from bk_contract import Alert, topic
from cloud_receiver.config import LimitsConfig
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.storage.sqlite import SqliteStorage, _alert_fields, utc_now

# --- inputs ----------------------------------------------------------------------------------------

def row_of(alert: Alert, canteen_id: str, received_at: str) -> dict[str, Any]:
    """The alerts-table row the receiver writes for a new alert (same fields, same encoding)."""
    return {**_alert_fields(alert), "canteen_id": canteen_id, "received_at": received_at, "updated_at": received_at}


# --- 2. the SQLite limit and the receiver's own layers in-process ----------------------------------

def raw_sqlite(path: Path, rows: list[dict[str, Any]], batch: int) -> float:
    """Plain sqlite3, the receiver's pragmas (WAL, synchronous NORMAL): one transaction per `batch` rows."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        columns = list(rows[0])
        sql = f"INSERT INTO alerts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        values = [tuple(r[c] for c in columns) for r in rows]
        t0 = time.perf_counter()
        for i in range(0, len(values), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, values[i:i + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        if conn.execute("SELECT count(*) FROM alerts").fetchone()[0] != len(rows):
            raise bc.BenchError(f"raw insert into {path} lost rows")
        return elapsed
    finally:
        conn.close()


def storage_upserts(path: Path, alerts: list[Alert]) -> float:
    """The receiver's `SqliteStorage.upsert_alert` per alert (parsed objects: no JSON, no MQTT, no log)."""
    storage = SqliteStorage(path)
    try:
        t0 = time.perf_counter()
        for a in alerts:
            storage.upsert_alert(a, utc_now())
        return time.perf_counter() - t0
    finally:
        storage.close()


def _messages(alerts: list[Alert]) -> list[tuple[str, bytes]]:
    return [(topic(a.device_id, "alert"), a.model_dump_json().encode()) for a in alerts]


def _ingestor(path: Path) -> Ingestor:
    return Ingestor(SqliteStorage(path), path.parent / "media-inproc", LimitsConfig(), on_alert=lambda _row: None)


def ingestor_handles(path: Path, alerts: list[Alert]) -> float:
    """The receiver's `Ingestor.handle(topic, payload)` per alert: JSON + validation + storage + info log."""
    msgs, ing = _messages(alerts), _ingestor(path)
    try:
        t0 = time.perf_counter()
        for t, p in msgs:
            if ing.handle(t, p).outcome != "stored":
                raise bc.BenchError(f"in-process ingest did not store {t}")
        return time.perf_counter() - t0
    finally:
        ing.storage.close()


def ingestor_batches(path: Path, alerts: list[Alert], batch: int) -> float:
    """The receiver's group commit without MQTT: `Ingestor.handle_batch` of `batch` messages per transaction."""
    msgs, ing = _messages(alerts), _ingestor(path)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(msgs), batch):
            if any(r.outcome != "stored" for r in ing.handle_batch(msgs[i:i + batch])):
                raise bc.BenchError("in-process batch ingest did not store every alert")
        return time.perf_counter() - t0
    finally:
        ing.storage.close()


def measure_limits(tmp: Path, work: dict[str, list[Alert]], batch: int, rounds: int,
                   rx_batch: int) -> dict[str, dict[str, Any]]:
    alerts = [a for group in itertools.zip_longest(*work.values()) for a in group if a is not None]  # publish order
    now = utc_now()
    rows = [row_of(a, bc.CANTEEN[0], now) for a in alerts]
    out: dict[str, dict[str, Any]] = {}
    stages = [("raw_per_row", lambda p: raw_sqlite(p, rows, 1)),
              ("raw_batch", lambda p: raw_sqlite(p, rows, batch)),
              ("storage_upsert", lambda p: storage_upserts(p, alerts)),
              ("ingestor_handle", lambda p: ingestor_handles(p, alerts)),
              ("ingestor_batch", lambda p: ingestor_batches(p, alerts, rx_batch))]
    for name, run in stages:
        results = []
        for r in range(rounds):
            path = tmp / f"{name}-{r}.db"
            bc.fresh_db(path, list(work))
            seconds = run(path)
            results.append({"alerts": len(rows), "seconds": seconds, "alerts_per_s": bc.rate(len(rows), seconds)})
            path.unlink()
        out[name] = bc.summarise(results)
        bc.say(f"  {name}: {out[name]['alerts_per_s']:,.0f} alerts/s (median of {rounds})")
    return out
