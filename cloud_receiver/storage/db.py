"""SQL on either engine through SQLAlchemy Core: where the API, workflow, accounts and ledgers read and write.

`Db` wraps one SQLAlchemy engine (SQLite file or PostgreSQL) with two ways in: `read()` (a plain
transaction) and `write()` (one write transaction: `BEGIN IMMEDIATE` on SQLite, so a writer waits
for the lock at the start instead of failing later with SQLITE_BUSY). Queries are Core expressions
over `cloud_receiver.storage.schema`, so each engine gets its own SQL from one definition; the few
expressions the engines spell differently (time arithmetic, local day and hour) are the functions
at the bottom. Rows come back as dicts with timestamps as ISO-8601 UTC text on both engines.

The ingest hot path does not come through here: it writes with the engines' own drivers
(`storage/sqlite.py`, `storage/postgres.py`), batched, as measured in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Dialect

from bk_common.yamlconf import resolve_secret
from cloud_receiver.errors import StorageError


def iso(value: datetime | None) -> str | None:
    """A datetime as the stores' ISO-8601 UTC text (`2026-12-05T04:50:08.123Z`); naive means UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """ISO-8601 text (with `Z` or an offset; naive means UTC) as an aware datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class IsoTimestamp(sa.types.TypeDecorator[Any]):
    """`timestamptz` on PostgreSQL, ISO-8601 UTC text on SQLite; both read back as that text.

    Binds take an aware datetime or ISO text; SQLite text is normalised to the one stored format, so
    text comparisons order by time."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        when = parse_iso(value) if isinstance(value, str) else value
        return iso(when) if dialect.name == "sqlite" else when

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return iso(value) if isinstance(value, datetime) else value


def _rows(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in result.mappings()]


class TextHasNul(ValueError):
    """A text value to be written holds a NUL character: PostgreSQL's text cannot keep one (SQLite's can, and
    both engines must answer alike). `field` is the column or parameter it was bound to."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: holds a NUL character (\\u0000), which no text may")
        self.field = field


def _refuse_nul(_conn: Any, _cursor: Any, _statement: str, parameters: Any, context: Any, _many: bool) -> None:
    """Before every statement: no bound text may hold a NUL (TextHasNul, naming its parameter)."""
    named = getattr(context, "compiled_parameters", None) or []
    for params in named:
        for key, value in params.items():
            if isinstance(value, str) and "\x00" in value:
                raise TextHasNul(re.sub(r"_\d+$", "", key))
    if not named:  # plain driver SQL: positional or named, one set or many
        sets = parameters if isinstance(parameters, list) else [parameters]
        for params in sets:
            values = params.values() if isinstance(params, dict) else params if isinstance(params, tuple | list) else ()
            if any(isinstance(v, str) and "\x00" in v for v in values):
                raise TextHasNul("(parameter)")


class Db:
    """One engine and the transactions the receiver's code runs on it (thread-safe: pooled connections)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name  # "sqlite" or "postgresql"
        event.listen(engine, "before_cursor_execute", _refuse_nul)

    @classmethod
    def sqlite(cls, path: Path | str, busy_timeout_ms: int = 5000) -> Db:
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": busy_timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
            dbapi_conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            dbapi_conn.execute("PRAGMA synchronous = NORMAL")

        @event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("bk_write") else "BEGIN")

        return cls(engine)

    @classmethod
    def postgresql(cls, url: str) -> Db:
        """PostgreSQL at `url`: a `postgresql://` URL or a libpq conninfo string; psycopg 3 driver."""
        import psycopg  # only a PostgreSQL deployment needs it loaded

        pool = {"pool_size": 4, "max_overflow": 8, "pool_pre_ping": True}
        # psycopg parses both forms itself (options such as -csearch_path included)
        # prepare_threshold=None: psycopg would otherwise prepare a statement run 5 times, and PostgreSQL then
        # plan it once for any parameters: a regulator's counts (a LIKE on their jurisdiction code) went from
        # 0.2 s to 1.2 s on a million alerts with that generic plan; planning each time costs ~1 ms
        return cls(sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url, prepare_threshold=None),
                                    **pool))

    @contextlib.contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[sa.Connection]:
        """One read transaction; `snapshot`: every statement sees the same committed state (REPEATABLE READ on
        PostgreSQL; a read transaction in SQLite's WAL mode always does)."""
        try:
            with self.engine.connect() as conn:
                if snapshot and self.dialect == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as err:
            raise StorageError(f"{type(err).__name__}: {err}") from err

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction: committed when the block ends, rolled back by an exception."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(bk_write=True)
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as err:
            raise StorageError(f"{type(err).__name__}: {err}") from err

    def all(self, stmt: sa.Executable, conn: sa.Connection | None = None) -> list[dict[str, Any]]:
        """Every row of `stmt` as a dict (in `conn`'s transaction when given)."""
        if conn is not None:
            return _rows(conn.execute(stmt))
        with self.read() as c:
            return _rows(c.execute(stmt))

    def one(self, stmt: sa.Executable, conn: sa.Connection | None = None) -> dict[str, Any] | None:
        rows = self.all(stmt, conn)
        return rows[0] if rows else None

    def scalar(self, stmt: sa.Executable, conn: sa.Connection | None = None) -> Any:
        if conn is not None:
            return conn.execute(stmt).scalar()
        with self.read() as c:
            return c.execute(stmt).scalar()

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of literal SQL with `:name` parameters (scripts and tests; the receiver's own code uses Core).
        A datetime parameter binds as each engine stores timestamps."""
        if self.dialect == "sqlite":
            params = {k: iso(v) if isinstance(v, datetime) else v for k, v in params.items()}
        with self.write() as conn:
            result = conn.execute(sa.text(sql), params)
            return _rows(result) if result.returns_rows else []

    def close(self) -> None:
        self.engine.dispose()


# -- the expressions the engines spell differently ----------------------------------------------
def plus_hours(db: Db, column: sa.ColumnElement[Any], hours: float) -> sa.ColumnElement[Any]:
    """`column + hours` as a timestamp comparable with the column's own values."""
    if db.dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%dT%H:%M:%fZ", column, f"{float(hours):+} hours", type_=IsoTimestamp())
    return sa.type_coerce(column + sa.literal(timedelta(hours=hours), sa.Interval()), IsoTimestamp())


def local_text(db: Db, column: sa.ColumnElement[Any], tz_hours: int, unit: str) -> sa.ColumnElement[str]:
    """The local day (`YYYY-MM-DD`) or hour of day (`HH`, 00–23) of a timestamp at UTC+tz_hours."""
    if unit not in ("day", "hour"):
        raise ValueError(f"unit {unit!r} is not day or hour")
    if db.dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%d" if unit == "day" else "%H", column, f"{int(tz_hours):+d} hours",
                                type_=sa.Text())
    shifted = sa.func.timezone("UTC", column) + sa.literal(timedelta(hours=tz_hours), sa.Interval())
    return sa.func.to_char(shifted, "YYYY-MM-DD" if unit == "day" else "HH24", type_=sa.Text())


def local_weekday(db: Db, column: sa.ColumnElement[Any], tz_hours: int) -> sa.ColumnElement[int]:
    """The local day of the week of a timestamp at UTC+tz_hours: 0 Sunday … 6 Saturday."""
    if db.dialect == "sqlite":
        return sa.cast(sa.func.strftime("%w", column, f"{int(tz_hours):+d} hours"), sa.Integer)
    shifted = sa.func.timezone("UTC", column) + sa.literal(timedelta(hours=tz_hours), sa.Interval())
    return sa.cast(sa.extract("dow", shifted), sa.Integer)


def starts_with(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """`column` begins with `prefix` (no LIKE pattern from data: a scope's `%` or `_` are not wildcards).

    A code of digits (a jurisdiction) is asked as `LIKE '6401%'`, which has no wildcard but the last: the
    planner estimates it from the column's statistics, where `substr(…) = …` got a fixed guess (PostgreSQL
    took 15 of a city's 1,140 canteens and chose a plan 20 times slower)."""
    if prefix.isdigit():
        return column.like(prefix + "%")
    return sa.func.substr(column, 1, len(prefix)) == prefix


def url_with_password(url: str, password_env: str | None) -> str:
    """`url` with the password from environment variable `password_env` (or the systemd credential of
    that name), so the password is in neither the config file nor the logs."""
    if not password_env:
        return url
    secret = resolve_secret(password_env)
    if secret is None:
        raise StorageError(f"storage.password_env: environment variable {password_env} is not set "
                           "(nor a systemd credential of that name)")
    return sa.engine.make_url(url).set(password=secret).render_as_string(hide_password=False)
