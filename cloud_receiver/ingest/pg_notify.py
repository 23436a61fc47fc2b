"""Alerts stored by any receiver, announced to this receiver's hub: PostgreSQL LISTEN/NOTIFY.

Several receivers share one PostgreSQL, and the broker hands each alert to one of them; every
receiver's SSE streams (and push router) must still hear of every alert. The ingest writer
(`cloud_receiver/storage/postgres.py`) NOTIFYs `id:rev` of a batch's new and updated alerts inside
the batch's transaction, so the notification is delivered when (and only if) the batch commits. Each
receiver runs one `AlertListener`: an asyncio task on the event loop with its own connection, which
LISTENs, reads the rows of a burst of notifications with one query, and publishes them into the hub
with `once=True` (an (id, rev) the hub announced lately is not announced again). This receiver's own
alerts reach its hub from its ingest thread, right after their commit; the listener skips the
(id, rev) its hub announced or expects (`AlertHub.owned`), without reading their rows
(`counts["own"]`), and reads the rest: the other receivers' alerts (and a bare id, as receivers
before the rev sent).

Notifications are not queued for a session that is gone: after a lost connection the listener
connects again with back-off, LISTENs, then catches up by reading the rows updated since its last
proof of life (a query every `keepalive_s`) whose earlier notifications it had all published, less
`margin_s` (for the writers' clocks and transactions in flight), and publishes those the hub has not
announced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row

from cloud_receiver.ingest.hub import AlertHub
from cloud_receiver.storage.alert_notify import alert_channel, parse_token
from cloud_receiver.storage.db import iso
from cloud_receiver.storage.postgres import IsoTimestampLoader

log = structlog.get_logger(__name__)

FETCH_MAX = 5000  # alert ids (or catch-up rows) read per query
PUBLISH_SLICE = 100  # rows published before the loop gets a turn: the streams drain their queues in between
APPLICATION_NAME = "bk-alert-listener"  # how the connection shows in pg_stat_activity
TIMESTAMPTZ_OID = 1184
# a timestamp as the stores' ISO-8601 UTC text (cloud_receiver.storage.db.iso: milliseconds, truncated), by PostgreSQL
ISO_TEXT = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


@dataclass
class AlertListener:
    """LISTENs for stored alerts on `dsn` and publishes their rows into `hub` (run `run()` as a task).

    `keepalive_s`: how often the connection is proven alive (a query answered within `proof_timeout_s`,
    also under a steady flood). `alive_at` is the database time of the last proof whose earlier
    notifications have all been published; the catch-up after a lost connection starts `margin_s`
    before it. Reconnects back off from `reconnect_min_s`, doubling to `reconnect_max_s`; the delay
    starts again from the minimum after a connection that lasted `healthy_after_s`.
    """

    dsn: str
    hub: AlertHub
    keepalive_s: float = 5.0
    margin_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    healthy_after_s: float = 30.0
    proof_timeout_s: float = 30.0
    channel: str = ""  # set from the connection's schema
    alive_at: datetime | None = None  # everything committed well before it has been published
    backend_pid: int | None = None  # of the current connection (pg_stat_activity)
    counts: dict[str, int] = field(default_factory=lambda: {"notifications": 0, "published": 0, "repeats": 0,
                                                            "caught_up": 0, "connections": 0,
                                                            "own": 0})

    def __post_init__(self) -> None:
        self.listening = asyncio.Event()  # set while LISTEN is in place
        self._columns: sql.Composable = sql.SQL("*")  # what `_publish_ids` selects (`alert_columns`)

    async def run(self) -> None:
        """Listen until cancelled; a lost connection is logged and made again with back-off."""
        delay = self.reconnect_min_s
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._session()
            except Exception as err:  # noqa: BLE001 - the listener must outlive any one connection
                self.listening.clear()
                if self.alive_at is None:  # never connected: catch up from about now once it does
                    self.alive_at = datetime.now(UTC)
                if loop.time() - started >= self.healthy_after_s:
                    delay = self.reconnect_min_s
                if not isinstance(err, psycopg.Error | OSError | TimeoutError):
                    log.exception("alert_listener_failed_unexpectedly")
                log.warning("alert_listener_lost", error=f"{type(err).__name__}: {err}".strip(), retry_in_s=delay,
                            since=iso(self.alive_at))
                await asyncio.sleep(delay)
                delay = min(self.reconnect_max_s, delay * 2)

    async def _session(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, row_factory=dict_row,
                                                     application_name=APPLICATION_NAME)
        try:
            self.backend_pid = conn.info.backend_pid
            conn.adapters.register_loader("timestamptz", IsoTimestampLoader)
            await conn.execute("SET TIME ZONE 'UTC'")  # timestamps as UTC text: the loader's fast path
            schema = (await (await conn.execute("SELECT current_schema() AS s")).fetchone() or {}).get("s")
            self.channel = alert_channel(schema or "public")
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._columns = await alert_columns(conn)
            since, self.counts["connections"] = self.alive_at, self.counts["connections"] + 1
            proven = await self._proof(conn)
            if since is not None:  # what was committed while no connection listened
                await self._catch_up(conn, since - timedelta(seconds=self.margin_s))
            self.listening.set()
            log.info("alert_listener_listening", channel=self.channel, caught_up_from=since and iso(since))
            await self._listen(conn, proven)
        finally:
            self.listening.clear()
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _listen(self, conn: psycopg.AsyncConnection[dict[str, Any]], proven: datetime) -> None:
        loop = asyncio.get_running_loop()
        proof_at = loop.time()
        while True:
            ids: dict[tuple[str, int | None], None] = {}  # (id, rev) in commit order, each once
            wait = max(0.0, self.keepalive_s - (loop.time() - proof_at))
            # notifications that came during a query wait in psycopg's backlog: these loops yield them first
            async for note in conn.notifies(timeout=wait, stop_after=1):
                self._take(note, ids)
            if ids:  # the rest of the burst: what has arrived meanwhile
                async for note in conn.notifies(timeout=0):
                    self._take(note, ids)
                await self._publish_ids(conn, self._not_announced(ids))
            self.alive_at = proven  # what was notified before that proof has now been published
            if loop.time() - proof_at >= self.keepalive_s:
                proven, proof_at = await self._proof(conn), loop.time()

    def _take(self, note: psycopg.Notify, ids: dict[tuple[str, int | None], None]) -> None:
        if note.channel != self.channel:
            return
        self.counts["notifications"] += 1
        ids.update(dict.fromkeys(map(parse_token, note.payload.split())))

    def _not_announced(self, ids: dict[tuple[str, int | None], None]) -> list[str]:
        """The ids whose rows must be read: all but the (id, rev) the hub owns (this receiver's own alerts)."""
        out = [i for i, rev in ids if rev is None or not self.hub.owned(i, rev)]
        self.counts["own"] += len(ids) - len(out)
        return list(dict.fromkeys(out))

    async def _proof(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> datetime:
        """The database's time, asked over the connection: proves it alive (notifications sent before it arrived first)."""
        async with asyncio.timeout(self.proof_timeout_s):
            row = await (await conn.execute("SELECT clock_timestamp() AS t")).fetchone()
        assert row is not None
        return _as_datetime(row["t"])

    async def _publish_ids(self, conn: psycopg.AsyncConnection[dict[str, Any]], ids: list[str]) -> None:
        """Read the rows of `ids` (one query per FETCH_MAX) and publish them in the order they were notified."""
        for start in range(0, len(ids), FETCH_MAX):
            part = ids[start:start + FETCH_MAX]
            cur = await conn.execute(sql.SQL("SELECT {} FROM alerts WHERE id = ANY(string_to_array(%s, ' '))")
                                     .format(self._columns), (" ".join(part),))  # ids have no spaces (contract)
            rows = {r["id"]: r for r in await cur.fetchall()}
            await self._publish([rows[i] for i in part if i in rows])

    async def _catch_up(self, conn: psycopg.AsyncConnection[dict[str, Any]], since: datetime) -> None:
        """Publish the rows updated since `since` that the hub has not announced, oldest first."""
        after: tuple[datetime, str] = (since, "")
        found = 0
        while True:
            cur = await conn.execute("SELECT * FROM alerts WHERE (updated_at, id) > (%s, %s) ORDER BY updated_at, id"
                                     " LIMIT %s", (*after, FETCH_MAX))
            rows = await cur.fetchall()
            found += len(rows)
            self.counts["caught_up"] += await self._publish(rows)
            if len(rows) < FETCH_MAX:
                break
            after = (_as_datetime(rows[-1]["updated_at"]), rows[-1]["id"])
        log.info("alert_listener_caught_up", since=iso(since), rows=found)

    async def _publish(self, rows: list[dict[str, Any]]) -> int:
        published = 0
        for start in range(0, len(rows), PUBLISH_SLICE):
            if start:
                await asyncio.sleep(0)
            for row in rows[start:start + PUBLISH_SLICE]:
                published += self.hub.publish(row, once=True)
        self.counts["published"] += published
        self.counts["repeats"] += len(rows) - published
        return published


async def alert_columns(conn: psycopg.AsyncConnection[dict[str, Any]]) -> sql.Composable:
    """The alerts table's columns, in order, its timestamps written as ISO text by PostgreSQL: the same row as
    `SELECT *` through `IsoTimestampLoader`, without a Python loader per value (the listener reads every alert)."""
    cur = await conn.execute("SELECT * FROM alerts LIMIT 0")
    return sql.SQL(", ").join(
        sql.SQL(ISO_TEXT + " AS {}").format(sql.Identifier(d.name), sql.Identifier(d.name))
        if d.type_code == TIMESTAMPTZ_OID else sql.Identifier(d.name) for d in cur.description or [])


def _as_datetime(value: Any) -> datetime:
    """A timestamp read through the ISO loader (text) or without it, as a datetime."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@contextlib.asynccontextmanager
async def alert_listener(dsn: str, hub: AlertHub, *, ready_s: float = 10.0, **settings: Any) -> AsyncIterator[AlertListener]:
    """Run an `AlertListener` for the block (task `bk-pg-alert-listener`, cancelled and awaited at its end).

    Waits up to `ready_s` for LISTEN to be in place, so the alerts stored from then on all reach the hub;
    a database that cannot be reached yet is logged and the listener keeps trying."""
    listener = AlertListener(dsn, hub, **settings)
    task = asyncio.create_task(listener.run(), name="bk-pg-alert-listener")
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ready_s):
                await listener.listening.wait()
        if not listener.listening.is_set():
            log.error("alert_listener_not_listening", waited_s=ready_s,
                      effect="SSE streams and push miss alerts until it connects")
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
