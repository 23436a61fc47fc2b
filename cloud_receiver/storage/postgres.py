"""PostgreSQL implementation of the `Storage` protocol (ingest side), for deployments beyond one district.

Same tables and semantics as the SQLite store: both are built by the same Alembic migrations from
one declaration (cloud_receiver/storage/schema.py), with real types here (timestamptz, bigint
identity), read back as the ISO-8601 text both stores hand out; each method is one transaction.
Selected by `storage.url: postgresql://…`; the API reads and writes through `sql` (SQLAlchemy Core).
One connection per thread, like SqliteStorage.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from sqlalchemy.dialects import postgresql

from bk_contract import Alert, ChunkHeader, CommandResult, Status, Telemetry
from cloud_receiver.errors import StorageError
from cloud_receiver.storage.alert_notify import alert_channel, notify_payloads, notify_token
from cloud_receiver.storage.alert_rows import INSERT_ALERT, INSERT_COLUMNS, UPDATE_ALERT, alert_values, iso
from cloud_receiver.storage.db import Db
from cloud_receiver.storage.migrate import migrate_postgres
from cloud_receiver.storage.push_outbox import LEASE_S, Queuer
from cloud_receiver.storage.schema import alerts, metadata
from cloud_receiver.storage.sqlite import AlertWrite, _alert_fields, translate_errors, utc_now

log = structlog.get_logger(__name__)

def _pyformat(sql: str) -> str:
    """`:name` parameters (sqlite3's named style) as psycopg's `%(name)s`."""
    return re.sub(r":([a-z_0-9]+)", r"%(\1)s", sql)


_INSERT_ALERT = _pyformat(INSERT_ALERT) + " RETURNING *"
_UPDATE_ALERT = _pyformat(UPDATE_ALERT)
# ingest is bound by round trips (one per alert, as Ingestor asks for each outcome): the alert and its
# change row go in one statement, and a new alert's row comes back only in the columns ingest does not write
# (the export feed, workflow/export_feed.py: a change row in the alert's own transaction)
_CHANGE_OF = "INSERT INTO alert_changes (alert_id, kind, at) SELECT id, '{kind}', {at} FROM {rows}"
_UPDATE_REVISED = (f"WITH upd AS ({_UPDATE_ALERT}), change AS ("
                   + _CHANGE_OF.format(kind="revised", at="updated_at", rows="upd") + ") SELECT * FROM upd")


def _insert_new_sql(returned: list[str]) -> str:
    """INSERT … ON CONFLICT DO NOTHING of an alert with its `created` change; a row (`returned` columns) if new."""
    return (f"WITH new AS ({_pyformat(INSERT_ALERT)} RETURNING *), change AS ("
            + _CHANGE_OF.format(kind="created", at="received_at", rows="new")
            + f") SELECT {', '.join(returned) or 'id'} FROM new")
def _insert_many_sql(returned: list[str]) -> str:
    """INSERT … ON CONFLICT DO NOTHING of many alerts, with their `created` changes; the new rows' ids and
    `returned` columns (those ingest does not write) come back. The rows travel as ONE parameter, a JSON array of
    rows (`INSERT_COLUMNS` in order) that PostgreSQL unpacks: a short, fixed text that psycopg prepares once, and
    one value that Python's C encoder writes. (An array parameter per column, `unnest(%s::text[], …)`, cost a
    third of the ingest thread's CPU in psycopg's array dumping; JSON objects, twice the encoding of lists.)"""
    columns = ", ".join(INSERT_COLUMNS)
    values = ", ".join(f"(r->>{i})::{alerts.c[k].type.compile(dialect=postgresql.dialect())}"
                       for i, k in enumerate(INSERT_COLUMNS))
    insert = (f"INSERT INTO alerts ({columns}) SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS r"
              " ON CONFLICT (id) DO NOTHING RETURNING *")
    return (f"WITH new AS ({insert}), change AS ("
            + _CHANGE_OF.format(kind="created", at="received_at", rows="new")
            + f") SELECT {', '.join(['id', *returned])} FROM new")


_ROWS_JSON = json.JSONEncoder(separators=(",", ":"))  # the rows parameter of `_insert_many_sql`


TABLES = tuple(metadata.tables)
class IsoTimestampLoader(psycopg.types.datetime.TimestamptzLoader):
    """timestamptz columns read as the ISO-8601 UTC text both stores hand out (2026-03-01T08:00:00.000Z).

    A value PostgreSQL writes in UTC (`2026-03-01 08:00:00.123456+00`: DateStyle ISO, TimeZone UTC) is
    rewritten as text, without a datetime in between (that round trip was two fifths of the alert listener's
    time); any other form takes the datetime path."""

    def load(self, data: Any) -> str | None:
        raw = bytes(data)
        if len(raw) >= 22 and raw[4] == 45 and raw[10] == 32 and raw.endswith(b"+00") and (len(raw) == 22 or raw[19] == 46):
            return f"{raw[:10].decode()}T{raw[11:19].decode()}.{(raw[20:-3] + b'000')[:3].decode()}Z"
        return iso(super().load(data))


@translate_errors(psycopg.Error)
class PostgresStorage:
    """`Storage` on PostgreSQL via psycopg 3. psycopg errors leave as StorageError."""

    def __init__(self, dsn: str, *, migrate: bool = True, push_owner: str = "", push_lease_s: float = LEASE_S) -> None:
        self.dsn = dsn  # a libpq conninfo string or a postgresql:// URL
        self.push_owner = push_owner
        self._push = Queuer(push_owner, "%s", lease_s=push_lease_s)
        self._announce: list[tuple[str, int]] = []  # (id, rev) of alerts stored in the open batch, NOTIFYed before its commit
        self._batch_depth = 0
        self._depth = 0  # > 0 while a write transaction (or batch) is open: writes inside join it
        self._canteen_of: dict[str, str | None] = {}
        # told the (id, rev) of the alerts a transaction NOTIFYs, before its commit (the ingest thread: AlertHub.expect)
        self.on_notify: Callable[[list[tuple[str, int]]], None] | None = None
        try:
            self.conn: psycopg.Connection[dict[str, Any]] = psycopg.connect(dsn, row_factory=dict_row)
        except psycopg.Error as err:
            raise StorageError(f"cannot connect to PostgreSQL: {err}") from err
        self.conn.adapters.register_loader("timestamptz", IsoTimestampLoader)
        if migrate:
            migrate_postgres(lambda: psycopg.connect(dsn))
        found = self._one("SELECT current_schema() AS s")
        self.channel = alert_channel((found or {}).get("s") or "public")
        _ = self._insert_many  # read the table's columns now: in pipeline mode a description comes only with results

    @contextmanager
    def write(self, *, pipeline: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One transaction; inside an open one (a `batch()`) it joins it, as on SQLite.

        No savepoint per write: it costs two round trips and a subtransaction, three quarters of an
        alert's time in a group commit; an exception still rolls back the whole outer transaction.
        `pipeline`: the transaction runs in psycopg's pipeline mode (`batch()`): a statement is sent without
        waiting for its result, which is read when it is fetched (`start_alerts`)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        try:
            with self.conn.pipeline() if pipeline else nullcontext(), self.conn.transaction():
                self._push.reset()  # robots and jurisdictions are read afresh in every transaction
                if pipeline:
                    self._push.prefetch(self.conn)
                self._depth = 1
                try:
                    yield self.conn
                finally:
                    self._depth = 0
        except psycopg.Error as err:
            raise StorageError(f"{type(err).__name__}: {err}") from err

    @contextmanager
    def batch(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """Several writes in one transaction (group commit); writes inside join it.

        The alerts it stores are announced (NOTIFY `channel`) inside the same transaction: PostgreSQL
        delivers a notification only when its transaction commits, so every receiver hears of them then.
        It runs in pipeline mode: what needs no answer (BEGIN, a status, the NOTIFY) costs no round trip
        of its own, and `start_alerts` lets PostgreSQL insert alerts while ingest validates the next ones."""
        self._batch_depth += 1
        try:
            with self.write(pipeline=self._batch_depth == 1) as c:
                yield c
                self._notify_alerts(c)
        finally:
            self._batch_depth -= 1
            if not self._batch_depth:
                self._announce.clear()

    def _announced(self, c: psycopg.Connection[dict[str, Any]], alert_id: str, rev: int) -> None:
        self._announce.append((alert_id, rev))
        if not self._batch_depth:  # a write of its own: announce in its transaction
            self._notify_alerts(c)

    def _notify_alerts(self, c: psycopg.Connection[dict[str, Any]]) -> None:
        keys, self._announce = self._announce, []
        if keys:
            if self.on_notify is not None:
                self.on_notify(keys)
            c.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                      (self.channel, notify_payloads([notify_token(*k) for k in keys])))

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self.write() as c:
            return c.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.write() as c:
            return c.execute(sql, params).fetchall()

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise StorageError(f"no table {table!r}")
        row = self._one(f"SELECT count(*) AS n FROM {table}")
        return int(row["n"]) if row else 0

    @functools.cached_property
    def sql(self) -> Db:
        """The same database through SQLAlchemy Core (the API's queries; pooled, thread-safe)."""
        return Db.postgresql(self.dsn)

    def close(self) -> None:
        if "sql" in self.__dict__:
            self.sql.close()
        self.conn.close()

    def add_canteen(self, canteen_id: str, name: str = "", jurisdiction: str = "", public_json: str | None = None) -> None:
        with self.write() as c:
            c.execute("INSERT INTO canteens (id, name, jurisdiction, public_json) VALUES (%s, %s, %s, %s)"
                      " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, jurisdiction = EXCLUDED.jurisdiction,"
                      " public_json = coalesce(EXCLUDED.public_json, canteens.public_json)", (canteen_id, name, jurisdiction, public_json))

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
        """Insert a new alert (and queue its pushes); a higher `rev` updates the event fields only.

        Idempotent across receivers: INSERT … ON CONFLICT DO NOTHING decides who stored it first."""
        row = _alert_fields(alert)
        row["canteen_id"] = self._canteen_id(alert.device_id)
        row["received_at"] = row["updated_at"] = received_at
        with self.write() as c:
            columns, insert_new = self._insert_new
            new = c.execute(insert_new, row).fetchone()
            if new is not None:
                self._push.queue(c, alert.id, row["canteen_id"], received_at)
                self._announced(c, alert.id, alert.rev)
                # as RETURNING * would give it: what was written (the same ISO text and numbers) + the defaults
                return AlertWrite("inserted", {k: row[k] if k in row else new[k] for k in columns})
            updated = c.execute(_UPDATE_REVISED, row).fetchone()
            if updated is not None:
                self._announced(c, alert.id, alert.rev)
                return AlertWrite("updated", updated)
            old = c.execute("SELECT * FROM alerts WHERE id = %s", (alert.id,)).fetchone()
        return AlertWrite("unchanged", old)

    def upsert_alerts(self, alerts: Sequence[Alert], received_at: str) -> list[AlertWrite]:
        """`upsert_alert` of each, in order, in one transaction; the new ones in one statement."""
        with self.write():
            return self.start_alerts(alerts, received_at)()

    def start_alerts(self, alerts: Sequence[Alert], received_at: str) -> Callable[[], list[AlertWrite]]:
        """Send the insert of `alerts` (inside the open transaction); the returned call finishes their
        `upsert_alert`s and gives the outcomes. Call the finishers in the order of their starts.

        One multi-row `INSERT … ON CONFLICT DO NOTHING` (with the `created` change rows) takes the first
        occurrence of every id: what comes back is what was new. The rest (a higher rev, a repeat, a
        second occurrence in the same group) then take `upsert_alert`'s path one by one, after the
        inserts, as they would in order. A group of new alerts costs one round trip instead of one each;
        in a `batch()` (pipeline mode) the insert runs while the caller goes on until it finishes."""
        rows = [[*alert_values(alert), self._canteen_id(alert.device_id), received_at, received_at] for alert in alerts]
        first: dict[str, int] = {}
        for i, alert in enumerate(alerts):
            first.setdefault(alert.id, i)
        fresh = [rows[i] for i in first.values()]
        columns, _ = self._insert_new
        cur = self.conn.cursor()
        with self.write():
            cur.execute(self._insert_many, (_ROWS_JSON.encode(fresh),))

        def finish() -> list[AlertWrite]:
            with self.write() as c:
                new = {r["id"]: r for r in cur.fetchall()}
                out: list[AlertWrite] = []
                for i, (alert, row) in enumerate(zip(alerts, rows, strict=True)):
                    found = new.get(alert.id) if first[alert.id] == i else None
                    if found is None:
                        out.append(self.upsert_alert(alert, received_at))
                        continue
                    self._push.queue(c, alert.id, row[-3], received_at)  # its canteen
                    self._announced(c, alert.id, alert.rev)
                    written = dict.fromkeys(columns)  # the table's column order, as RETURNING * has it
                    written.update(found)
                    written.update(zip(INSERT_COLUMNS, row, strict=True))
                    out.append(AlertWrite("inserted", written))
                return out
        return finish

    @functools.cached_property
    def _insert_new(self) -> tuple[list[str], str]:
        """The alerts table's columns (in order) and the new-alert statement returning those ingest does not write."""
        with self.write() as c:
            columns = [d.name for d in c.execute("SELECT * FROM alerts LIMIT 0").description or []]
        return columns, _insert_new_sql([k for k in columns if k not in INSERT_COLUMNS])

    @functools.cached_property
    def _insert_many(self) -> str:
        columns, _ = self._insert_new
        return _insert_many_sql([k for k in columns if k not in INSERT_COLUMNS])

    def _canteen_id(self, device_id: str) -> str | None:
        """The device's canteen (cached once known: a device's canteen never changes)."""
        if device_id not in self._canteen_of:
            found = self._one("SELECT canteen_id FROM devices WHERE id = %s", (device_id,))
            if found is None:
                return None
            self._canteen_of[device_id] = found["canteen_id"]
        return self._canteen_of[device_id]

    def set_public_json(self, canteen_id: str, public_json: str) -> None:
        with self.write() as c:
            c.execute("UPDATE canteens SET public_json = %s WHERE id = %s", (public_json, canteen_id))

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
            c.execute("INSERT INTO command_results (device_id, command_id, ok, error, at, data_json)"
                      " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, command_id) DO UPDATE SET"
                      " ok = EXCLUDED.ok, error = EXCLUDED.error, at = EXCLUDED.at, data_json = EXCLUDED.data_json",
                      (device_id, result.id, int(result.ok), result.error, received_at,
                       json.dumps(result.data, ensure_ascii=False)))

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
            # the last two chunks may reach two receivers at once: serialised per media, the later one
            # sees both and assembles (without it neither sees the other's uncommitted chunk)
            c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"media/{device_id}/{media_id}",))
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
        with self.write() as c:  # rows, not rowcount: in a batch (pipeline mode) rowcount is not known yet
            return len(c.execute("DELETE FROM media_chunks WHERE device_id = %s AND media_id = %s RETURNING 1",
                                 (device_id, media_id)).fetchall())

    def discard_stale_chunks(self, older_than: str) -> int:
        with self.write() as c:
            return c.execute("DELETE FROM media_chunks WHERE received_at < %s", (older_than,)).rowcount

