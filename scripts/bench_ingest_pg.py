"""The PostgreSQL limit of `scripts/bench_ingest.py --storage postgresql`.

The same alert rows the receiver stores, inserted with plain psycopg 3 into the receiver's own table
(made by its migrations, in the benchmark's throw-away schema): one transaction per row, and one per
batch of the receiver's group-commit size, by `executemany` (psycopg pipelines it: one round trip
per batch) and by `COPY`. To locate the cost, the receiver's layers in-process without MQTT:
`PostgresStorage.upsert_alert` (a transaction per alert) and `Ingestor.handle_batch` (the group
commit). The tables are emptied before every round.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_common as bc
import psycopg
from bench_ingest_limits import row_of

from bk_contract import Alert, topic
from cloud_receiver.config import LimitsConfig
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import utc_now

EMPTIED = ("alerts", "push_outbox", "rejects")


def _empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(EMPTIED)}")


def raw_rows(url: str, rows: list[dict[str, Any]], batch: int) -> float:
    """Plain INSERTs, one transaction per `batch` rows (executemany: pipelined by psycopg)."""
    columns = list(rows[0])
    sql = f"INSERT INTO alerts ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    values = [tuple(r[c] for c in columns) for r in rows]
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(values), batch):
                if batch == 1:
                    cur.execute(sql, values[i])
                else:
                    cur.executemany(sql, values[i:i + batch])
                conn.commit()
        return time.perf_counter() - t0


def raw_copy(url: str, rows: list[dict[str, Any]], batch: int) -> float:
    """COPY … FROM STDIN, one COPY and one transaction per `batch` rows."""
    columns = list(rows[0])
    values = [tuple(r[c] for c in columns) for r in rows]
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(values), batch):
                with cur.copy(f"COPY alerts ({', '.join(columns)}) FROM STDIN") as copy:
                    for v in values[i:i + batch]:
                        copy.write_row(v)
                conn.commit()
        return time.perf_counter() - t0


def storage_upserts(url: str, alerts: list[Alert]) -> float:
    """`PostgresStorage.upsert_alert` per alert, each its own transaction (no JSON, no MQTT)."""
    storage = PostgresStorage(url, migrate=False)
    try:
        t0 = time.perf_counter()
        for a in alerts:
            storage.upsert_alert(a, utc_now())
        return time.perf_counter() - t0
    finally:
        storage.close()


def ingestor_batches(url: str, alerts: list[Alert], batch: int, media_dir: Path) -> float:
    """The receiver's group commit without MQTT: `Ingestor.handle_batch` of `batch` messages per transaction."""
    msgs = [(topic(a.device_id, "alert"), a.model_dump_json().encode()) for a in alerts]
    ing = Ingestor(PostgresStorage(url, migrate=False), media_dir, LimitsConfig(), on_alert=lambda _row: None)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(msgs), batch):
            if any(r.outcome != "stored" for r in ing.handle_batch(msgs[i:i + batch])):
                raise bc.BenchError("in-process batch ingest did not store every alert")
        return time.perf_counter() - t0
    finally:
        ing.storage.close()


def measure_pg_limits(url: str, tmp: Path, work: dict[str, list[Alert]], rounds: int,
                      rx_batch: int) -> dict[str, dict[str, Any]]:
    """Each path `rounds` times into the emptied tables of `url` (the receiver's schema); medians."""
    alerts = [a for group in itertools.zip_longest(*work.values()) for a in group if a is not None]  # publish order
    now = utc_now()
    rows = [row_of(a, bc.CANTEEN[0], now) for a in alerts]
    stages: list[tuple[str, Callable[[], float]]] = [
        ("raw_per_row", lambda: raw_rows(url, rows, 1)),
        ("raw_batch", lambda: raw_rows(url, rows, rx_batch)),
        ("raw_copy", lambda: raw_copy(url, rows, rx_batch)),
        ("storage_upsert", lambda: storage_upserts(url, alerts)),
        ("ingestor_batch", lambda: ingestor_batches(url, alerts, rx_batch, tmp / "media-inproc"))]
    out: dict[str, dict[str, Any]] = {}
    for name, run in stages:
        results = []
        for _ in range(rounds):
            _empty(url)
            seconds = run()
            if (got := bc.scalar(url, "SELECT count(*) FROM alerts")) != len(rows):
                raise bc.BenchError(f"{name} stored {got} of {len(rows)} rows")
            results.append({"alerts": len(rows), "seconds": seconds, "alerts_per_s": bc.rate(len(rows), seconds)})
        out[name] = bc.summarise(results)
        bc.say(f"  {name}: {out[name]['alerts_per_s']:,.0f} alerts/s (median of {rounds})")
    _empty(url)
    return out


PG_LABELS = {"raw_per_row": "raw psycopg, 1 txn per row", "raw_batch": "raw psycopg executemany, 1 txn per {b}",
             "raw_copy": "raw psycopg COPY, 1 txn per {b}", "storage_upsert": "PostgresStorage.upsert_alert, in-proc",
             "ingestor_batch": "Ingestor.handle_batch({b}), in-proc"}


def server_version(url: str) -> str:
    return str(bc.scalar(url, "SHOW server_version"))
