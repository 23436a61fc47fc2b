"""PostgreSQL implementation of the `Storage` protocol (ingest side), for deployments beyond one district.

Same tables and semantics as the SQLite store: both are built by the same Alembic migrations from
one declaration (cloud_receiver/storage/schema.py), with real types here (timestamptz, bigint
identity), read back as the ISO-8601 text both stores hand out; each method is one transaction.
Not wired into the app yet: the API's read queries (cloud_receiver.workflow.queries) use sqlite-utils. One connection per
thread, like SqliteStorage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from bk_contract import Alert, ChunkHeader, CommandResult, Status, Telemetry
from cloud_receiver.errors import StorageError
from cloud_receiver.storage.alert_rows import iso
from cloud_receiver.storage.migrate import migrate_postgres
from cloud_receiver.storage.sqlite import AlertWrite, Outcome, _alert_fields, translate_errors, utc_now

log = structlog.get_logger(__name__)

TABLES = ("canteens", "devices", "cameras", "alerts", "media", "media_chunks", "rejects", "telemetry", "command_results")


class _IsoTimestamp(psycopg.types.datetime.TimestamptzLoader):
    """timestamptz columns read as the ISO-8601 UTC text both stores hand out (2026-03-01T08:00:00.000Z)."""

    def load(self, data: Any) -> str | None:
        return iso(super().load(data))


@translate_errors(psycopg.Error)
class PostgresStorage:
    """`Storage` on PostgreSQL via psycopg 3. psycopg errors leave as StorageError."""

    def __init__(self, dsn: str, *, migrate: bool = True) -> None:
        try:
            self.conn: psycopg.Connection[dict[str, Any]] = psycopg.connect(dsn, row_factory=dict_row)
        except psycopg.Error as err:
            raise StorageError(f"cannot connect to PostgreSQL: {err}") from err
        self.conn.adapters.register_loader("timestamptz", _IsoTimestamp)
        if migrate:
            migrate_postgres(lambda: psycopg.connect(dsn))

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        try:
            with self.conn.transaction():
                yield self.conn
        except psycopg.Error as err:
            raise StorageError(f"{type(err).__name__}: {err}") from err

    def batch(self) -> Any:
        """Several writes in one transaction (group commit); writes inside become savepoints of it."""
        return self.write()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self.conn.transaction():
            return self.conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.conn.transaction():
            return self.conn.execute(sql, params).fetchall()

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise StorageError(f"no table {table!r}")
        row = self._one(f"SELECT count(*) AS n FROM {table}")
        return int(row["n"]) if row else 0

    def close(self) -> None:
        self.conn.close()

    def add_canteen(self, canteen_id: str, name: str = "", jurisdiction: str = "", public_json: str | None = None) -> None:
        with self.write() as c:
            c.execute("INSERT INTO canteens (id, name, jurisdiction, public_json) VALUES (%s, %s, %s, %s)"
                      " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, jurisdiction = EXCLUDED.jurisdiction,"
                      " public_json = EXCLUDED.public_json", (canteen_id, name, jurisdiction, public_json))

    def get_canteen(self, canteen_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM canteens WHERE id = %s", (canteen_id,))

    def add_device(self, device_id: str, canteen_id: str, name: str = "") -> dict[str, Any]:
        row = {"id": device_id, "canteen_id": canteen_id, "name": name, "created_at": utc_now(), "online": 0}
        with self.write() as c:
            done = c.execute("INSERT INTO devices (id, canteen_id, name, created_at, online) VALUES (%s, %s, %s, %s, 0)"
                             " ON CONFLICT (id) DO NOTHING", (device_id, canteen_id, name, row["created_at"]))
            if done.rowcount == 0:
                raise StorageError(f"device {device_id} already exists")
        return row

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM devices WHERE id = %s", (device_id,))

    def list_devices(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM devices ORDER BY id")

    def max_device_serial(self, prefix: str) -> int:
        row = self._one("SELECT max(substring(id from %s)) AS m FROM devices WHERE left(id, %s) = %s",
                        (len(prefix) + 1, len(prefix), prefix))
        return int(row["m"]) if row and row["m"] else 0

    def upsert_alert(self, alert: Alert, received_at: str) -> AlertWrite:
        fields = _alert_fields(alert)
        with self.write() as c:
            old = c.execute("SELECT * FROM alerts WHERE id = %s FOR UPDATE", (alert.id,)).fetchone()
            if old is None:
                device = c.execute("SELECT canteen_id FROM devices WHERE id = %s", (alert.device_id,)).fetchone()
                row = {**fields, "canteen_id": device["canteen_id"] if device else None,
                       "received_at": received_at, "updated_at": received_at}
                cols = ", ".join(row)
                inserted = c.execute(f"INSERT INTO alerts ({cols}) VALUES ({', '.join(['%s'] * len(row))})"
                                     " ON CONFLICT (id) DO NOTHING", tuple(row.values()))
                if inserted.rowcount == 0:  # another receiver inserted it in the meantime
                    return AlertWrite("unchanged", c.execute("SELECT * FROM alerts WHERE id = %s", (alert.id,)).fetchone())
                outcome: Outcome = "inserted"
            elif old["device_id"] != alert.device_id or alert.rev <= old["rev"]:
                return AlertWrite("unchanged", old)
            else:
                fields.pop("id")
                fields.pop("device_id")
                fields["updated_at"] = received_at
                sets = ", ".join(f"{k} = %s" for k in fields)
                c.execute(f"UPDATE alerts SET {sets} WHERE id = %s", (*fields.values(), alert.id))
                outcome = "updated"
            new = c.execute("SELECT * FROM alerts WHERE id = %s", (alert.id,)).fetchone()
        return AlertWrite(outcome, new)

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM alerts WHERE id = %s", (alert_id,))

    def record_status(self, status: Status, received_at: str) -> None:
        with self.write() as c:
            c.execute("UPDATE devices SET online = %s, last_seen = %s, version = %s, status_json = %s WHERE id = %s",
                      (int(status.online), received_at, status.version, status.model_dump_json(), status.device_id))
            for cam in status.cameras:
                c.execute("INSERT INTO cameras (device_id, camera_id, name, state, fps, reconnects, error, updated_at)"
                          " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, camera_id) DO UPDATE SET"
                          " name = EXCLUDED.name, state = EXCLUDED.state, fps = EXCLUDED.fps,"
                          " reconnects = EXCLUDED.reconnects, error = EXCLUDED.error, updated_at = EXCLUDED.updated_at",
                          (status.device_id, cam.id, cam.name, cam.state, cam.fps, cam.reconnects, cam.error, received_at))

    def record_telemetry(self, telemetry: Telemetry, received_at: str) -> None:
        with self.write() as c:
            c.execute("INSERT INTO telemetry (device_id, at, data_json) VALUES (%s, %s, %s) ON CONFLICT (device_id)"
                      " DO UPDATE SET at = EXCLUDED.at, data_json = EXCLUDED.data_json",
                      (telemetry.device_id, received_at, telemetry.model_dump_json()))
            c.execute("UPDATE devices SET last_seen = %s WHERE id = %s", (received_at, telemetry.device_id))

    def record_command_result(self, device_id: str, result: CommandResult, received_at: str) -> None:
        with self.write() as c:
            c.execute("INSERT INTO command_results (device_id, command_id, ok, error, at) VALUES (%s, %s, %s, %s, %s)"
                      " ON CONFLICT (device_id, command_id) DO UPDATE SET ok = EXCLUDED.ok, error = EXCLUDED.error,"
                      " at = EXCLUDED.at", (device_id, result.id, int(result.ok), result.error, received_at))

    def record_reject(self, device_id: str | None, topic: str, reason: str, at: str) -> None:
        with self.write() as c:
            c.execute("INSERT INTO rejects (at, device_id, topic, reason) VALUES (%s, %s, %s, %s)",
                      (at, device_id, topic[:512], reason[:1000]))

    def list_rejects(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM rejects ORDER BY id DESC LIMIT %s", (limit,))

    def get_media(self, device_id: str, media_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM media WHERE device_id = %s AND id = %s", (device_id, media_id))

    def media_uploaders(self, sha256: str) -> set[str]:
        return {r["device_id"] for r in self._all("SELECT device_id FROM media WHERE sha256 = %s", (sha256,))}

    def add_chunk(self, device_id: str, media_id: str, header: ChunkHeader, data: bytes, received_at: str) -> int:
        with self.write() as c:
            c.execute("INSERT INTO media_chunks (device_id, media_id, idx, total, size, sha256, content_type, data,"
                      " received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                      (device_id, media_id, header.index, header.total, header.size, header.sha256,
                       header.content_type, data, received_at))
            row = c.execute("SELECT count(*) AS n FROM media_chunks WHERE device_id = %s AND media_id = %s",
                            (device_id, media_id)).fetchone()
        return int(row["n"]) if row else 0

    def chunk_headers(self, device_id: str, media_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT idx, total, size, sha256, content_type, received_at FROM media_chunks"
                         " WHERE device_id = %s AND media_id = %s ORDER BY idx", (device_id, media_id))

    def chunk_data(self, device_id: str, media_id: str) -> list[bytes]:
        rows = self._all("SELECT data FROM media_chunks WHERE device_id = %s AND media_id = %s ORDER BY idx",
                         (device_id, media_id))
        return [bytes(r["data"]) for r in rows]

    def finish_media(self, device_id: str, media_id: str, header: ChunkHeader, path: str, received_at: str) -> None:
        with self.write() as c:
            c.execute("INSERT INTO media (id, device_id, sha256, bytes, content_type, path, complete, received_at)"
                      " VALUES (%s, %s, %s, %s, %s, %s, 1, %s) ON CONFLICT DO NOTHING",
                      (media_id, device_id, header.sha256, header.size, header.content_type, path, received_at))
            c.execute("DELETE FROM media_chunks WHERE device_id = %s AND media_id = %s", (device_id, media_id))

    def discard_chunks(self, device_id: str, media_id: str) -> int:
        with self.write() as c:
            return c.execute("DELETE FROM media_chunks WHERE device_id = %s AND media_id = %s",
                             (device_id, media_id)).rowcount

    def discard_stale_chunks(self, older_than: str) -> int:
        with self.write() as c:
            return c.execute("DELETE FROM media_chunks WHERE received_at < %s", (older_than,)).rowcount

