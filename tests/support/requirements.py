"""What a test needs from the machine, checked up front: a missing need fails the test with a reason
that says what to provide (never a silent skip). scripts/setup.sh provides each of them on Debian."""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
from collections.abc import Iterator

import pytest

PG_DSN_DEFAULT = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def require_open_files(n: int) -> None:
    """At least `n` descriptors: raise the soft limit up to the hard one, or fail naming `ulimit -n`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    if hard == resource.RLIM_INFINITY or hard >= n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
        return
    pytest.fail(f"this test needs {n} open files; the hard limit is {hard} (raise it: ulimit -Hn {n})")


def require_postgres(dsn: str) -> None:
    """A PostgreSQL that accepts `dsn` (trust auth, database `test`), as every machine here has."""
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError as err:
        pytest.fail(f"this test needs PostgreSQL at {dsn!r} (BK_TEST_PG_DSN overrides; scripts/setup.sh starts the "
                    f"local cluster): {err}".strip())


PG_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def pg_schema(prefix: str = "bk_test") -> Iterator[str]:
    """A throw-away schema in the test PostgreSQL; yields a `postgresql://` URL whose search_path is it."""
    import psycopg

    base = os.environ.get("BK_TEST_PG_URL", PG_URL_DEFAULT)
    require_postgres(base)
    schema = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in base else "?"
            yield f"{base}{sep}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
