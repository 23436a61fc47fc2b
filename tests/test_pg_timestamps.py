"""Timestamps read from PostgreSQL as the stores' ISO text: the loader's fast path and PostgreSQL's own formatting
(the alert listener's) both give exactly what `iso()` gives, in any session time zone."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support.requirements import PG_DSN_DEFAULT, require_postgres

from cloud_receiver.ingest.pg_notify import ISO_TEXT
from cloud_receiver.storage.db import iso
from cloud_receiver.storage.postgres import IsoTimestampLoader

pytestmark = pytest.mark.integration

PG_DSN = os.environ.get("BK_TEST_PG_DSN", PG_DSN_DEFAULT)


def _values(zone: str) -> list[datetime]:
    rng = random.Random(5)
    # years 1 and 9999 only in UTC: shifted into another zone psycopg itself cannot read them (before and after)
    years = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)] if zone == "UTC" else []
    edges = [*years, datetime(2026, 3, 1, 8, 0, tzinfo=UTC), datetime(2026, 3, 1, 8, 0, 0, 500000, tzinfo=UTC),
             datetime(2026, 3, 1, 8, 0, 0, 1000, tzinfo=UTC), datetime(2026, 3, 1, 8, 0, 0, 999, tzinfo=UTC)]
    return edges + [datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10 ** 15)) for _ in range(500)]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "America/St_Johns"])
def test_timestamps_read_as_iso_text_equal_iso(zone):
    require_postgres(PG_DSN)
    values = _values(zone)
    with psycopg.connect(PG_DSN) as conn:
        conn.adapters.register_loader("timestamptz", IsoTimestampLoader)
        conn.execute(f"SET TIME ZONE '{zone}'")
        loaded = [r[0] for r in conn.execute("SELECT unnest(%s::timestamptz[])", (values,)).fetchall()]
        formatted = [r[0] for r in conn.execute(
            f"SELECT {ISO_TEXT.format('t')} FROM unnest(%s::timestamptz[]) AS t", (values,)).fetchall()]
    want = [iso(v) for v in values]
    assert loaded == want
    assert formatted == want
