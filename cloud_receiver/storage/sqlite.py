"""Storage of the receiver: a small `Storage` protocol and its SQLite implementation.

SQLite runs in WAL mode so the API reads while ingest writes. Every write is one
`BEGIN IMMEDIATE` transaction (a deferred BEGIN that later upgrades to a write lock can fail
with SQLITE_BUSY without waiting), unless it runs inside `batch()`: then it joins the batch's
transaction, which ingest uses to store many MQTT messages with one commit (group commit).
A `SqliteStorage` holds one connection and must be used by one thread at a time: the MQTT
ingest thread and the aiohttp loop each open their own.
PostgreSQL: storage.postgres.PostgresStorage implements the same protocol. Both offer `sql`, the
same database through SQLAlchemy Core (`storage/db.py`), for everything but ingest.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from sqlite_utils import Database

from bk_contract import Alert, ChunkHeader, CommandResult, Status, Telemetry
from cloud_receiver.errors import StorageError
from cloud_receiver.storage.alert_rows import INSERT_ALERT, INSERT_COLUMNS, UPDATE_ALERT, column_defaults
from cloud_receiver.storage.alert_rows import (
    alert_fields as _alert_fields,  # its old name, for storage_pg and the benchmark
)
from cloud_receiver.storage.alert_rows import iso as iso  # re-exported: timestamps are the store's format
from cloud_receiver.storage.db import Db, TextHasNul
from cloud_receiver.storage.migrate import migrate_sqlite
from cloud_receiver.storage.push_outbox import Queuer

log = structlog.get_logger(__name__)

# migration sets applied in this order; a module that does not exist yet is skipped
Outcome = Literal["inserted", "updated", "unchanged"]
# the export feed (workflow/export_feed.py): a change row in the alert's own transaction
_ADD_CHANGE = "INSERT INTO alert_changes (alert_id, kind, at) VALUES (?, ?, ?)"


def utc_now() -> str:
    """Current time as ISO-8601 UTC text, the timestamp format of every table."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AlertWrite:
    outcome: Outcome
    row: dict[str, Any]


class Storage(Protocol):
    """What ingest, the CLI and the API need from a store. Every method is one transaction."""

    push_owner: str  # who claims the pushes of the alerts stored here

    def add_canteen(self, canteen_id: str, name: str = "", jurisdiction: str = "", public_json: str | None = None) -> None: ...
    def get_canteen(self, canteen_id: str) -> dict[str, Any] | None: ...
    def add_device(self, device_id: str, canteen_id: str, name: str = "") -> dict[str, Any]: ...
    def get_device(self, device_id: str) -> dict[str, Any] | None: ...
    def list_devices(self) -> list[dict[str, Any]]: ...
    def max_device_serial(self, prefix: str) -> int: ...
    def batch(self) -> contextlib.AbstractContextManager[Any]: ...
    def upsert_alert(self, alert: Alert, received_at: str) -> AlertWrite: ...
    def upsert_alerts(self, alerts: Sequence[Alert], received_at: str) -> list[AlertWrite]: ...
    def start_alerts(self, alerts: Sequence[Alert], received_at: str) -> Callable[[], list[AlertWrite]]: ...
    def get_alert(self, alert_id: str) -> dict[str, Any] | None: ...
    def record_status(self, status: Status, received_at: str) -> None: ...
    def record_telemetry(self, telemetry: Telemetry, received_at: str) -> None: ...
    def record_command_result(self, device_id: str, result: CommandResult, received_at: str) -> None: ...
    def record_reject(self, device_id: str | None, topic: str, reason: str, at: str) -> None: ...
    def list_rejects(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def get_media(self, device_id: str, media_id: str) -> dict[str, Any] | None: ...
    def media_uploaders(self, sha256: str) -> set[str]: ...
    def add_chunk(self, device_id: str, media_id: str, header: ChunkHeader, data: bytes, received_at: str) -> int: ...
    def chunk_headers(self, device_id: str, media_id: str) -> list[dict[str, Any]]: ...
    def chunk_data(self, device_id: str, media_id: str) -> list[bytes]: ...
    def finish_media(self, device_id: str, media_id: str, header: ChunkHeader, path: str, received_at: str) -> None: ...
    def discard_chunks(self, device_id: str, media_id: str) -> int: ...
    def set_public_json(self, canteen_id: str, public_json: str) -> None: ...
    def discard_stale_chunks(self, older_than: str) -> int: ...
    def count(self, table: str) -> int: ...
    @property
    def sql(self) -> Db: ...
    def close(self) -> None: ...


def translate_errors(*library_errors: type[Exception]) -> Callable[[type], type]:
    """Class decorator: every public method lets the library's errors leave as StorageError, and refuses a text
    argument holding a NUL (TextHasNul naming the argument: PostgreSQL cannot store one, SQLite must agree)."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        names = list(inspect.signature(fn).parameters)

        @functools.wraps(fn)
        def method(*args: Any, **kwargs: Any) -> Any:
            for name, value in (*zip(names, args, strict=False), *kwargs.items()):
                if isinstance(value, str) and "\x00" in value:
                    raise TextHasNul(name)
            try:
                return fn(*args, **kwargs)
            except library_errors as err:
                raise StorageError(f"{fn.__name__}: {type(err).__name__}: {err}") from err
        return method

    def decorate(cls: type) -> type:
        for name, fn in list(vars(cls).items()):
            if callable(fn) and not name.startswith("_") and name not in ("write", "batch"):
                setattr(cls, name, wrap(fn))
        return cls
    return decorate


@translate_errors(sqlite3.Error)
class SqliteStorage:
    """SQLite (WAL) through sqlite-utils. `db` is public for read queries (cloud_receiver.workflow.queries)."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000, migrate: bool = True,
                 push_owner: str = "") -> None:
        self.path = Path(path)
        self.push_owner = push_owner  # whose push_outbox rows the alerts stored here create (docs/receiver.md)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=busy_timeout_ms / 1000, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise StorageError(f"cannot open database {self.path}: {err}") from err
        self.db = Database(conn)
        self._busy_timeout_ms = busy_timeout_ms
        self._depth = 0  # > 0 while a write transaction (or batch) is open
        self._canteen_of: dict[str, str | None] = {}  # device id -> canteen id; devices never move
        self._alert_defaults: dict[str, Any] | None = None  # column -> default, for columns ingest does not write
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.db.execute("PRAGMA foreign_keys = OFF")
        if self.db.journal_mode != "wal":
            self.db.enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        if migrate:
            migrate_sqlite(self.path, busy_timeout_ms)
        # a database without the API's tables (an old copy opened with migrate=False) owes no pushes
        self._push = Queuer(push_owner) if "push_outbox" in self.db.table_names() else None
        self._feed = "alert_changes" in self.db.table_names()
        defaults = column_defaults(self.db.conn, "alerts")
        # the row of a new alert = what was inserted + these defaults (None: read it back instead)
        self._alert_defaults = None if defaults is None else {
            k: v for k, v in defaults.items() if k not in INSERT_COLUMNS}

    # -- plumbing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """One write transaction (BEGIN IMMEDIATE); sqlite-utils helpers nest inside it.

        Inside an open write (a `batch()`), it joins that transaction: nothing is committed
        until the outermost block ends, and an exception rolls back the whole of it.
        """
        conn = self.db.conn
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise StorageError(f"cannot start a write on {self.path}: {err}") from err
        if self._push is not None:
            self._push.reset()  # robots and jurisdictions are read afresh in every transaction
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StorageError(f"commit failed on {self.path}: {err}") from err

    def batch(self) -> contextlib.AbstractContextManager[Database]:
        """Several writes in one transaction (group commit): every write method called inside joins it."""
        return self.write()

    def _one(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> dict[str, Any] | None:
        rows = list(self.db.query(sql, params))
        return rows[0] if rows else None

    def count(self, table: str) -> int:
        if table not in self.db.table_names():
            raise StorageError(f"no table {table!r}")
        return int(self.db.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0])

    @functools.cached_property
    def sql(self) -> Db:
        """The same database through SQLAlchemy Core (the API's queries; thread-safe, own connections)."""
        return Db.sqlite(self.path, self._busy_timeout_ms)

    def close(self) -> None:
        if "sql" in self.__dict__:
            self.sql.close()
        self.db.close()

    # -- canteens and devices -------------------------------------------------------------
    def add_canteen(self, canteen_id: str, name: str = "", jurisdiction: str = "", public_json: str | None = None) -> None:
        with self.write() as db:  # again for an existing canteen: name and jurisdiction change, its public page stays
            db.execute("INSERT INTO canteens (id, name, jurisdiction, public_json) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (id) DO UPDATE SET name = excluded.name, jurisdiction = excluded.jurisdiction,"
                       " public_json = coalesce(excluded.public_json, canteens.public_json)",
                       [canteen_id, name, jurisdiction, public_json])

    def get_canteen(self, canteen_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM canteens WHERE id = ?", (canteen_id,))

    def set_public_json(self, canteen_id: str, public_json: str) -> None:
        """Replace what the public page of a canteen shows (`cloud_receiver/api/public_page.py` validates it)."""
        with self.write() as db:
            db.execute("UPDATE canteens SET public_json = ? WHERE id = ?", [public_json, canteen_id])

    def add_device(self, device_id: str, canteen_id: str, name: str = "") -> dict[str, Any]:
        row = {"id": device_id, "canteen_id": canteen_id, "name": name, "created_at": utc_now(), "online": 0}
        with self.write() as db:
            if self._one("SELECT id FROM devices WHERE id = ?", (device_id,)):
                raise StorageError(f"device {device_id} already exists")
            db["devices"].insert(row)
        return row

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM devices WHERE id = ?", (device_id,))

    def list_devices(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM devices ORDER BY id"))

    def max_device_serial(self, prefix: str) -> int:
        """Highest serial (the digits after `prefix`) among device ids starting with `prefix`, 0 if none."""
        row = self.db.execute("SELECT max(substr(id, ?)) FROM devices WHERE substr(id, 1, ?) = ?",
                              (len(prefix) + 1, len(prefix), prefix)).fetchone()
        return int(row[0]) if row and row[0] else 0

    # -- alerts ---------------------------------------------------------------------------
    def upsert_alert(self, alert: Alert, received_at: str) -> AlertWrite:
        """Insert a new alert; a higher `rev` updates the event fields and keeps the workflow ones.

        A new alert costs one INSERT (the returned row is built here, not read back); a higher
        rev one INSERT and one UPDATE … RETURNING; a repeat one more SELECT for its row.
        """
        if self._depth:  # inside a batch: no transaction bookkeeping per alert
            return self._upsert_alert(alert, received_at)
        with self.write():
            return self._upsert_alert(alert, received_at)

    def upsert_alerts(self, alerts: Sequence[Alert], received_at: str) -> list[AlertWrite]:
        """`upsert_alert` of each, in order, in one transaction (SQLite has no round trips to save)."""
        with self.write():
            return [self.upsert_alert(alert, received_at) for alert in alerts]

    def start_alerts(self, alerts: Sequence[Alert], received_at: str) -> Callable[[], list[AlertWrite]]:
        """`upsert_alerts` now (nothing to overlap on SQLite); the returned call gives the outcomes."""
        writes = self.upsert_alerts(alerts, received_at)
        return lambda: writes

    def _upsert_alert(self, alert: Alert, received_at: str) -> AlertWrite:
        conn = self.db.conn
        row = _alert_fields(alert)
        row["canteen_id"] = self._canteen_id(alert.device_id)
        row["received_at"] = row["updated_at"] = received_at
        if conn.execute(INSERT_ALERT, row).rowcount == 1:
            if self._push is not None:  # in the same transaction: stored <=> its pushes are owed
                self._push.queue(conn, alert.id, row["canteen_id"], received_at)
            if self._feed:
                conn.execute(_ADD_CHANGE, (alert.id, "created", received_at))
            if self._alert_defaults is None:
                new = self._one("SELECT * FROM alerts WHERE id = ?", (alert.id,))
                assert new is not None
                return AlertWrite("inserted", new)
            row.update(self._alert_defaults)  # the columns ingest does not write (workflow), at their defaults
            return AlertWrite("inserted", row)
        cur = conn.execute(UPDATE_ALERT, row)
        updated = cur.fetchall()  # to the end: a statement left running would block the COMMIT
        if updated:
            if self._feed:
                conn.execute(_ADD_CHANGE, (alert.id, "revised", received_at))
            cols = [d[0] for d in cur.description]
            return AlertWrite("updated", dict(zip(cols, updated[0], strict=True)))
        old = self._one("SELECT * FROM alerts WHERE id = ?", (alert.id,))
        assert old is not None
        return AlertWrite("unchanged", old)

    def _canteen_id(self, device_id: str) -> str | None:
        """The device's canteen (cached: a device's canteen never changes once it exists)."""
        if device_id in self._canteen_of:
            return self._canteen_of[device_id]
        found = self.db.conn.execute("SELECT canteen_id FROM devices WHERE id = ?", (device_id,)).fetchone()
        if found is None:
            return None  # not cached: the device may be added later (by the CLI, in another process)
        self._canteen_of[device_id] = found[0]
        return found[0]

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM alerts WHERE id = ?", (alert_id,))

    # -- status, telemetry, command results, rejects --------------------------------------
    def record_status(self, status: Status, received_at: str) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE devices SET online = ?, last_seen = ?, version = ?, status_json = ? WHERE id = ?",
                (int(status.online), received_at, status.version, status.model_dump_json(), status.device_id))
            for cam in status.cameras:
                db["cameras"].upsert({"device_id": status.device_id, "camera_id": cam.id, "name": cam.name,
                                      "state": cam.state, "fps": cam.fps, "reconnects": cam.reconnects,
                                      "error": cam.error, "updated_at": received_at}, pk=("device_id", "camera_id"))

    def record_telemetry(self, telemetry: Telemetry, received_at: str) -> None:
        with self.write() as db:
            db["telemetry"].upsert({"device_id": telemetry.device_id, "at": received_at,
                                    "data_json": telemetry.model_dump_json()}, pk="device_id")
            db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (received_at, telemetry.device_id))

    def record_command_result(self, device_id: str, result: CommandResult, received_at: str) -> None:
        with self.write() as db:
            db["command_results"].upsert({"device_id": device_id, "command_id": result.id, "ok": int(result.ok),
                                          "error": result.error, "at": received_at,
                                          "data_json": json.dumps(result.data, ensure_ascii=False)},
                                         pk=("device_id", "command_id"))

    def record_reject(self, device_id: str | None, topic: str, reason: str, at: str) -> None:
        with self.write() as db:
            db["rejects"].insert({"at": at, "device_id": device_id, "topic": topic[:512], "reason": reason[:1000]})

    def list_rejects(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM rejects ORDER BY id DESC LIMIT ?", (limit,)))

    # -- media ----------------------------------------------------------------------------
    def get_media(self, device_id: str, media_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM media WHERE device_id = ? AND id = ?", (device_id, media_id))

    def media_uploaders(self, sha256: str) -> set[str]:
        """The devices whose finished uploads have this content (who may name it in an alert)."""
        return {r[0] for r in self.db.execute("SELECT device_id FROM media WHERE sha256 = ?", (sha256,)).fetchall()}

    def add_chunk(self, device_id: str, media_id: str, header: ChunkHeader, data: bytes, received_at: str) -> int:
        """Store one chunk once (a repeat is ignored); returns how many distinct chunks are stored."""
        with self.write() as db:
            db.execute(
                "INSERT OR IGNORE INTO media_chunks (device_id, media_id, idx, total, size, sha256, content_type,"
                " data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, media_id, header.index, header.total, header.size, header.sha256,
                 header.content_type, data, received_at))
            row = db.execute("SELECT count(*) FROM media_chunks WHERE device_id = ? AND media_id = ?",
                             (device_id, media_id)).fetchone()
        return int(row[0])

    def chunk_headers(self, device_id: str, media_id: str) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT idx, total, size, sha256, content_type, received_at FROM media_chunks"
            " WHERE device_id = ? AND media_id = ? ORDER BY idx", (device_id, media_id)))

    def chunk_data(self, device_id: str, media_id: str) -> list[bytes]:
        cur = self.db.execute("SELECT data FROM media_chunks WHERE device_id = ? AND media_id = ? ORDER BY idx",
                              (device_id, media_id))
        return [bytes(r[0]) for r in cur.fetchall()]

    def finish_media(self, device_id: str, media_id: str, header: ChunkHeader, path: str, received_at: str) -> None:
        """Record a verified media file and drop its chunks, in one transaction."""
        with self.write() as db:
            db.execute(
                "INSERT OR IGNORE INTO media (id, device_id, sha256, bytes, content_type, path, complete, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                (media_id, device_id, header.sha256, header.size, header.content_type, path, received_at))
            db.execute("DELETE FROM media_chunks WHERE device_id = ? AND media_id = ?", (device_id, media_id))

    def discard_chunks(self, device_id: str, media_id: str) -> int:
        with self.write() as db:
            return db.execute("DELETE FROM media_chunks WHERE device_id = ? AND media_id = ?",
                              (device_id, media_id)).rowcount

    def discard_stale_chunks(self, older_than: str) -> int:
        """Drop chunks of media that never completed (received before `older_than`)."""
        with self.write() as db:
            return db.execute("DELETE FROM media_chunks WHERE received_at < ?", (older_than,)).rowcount


def open_storage(path: Path | str, busy_timeout_ms: int = 5000) -> SqliteStorage:
    """Open (and migrate) the configured store."""
    return SqliteStorage(path, busy_timeout_ms=busy_timeout_ms)
