"""One schema, two engines: the Alembic migrations build exactly the declared tables on SQLite and
PostgreSQL, adopt a database of the older sqlite-utils migrations, and refuse a newer schema."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from support.requirements import PG_DSN_DEFAULT, require_postgres

from cloud_receiver.errors import StorageError
from cloud_receiver.storage import migrate
from cloud_receiver.storage.schema import metadata

pytestmark = pytest.mark.integration

LEGACY = Path(__file__).parent / "data" / "legacy_sqlite_receiver.sql"


def _pg_url() -> str:
    return "postgresql+psycopg:///test?host=127.0.0.1&port=5432&user=postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
        yield eng
        eng.dispose()
        return
    require_postgres(PG_DSN_DEFAULT)
    schema = f"bk_schema_{secrets.token_hex(4)}"
    admin = sa.create_engine(_pg_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    eng = sa.create_engine(_pg_url(), connect_args={"options": f"-c search_path={schema}"})
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _differences(eng: sa.Engine) -> list:
    with eng.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        return compare_metadata(ctx, metadata)


def test_migrations_build_exactly_the_declared_schema(engine: sa.Engine) -> None:
    """An empty database upgraded to head has every declared table, column, type and index, nothing else."""
    before, after = migrate.upgrade(engine)
    assert (before, after) == (None, migrate.head())
    assert _differences(engine) == []
    assert set(sa.inspect(engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}
    assert migrate.upgrade(engine) == (after, after)  # a second start changes nothing


def test_checks_hold_on_both_engines(engine: sa.Engine) -> None:
    """The CHECK constraints are there on either engine: a 19-digit device id and an unknown role are refused."""
    migrate.upgrade(engine)
    with engine.connect() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("INSERT INTO devices (id, created_at) VALUES ('1234567890123456789', "
                             "'2026-12-05T00:00:00Z')"))
    with engine.connect() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("INSERT INTO tokens (token_sha256, name, role, created_at) VALUES "
                             "('x', 'n', 'root', '2026-12-05T00:00:00Z')"))


def test_a_newer_schema_is_refused(engine: sa.Engine) -> None:
    """A database another, newer receiver migrated: this one refuses to start and says why."""
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="revision 9999, newer than this receiver knows"):
        migrate.upgrade(engine)


def test_a_database_of_the_older_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    """A SQLite database made by the sqlite-utils migration sets keeps its rows and gets Alembic's revision."""
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY.read_text(encoding="utf-8"))
    eng = sa.create_engine(f"sqlite:///{path}")
    assert migrate.upgrade(eng) == (None, migrate.head())
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM canteens WHERE id = 'c1'")).scalar_one() == "一食堂"
    assert _differences(eng) == []  # rebuilt into exactly the declared tables
    eng.dispose()


def test_migrate_command_upgrades_and_refuses_newer(tmp_path: Path, capsys) -> None:
    """`cloud-receiver migrate` brings the configured database to head; on a newer schema it fails naming it."""
    from cloud_receiver.app.cli import main

    cfg = tmp_path / "receiver.yaml"
    cfg.write_text(f"storage:\n  path: {tmp_path / 'r.db'}\n  media_dir: {tmp_path / 'media'}\n", encoding="utf-8")
    assert main(["-c", str(cfg), "migrate"]) == 0
    assert f"schema at revision {migrate.head()}" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    assert main(["-c", str(cfg), "migrate"]) == 1
    assert "revision 9999, newer than this receiver knows" in capsys.readouterr().err
