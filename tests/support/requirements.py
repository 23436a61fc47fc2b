"""What a test needs from the machine, checked up front: a missing need fails the test with a reason
that says what to provide (never a silent skip). scripts/setup.sh provides each of them on Debian."""

from __future__ import annotations

import resource

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
