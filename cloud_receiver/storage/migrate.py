"""Schema migrations on either engine (Alembic), run at start and by `cloud-receiver migrate`.

A receiver upgrades an older schema to the newest it knows, and refuses to start on a schema newer
than it knows (another receiver of a newer version migrated the shared database): its queries
could write what the newer schema forbids.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cloud_receiver.errors import StorageError

log = structlog.get_logger(__name__)

SCRIPT_LOCATION = Path(str(files("cloud_receiver.storage") / "alembic"))
# Alembic keeps the running migration in module globals (alembic.context, alembic.op): two upgrades
# in two threads of one process at once corrupt each other (seen: the interpreter aborted)
_IN_PROCESS = threading.Lock()


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this receiver knows."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise StorageError(f"the receiver's migrations have {len(heads)} heads, expected one: {heads}")
    return heads[0]


def current(connection: sa.Connection) -> str | None:
    """The database's revision (None: never migrated by Alembic)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine) -> tuple[str | None, str]:
    """Upgrade to the newest schema; returns (revision before, revision after).

    Raises StorageError when the database carries a revision this receiver does not know."""
    with engine.connect() as conn:
        before = current(conn)
    _refuse_newer(before)
    with _IN_PROCESS, engine.connect() as conn:
        command.upgrade(_config(conn), "head")
        conn.commit()
        return before, current(conn) or ""


def _refuse_newer(revision: str | None) -> None:
    """StorageError when the database carries a revision this receiver's migrations do not have."""
    if revision is not None and not _known(ScriptDirectory.from_config(_config()), revision):
        raise StorageError(f"the database schema is at revision {revision}, newer than this receiver knows "
                           f"(newest: {head()}): upgrade the receiver")


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        return False


def _log_upgrade(where: str, before: str | None, after: str) -> None:
    if before != after:
        log.info("schema migrated", database=where, revision_before=before, revision=after)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Receivers (or threads) opening one SQLite file at once migrate one after the other."""
    lock = path.with_name(path.name + ".migrate-lock")
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def migrate_sqlite(path: Path, busy_timeout_ms: int = 5000) -> str:
    """Upgrade the SQLite database at `path` to the newest schema (creating it); returns the revision."""
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": busy_timeout_ms / 1000})
    try:
        with _file_lock(path):
            before, after = upgrade(engine)
    except sa.exc.SQLAlchemyError as err:
        raise StorageError(f"migration of {path} failed: {err}") from err
    finally:
        engine.dispose()
    _log_upgrade(str(path), before, after)
    return after


def migrate_postgres(connect: Callable[[], Any]) -> str:
    """Upgrade a PostgreSQL database (`connect()` gives a psycopg connection) to the newest schema.

    Two receivers starting at once: a transaction-level advisory lock lets one migrate while the
    other waits, then finds the schema current."""
    engine = sa.create_engine("postgresql+psycopg://", creator=connect, poolclass=sa.pool.NullPool)
    try:
        with _IN_PROCESS, engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('brightkitchen-migrate'))"))
            before = current(conn)
            _refuse_newer(before)
            command.upgrade(_config(conn), "head")
            after = current(conn) or ""
    except sa.exc.SQLAlchemyError as err:
        raise StorageError(f"migration of the PostgreSQL database failed: {err}") from err
    finally:
        engine.dispose()
    _log_upgrade("postgresql", before, after)
    return after
