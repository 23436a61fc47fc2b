"""Schema migrations on either engine (Alembic), run at start and by `cloud-receiver migrate`.

A receiver upgrades an older schema to the newest it knows, and refuses to start on a schema newer
than it knows (another receiver of a newer version migrated the shared database): its queries
could write what the newer schema forbids.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cloud_receiver.errors import StorageError

SCRIPT_LOCATION = Path(str(files("cloud_receiver.storage") / "alembic"))


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
    script = ScriptDirectory.from_config(_config())
    with engine.connect() as conn:
        before = current(conn)
    if before is not None and not _known(script, before):
        raise StorageError(f"the database schema is at revision {before}, newer than this receiver knows "
                           f"(newest: {head()}): upgrade the receiver")
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
        conn.commit()
        return before, current(conn) or ""


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        return False
