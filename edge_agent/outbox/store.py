"""The event store and outbox of the box: one SQLite file (WAL, synchronous=FULL).

Every message is written here before it is sent and deleted only when the broker acknowledges it.
`synchronous=FULL` because in WAL mode NORMAL may lose the last commits on a power cut, and an
accepted alert must survive one; the cost is one WAL fsync per commit, and the uplink batches its
deletions so a fast drain does not pay it per message (see docs/uplink.md).

Thread-safe: one connection guarded by a lock (the pipeline adds from its thread, the uplink
reads and deletes from its own). One process owns the file at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

import bk_contract
from edge_agent.outbox.priority import PRIORITY_NAMES, Priority

log = structlog.get_logger(__name__)

PENDING, REFUSED = 0, 1
KEEP_EVENTS = 10_000

migrations = Migrations("edge_agent.outbox.store")


@migrations(name="m001_initial")
def _m001_initial(db: Database) -> None:
    db.execute("""
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            retain INTEGER NOT NULL DEFAULT 0,
            priority INTEGER NOT NULL,
            created REAL NOT NULL,
            bytes INTEGER NOT NULL,
            grp TEXT,
            event_id TEXT,
            state INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            refused_code INTEGER,
            refused_reason TEXT,
            refused_at REAL
        )""")
    db.execute("CREATE INDEX messages_next ON messages(state, priority, seq)")
    db.execute("CREATE INDEX messages_grp ON messages(grp)")
    db.execute("""
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            rev INTEGER NOT NULL,
            camera_id TEXT NOT NULL,
            type TEXT NOT NULL,
            state TEXT NOT NULL,
            started_at TEXT NOT NULL,
            updated REAL NOT NULL,
            alert TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX events_updated ON events(updated)")
    db.execute("CREATE TABLE drops (priority INTEGER PRIMARY KEY, messages INTEGER NOT NULL, bytes INTEGER NOT NULL)")


@migrations(name="m002_commands_seen")
def _m002_commands_seen(db: Database) -> None:
    # ids of the cloud's commands until they expire: a replayed command is refused, even after a restart
    db.execute("CREATE TABLE commands_seen (id TEXT PRIMARY KEY, expires REAL NOT NULL)")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: Priority
    attempts: int


class Outbox:
    """Durable queue of MQTT messages plus the recent events they came from."""

    def __init__(self, path: Path, *, device_id: str, quota_bytes: int = 2 << 30, chunk_bytes: int = 32768) -> None:
        self.path = Path(path)
        self.device_id = device_id
        self.quota_bytes = int(quota_bytes)
        self.chunk_bytes = int(chunk_bytes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self.db = Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=FULL")
        migrations.apply(self.db)
        self._bytes = int(self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM messages").fetchone()[0])
        self.changes = 0  # grows on every add; lets the uplink skip queries when nothing changed
        self._log = log.bind(device=device_id, outbox=str(self.path))

    # --- writing (pipeline side) ---------------------------------------------------------
    def add_event(self, alert: bk_contract.Alert, snapshot: bytes | None = None) -> bk_contract.Alert:
        """One transaction: upsert the event row (id, rev), store the alert message and, if a snapshot is
        given, its media chunks as messages; returns the alert with `snapshot` MediaRef filled."""
        chunks: list[bytes] = []
        if snapshot is not None:
            digest, chunks = bk_contract.split_media(snapshot, "image/jpeg", self.chunk_bytes)
            ref = bk_contract.MediaRef(id=digest[:32], sha256=digest, bytes=len(snapshot), content_type="image/jpeg")
            alert = alert.model_copy(update={"snapshot": ref})
        body = alert.model_dump_json(exclude_none=True).encode()
        now = time.time()
        with self._tx():
            row = self.db.execute("SELECT rev FROM events WHERE id = ?", [alert.id]).fetchone()
            if row is None or row[0] <= alert.rev:
                self.db.execute(
                    "INSERT OR REPLACE INTO events (id, rev, camera_id, type, state, started_at, updated, alert) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [alert.id, alert.rev, alert.camera_id, alert.type, alert.state,
                     alert.started_at.isoformat(), now, body.decode()])
            self._insert(bk_contract.topic(self.device_id, "alert"), body, 1, False, Priority.ALERT, now,
                         event_id=alert.id)
            if chunks and alert.snapshot is not None:
                media_id = alert.snapshot.id
                queued = self.db.execute("SELECT 1 FROM messages WHERE grp = ? LIMIT 1", [media_id]).fetchone()
                if queued is None:  # the same picture already waiting need not be queued twice
                    for i, chunk in enumerate(chunks):
                        self._insert(bk_contract.topic(self.device_id, "media", media_id=media_id, seq=i),
                                     chunk, 1, False, Priority.SNAPSHOT, now, grp=media_id, event_id=alert.id)
            # keep the newest KEEP_EVENTS: the cut-off row through the `updated` index, then a range delete
            # (the old `id NOT IN (… LIMIT n)` scanned the whole table on every add: 15–43 ms at 10,000)
            self.db.execute(
                "DELETE FROM events WHERE updated < "
                "(SELECT updated FROM events ORDER BY updated DESC LIMIT 1 OFFSET ?)", [KEEP_EVENTS - 1])
            self._enforce_quota()
        self.changes += 1
        return alert

    def add_message(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                    priority: Priority = Priority.CLIP, group: str | None = None, supersede: bool = False) -> int:
        """Queue any other message (clip chunks, live pieces, command results); returns its seq.

        `supersede`: first drop what of `group` is still queued — a live camera's older GOPs when a new one
        starts: video that waited behind alert media is worth nothing to a viewer by the time it could go."""
        with self._tx():
            if supersede and group:
                self._drop("grp = ?", [group], int(priority))
            seq = self._insert(topic, payload, qos, retain, priority, time.time(), grp=group)
            self._enforce_quota()
        self.changes += 1
        return seq

    def first_sight(self, command_id: str, expires: float, now: float) -> bool:
        """Record a command id until `expires` (epoch s; ids expired at `now` are forgotten); False when it
        was seen before (a replay)."""
        with self._tx():
            self.db.execute("DELETE FROM commands_seen WHERE expires < ?", [now])
            cur = self.db.execute("INSERT OR IGNORE INTO commands_seen (id, expires) VALUES (?, ?)",
                                  [command_id, expires])
        return cur.rowcount == 1

    def add_media(self, data: bytes, content_type: str, *, priority: Priority = Priority.CLIP) -> bk_contract.MediaRef:
        """Queue a clip (or any media) as chunks under `media/{id}/{seq}`; returns its MediaRef."""
        digest, chunks = bk_contract.split_media(data, content_type, self.chunk_bytes)
        ref = bk_contract.MediaRef(id=digest[:32], sha256=digest, bytes=len(data), content_type=content_type)
        now = time.time()
        with self._tx():
            for i, chunk in enumerate(chunks):
                self._insert(bk_contract.topic(self.device_id, "media", media_id=ref.id, seq=i), chunk, 1, False,
                             priority, now, grp=ref.id)
            self._enforce_quota()
        self.changes += 1
        return ref

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """Locked transaction that also rolls back the in-memory byte count."""
        with self._lock:
            before = self._bytes
            try:
                with self.db.atomic():
                    yield
            except BaseException:
                self._bytes = before
                raise

    def _insert(self, topic: str, payload: bytes, qos: int, retain: bool, priority: Priority, now: float, *,
                grp: str | None = None, event_id: str | None = None) -> int:
        size = len(payload) + len(topic.encode())
        cur = self.db.conn.execute(
            "INSERT INTO messages (topic, payload, qos, retain, priority, created, bytes, grp, event_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [topic, payload, qos, int(retain), int(priority), now, size, grp, event_id])
        self._bytes += size
        return int(cur.lastrowid or 0)

    def _enforce_quota(self) -> None:
        """Inside the caller's transaction: drop lowest priority, oldest first, until under quota."""
        dropped: dict[int, list[int]] = {}
        while self._bytes > self.quota_bytes:
            row = self.db.conn.execute(
                "SELECT seq, priority, grp FROM messages WHERE priority > ? ORDER BY priority DESC, seq LIMIT 1",
                [int(Priority.ALERT)]).fetchone()
            if row is None:
                self._log.warning("outbox_quota_exceeded_by_alerts", bytes=self._bytes, quota=self.quota_bytes)
                break
            seq, prio, grp = row
            # a media item is useless without all its chunks: drop the whole group together
            where, args = ("grp = ?", [grp]) if grp else ("seq = ?", [seq])
            n, size = self._drop(where, args, prio)
            acc = dropped.setdefault(prio, [0, 0])
            acc[0] += n
            acc[1] += size
        if dropped:
            self._log.warning("outbox_quota_drop", quota=self.quota_bytes, bytes=self._bytes,
                              dropped={PRIORITY_NAMES[p]: {"messages": v[0], "bytes": v[1]} for p, v in dropped.items()})

    # --- reading and acknowledging (uplink side) -----------------------------------------
    def _drop(self, where: str, args: list[object], priority: int) -> tuple[int, int]:
        """Inside the caller's transaction: delete the queued messages `where`, counted in `drops`."""
        n, size = self.db.conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM messages WHERE {where}", args).fetchone()
        if n:
            self.db.conn.execute(f"DELETE FROM messages WHERE {where}", args)
            self.db.conn.execute(
                "INSERT INTO drops (priority, messages, bytes) VALUES (?, ?, ?) ON CONFLICT(priority) DO UPDATE "
                "SET messages = messages + excluded.messages, bytes = bytes + excluded.bytes", [priority, n, size])
            self._bytes -= size
        return int(n), int(size)

    def next_pending(self, exclude: Collection[int] = (), limit: int = 1) -> list[OutboxMessage]:
        """Oldest pending messages of the most urgent priority first, skipping `exclude` (in flight)."""
        marks = ",".join("?" * len(exclude))
        cond = f"AND seq NOT IN ({marks})" if exclude else ""
        with self._lock:
            rows = self.db.conn.execute(
                f"SELECT seq, topic, payload, qos, retain, priority, attempts FROM messages WHERE state = ? {cond} "
                "ORDER BY priority, seq LIMIT ?", [PENDING, *exclude, limit]).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), Priority(r[5]), r[6]) for r in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """Count publish attempts, one transaction for a batch (kept to diagnose refused and retried messages)."""
        seqs = list(seqs)
        if not seqs:
            return
        with self._lock, self.db.atomic():
            self.db.conn.executemany("UPDATE messages SET attempts = attempts + 1 WHERE seq = ?", [[s] for s in seqs])

    def ack(self, seqs: Iterable[int], *, attempted: Iterable[int] = ()) -> int:
        """Delete acknowledged messages and count new publish attempts, in one transaction (one fsync
        per uplink round, not per message); returns how many acknowledged messages were still there."""
        seqs, attempted = list(seqs), list(attempted)
        if not seqs and not attempted:
            return 0
        with self._tx():
            if attempted:
                self.db.conn.executemany("UPDATE messages SET attempts = attempts + 1 WHERE seq = ?",
                                         [[s] for s in attempted])
            if not seqs:
                return 0
            marks = ",".join("?" * len(seqs))
            size = self.db.conn.execute(f"SELECT COALESCE(SUM(bytes), 0) FROM messages WHERE seq IN ({marks})",
                                        seqs).fetchone()[0]
            n = self.db.conn.execute(f"DELETE FROM messages WHERE seq IN ({marks})", seqs).rowcount
            self._bytes -= int(size)
        return n

    def mark_refused(self, seq: int, code: int, reason: str) -> None:
        """The broker refused this message: keep it, out of the send queue, for a human to look at."""
        with self._lock, self.db.atomic():
            self.db.conn.execute(
                "UPDATE messages SET state = ?, refused_code = ?, refused_reason = ?, refused_at = ? WHERE seq = ?",
                [REFUSED, code, reason, time.time(), seq])

    def retry_refused(self, older_than_s: float = 0.0) -> int:
        """Put refused messages (refused at least `older_than_s` ago) back in the queue; returns the count."""
        with self._lock, self.db.atomic():
            n = self.db.conn.execute("UPDATE messages SET state = ? WHERE state = ? AND refused_at <= ?",
                                     [PENDING, REFUSED, time.time() - older_than_s]).rowcount
        if n:
            self.changes += 1
        return n

    def refused(self, limit: int = 20) -> list[dict]:
        """Refused messages (topic, code, reason, attempts), oldest first, for health reports."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT seq, topic, priority, refused_code, refused_reason, attempts FROM messages WHERE state = ? "
                "ORDER BY seq LIMIT ?", [REFUSED, limit]).fetchall()
        return [dict(seq=r[0], topic=r[1], priority=PRIORITY_NAMES[r[2]], code=r[3], reason=r[4], attempts=r[5])
                for r in rows]

    # --- reporting -----------------------------------------------------------------------
    def recent_events(self, limit: int = 50) -> list[bk_contract.Alert]:
        with self._lock:
            rows = self.db.conn.execute("SELECT alert FROM events ORDER BY updated DESC, rowid DESC LIMIT ?",
                                        [limit]).fetchall()
        return [bk_contract.Alert.model_validate_json(r[0]) for r in rows]

    def stats(self) -> dict:
        """Depth by priority, bytes, dropped counts, refused counts."""
        names = PRIORITY_NAMES.values()
        depth = dict.fromkeys(names, 0)
        refused = dict.fromkeys(names, 0)
        dropped = dict.fromkeys(names, 0)
        dropped_bytes = dict.fromkeys(names, 0)
        with self._lock:
            for prio, state, n in self.db.conn.execute(
                    "SELECT priority, state, COUNT(*) FROM messages GROUP BY priority, state"):
                (refused if state == REFUSED else depth)[PRIORITY_NAMES[prio]] += n
            for prio, n, size in self.db.conn.execute("SELECT priority, messages, bytes FROM drops"):
                dropped[PRIORITY_NAMES[prio]] = n
                dropped_bytes[PRIORITY_NAMES[prio]] = size
            total_bytes = self._bytes
        return {
            "depth": depth, "depth_total": sum(depth.values()),
            "bytes": total_bytes, "quota_bytes": self.quota_bytes,
            "dropped": dropped, "dropped_bytes": dropped_bytes, "dropped_total": sum(dropped.values()),
            "refused": refused, "refused_total": sum(refused.values()),
        }

    def close(self) -> None:
        with self._lock:
            self.db.close()


def media_id_for(data: bytes) -> str:
    """The media id the outbox gives a picture or clip: the first 32 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:32]
