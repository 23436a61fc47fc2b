#!/usr/bin/env python3
"""The box's event store: `Outbox.add_event` beside raw SQLite inserts and bare fsync, on the same disk.

    python scripts/bench_events.py                    # 3 rounds of 400 events, in var/bench/ of the checkout
    python scripts/bench_events.py --events 1000 --rounds 5 --dir /var/lib/brightkitchen

`add_event` writes one event row and its alert message (and, with a snapshot, the snapshot's
chunks) in ONE transaction of a WAL database with synchronous=FULL: an accepted alert survives a
power cut, at the price of one WAL fsync per event. Its limit is therefore the disk's fsync rate,
not SQLite or Python. Measured side by side, each row a median of --rounds rounds:

- `fsync`: append the alert's bytes to a plain file and fsync it (the disk's floor per commit);
- `raw sqlite3, 1 insert per commit`: the alert message's row alone, the same pragmas;
- `raw sqlite3, event + message per commit`: the two rows add_event writes, plain SQL;
- `Outbox.add_event`: the real call, alert only;
- `Outbox.add_event + snapshot`: with a 60 KiB JPEG-sized snapshot (alert + 2 chunks, one commit);
- `Outbox.add_event, 10,000 events kept`: the same on a store already holding KEEP_EVENTS events, as on
  a box that has run for a while (each add trims the events table back to KEEP_EVENTS);
- `raw sqlite3, 500 per commit`: what batching would give (for scale; the box does not batch alerts).

Ratios are against the raw two-row commit (the same work without our code). The folder must be
on the disk the box really uses (not tmpfs), or the figures mean nothing: the script prints its
file system type.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_machine  # noqa: E402

import bk_contract  # noqa: E402
from edge_agent.outbox.store import KEEP_EVENTS, Outbox  # noqa: E402

DEVICE = "64050200001180000001"
SCHEMA = """
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL, created REAL NOT NULL,
    bytes INTEGER NOT NULL, grp TEXT, event_id TEXT, state INTEGER NOT NULL DEFAULT 0);
CREATE INDEX messages_next ON messages(state, priority, seq);
CREATE TABLE events (id TEXT PRIMARY KEY, rev INTEGER NOT NULL, camera_id TEXT NOT NULL, type TEXT NOT NULL,
    state TEXT NOT NULL, started_at TEXT NOT NULL, updated REAL NOT NULL, alert TEXT NOT NULL);
"""


def alert(n: int, tag: str) -> bk_contract.Alert:
    return bk_contract.Alert(id=f"{tag}{n:08d}", device_id=DEVICE, camera_id="cam1", type="phone_use",
                             started_at=datetime.now(UTC), score=0.9, detail="persons=1")


def raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def run_fsync(folder: Path, n: int, body: bytes) -> float:
    path = folder / "fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, body)
            os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def run_raw(folder: Path, n: int, body: bytes, *, with_event: bool, per_commit: int = 1) -> float:
    conn = raw_db(folder / "raw.db")
    topic = bk_contract.topic(DEVICE, "alert")
    try:
        t0 = time.perf_counter()
        for start in range(0, n, per_commit):
            conn.execute("BEGIN")
            for i in range(start, min(n, start + per_commit)):
                now = time.time()
                if with_event:
                    conn.execute("INSERT OR REPLACE INTO events VALUES (?, 0, 'cam1', 'phone_use', 'start', ?, ?, ?)",
                                 [f"R{i:08d}", "2026-03-01T08:00:00+00:00", now, body.decode()])
                conn.execute("INSERT INTO messages (topic, payload, qos, priority, created, bytes, event_id)"
                             " VALUES (?, ?, 1, 0, ?, ?, ?)", [topic, body, now, len(body), f"R{i:08d}"])
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


def run_outbox(folder: Path, n: int, snapshot: bytes | None, kept: int = 0) -> float:
    """`n` add_event calls; `kept` older events are in the store first (a box that has run for a while)."""
    box = Outbox(folder / "agent.db", device_id=DEVICE)
    if kept:
        body = alert(0, "K").model_dump_json()
        with box.db.conn:
            box.db.conn.executemany("INSERT INTO events VALUES (?, 0, 'cam1', 'phone_use', 'start', ?, ?, ?)",
                                    [(f"K{i:08d}", "2026-03-01T08:00:00+00:00", time.time() - 1e6 + i, body)
                                     for i in range(kept)])
    alerts = [alert(i, "S" if snapshot else "A") for i in range(n)]
    snaps = [snapshot + i.to_bytes(4, "big") for i in range(n)] if snapshot else [None] * n  # distinct pictures
    try:
        t0 = time.perf_counter()
        for a, s in zip(alerts, snaps, strict=True):
            box.add_event(a, s)
        return time.perf_counter() - t0
    finally:
        box.close()


def measure(base: Path, rounds: int, fn: Callable[[Path], float], n: int) -> list[float]:
    rates = []
    for r in range(rounds):
        folder = Path(tempfile.mkdtemp(prefix=f"r{r}-", dir=base))
        try:
            rates.append(n / fn(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=400, help="events (commits) per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=ROOT / "var" / "bench", help="folder on the disk to measure")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="bench-events-", dir=args.dir))
    n = args.events
    body = alert(0, "A").model_dump_json(exclude_none=True).encode()
    snapshot = b"\xff\xd8\xff\xe0" + os.urandom(60 * 1024) + b"\xff\xd9"
    print(bench_machine.cpu_line())
    print(f"{bench_machine.disk_line(args.dir)}; python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(f"{n} commits per round, median of {args.rounds} rounds; alert message {len(body)} bytes\n")
    rows: list[tuple[str, list[float]]] = []
    try:
        rows.append(("fsync of the alert's bytes (disk floor)", measure(base, args.rounds,
                                                                          lambda f: run_fsync(f, n, body), n)))
        rows.append(("raw sqlite3, 1 insert per commit", measure(
            base, args.rounds, lambda f: run_raw(f, n, body, with_event=False), n)))
        rows.append(("raw sqlite3, event + message per commit", measure(
            base, args.rounds, lambda f: run_raw(f, n, body, with_event=True), n)))
        rows.append(("Outbox.add_event (alert)", measure(base, args.rounds, lambda f: run_outbox(f, n, None), n)))
        rows.append(("Outbox.add_event + 60 KiB snapshot", measure(
            base, args.rounds, lambda f: run_outbox(f, n, snapshot), n)))
        rows.append((f"Outbox.add_event, {KEEP_EVENTS:,} events kept", measure(
            base, args.rounds, lambda f: run_outbox(f, n // 4, None, kept=KEEP_EVENTS), n // 4)))
        rows.append(("raw sqlite3, event + message, 500 per commit", measure(
            base, args.rounds, lambda f: run_raw(f, n * 10, body, with_event=True, per_commit=500), n * 10)))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    limit = statistics.median(rows[2][1])
    width = max(len(name) for name, _ in rows)
    print(f"{'path':<{width}}  {'per s':>8}  {'worst':>8}  {'best':>8}  {'ms each':>7}  {'/ raw 2-row':>11}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 8}  {'-' * 7}  {'-' * 11}")
    for name, rates in rows:
        med = statistics.median(rates)
        print(f"{name:<{width}}  {med:>8.0f}  {min(rates):>8.0f}  {max(rates):>8.0f}  {1000 / med:>7.2f}  "
              f"{med / limit:>11.2f}")
    ours = statistics.median(rows[3][1])
    print(f"\nOutbox.add_event / raw event + message commit = {ours / limit:.2f}; "
          f"/ bare fsync = {ours / statistics.median(rows[0][1]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
