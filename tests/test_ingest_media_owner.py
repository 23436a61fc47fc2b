"""An alert may name only media its own box uploads, on both storage backends (SQLite and a real
PostgreSQL, own schema): the ingest side of issue 9's cross-canteen media leak."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from support.requirements import PG_DSN_DEFAULT, require_postgres

from bk_contract import Alert, MediaRef, split_media, topic
from cloud_receiver.config import LimitsConfig
from cloud_receiver.ingest.handler import Ingestor
from cloud_receiver.storage.postgres import PostgresStorage
from cloud_receiver.storage.sqlite import SqliteStorage

pytestmark = pytest.mark.integration

PG_DSN = os.environ.get("BK_TEST_PG_DSN", PG_DSN_DEFAULT)
VICTIM, THIEF = "64050200001180000401", "64052100001180000402"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20


@pytest.fixture(params=["sqlite", "postgres"])
def ingestor(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteStorage(tmp_path / "r.db")
        cleanup = store.close
    else:
        require_postgres(PG_DSN)
        schema = f"bk_test_{secrets.token_hex(4)}"
        admin = psycopg.connect(PG_DSN, autocommit=True)
        admin.execute(f"CREATE SCHEMA {schema}")
        store = PostgresStorage(make_conninfo(PG_DSN, options=f"-c search_path={schema}"))

        def cleanup() -> None:
            store.close()
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()
    store.add_canteen("victim", "第一小学食堂", "64050201")
    store.add_canteen("thief", "中宁一中食堂", "64052101")
    store.add_device(VICTIM, "victim", "box")
    store.add_device(THIEF, "thief", "box")
    yield Ingestor(store, tmp_path / "media", LimitsConfig(chunk_data_bytes=4096))
    cleanup()


def _alert(device: str, alert_id: str, sha: str, media_id: str) -> bytes:
    return Alert(id=alert_id, device_id=device, camera_id="cam1", type="animal",
                 started_at=datetime(2026, 3, 1, 8, tzinfo=UTC),
                 clip=MediaRef(id=media_id, sha256=sha, bytes=len(JPEG))).model_dump_json().encode()


def test_an_alert_naming_another_boxes_media_is_rejected_with_a_reason(ingestor):
    """The thief's alert naming the victim's stored media is rejected and recorded; the victim's own is stored,
    before and after its upload, and the thief's alert with its own upload of the same bytes is accepted."""
    sha, chunks = split_media(JPEG, "image/jpeg", 4096)
    assert ingestor.handle(topic(VICTIM, "alert"), _alert(VICTIM, "V1", sha, "M1")).outcome == "stored"
    for i, chunk in enumerate(chunks):
        assert ingestor.handle(topic(VICTIM, "media", media_id="M1", seq=i), chunk).outcome == "stored"
    assert ingestor.storage.media_uploaders(sha) == {VICTIM}
    stolen = ingestor.handle(topic(THIEF, "alert"), _alert(THIEF, "T1", sha, "M9"))
    assert stolen.outcome == "rejected" and stolen.reason == f"clip {sha} was uploaded by another device, not by {THIEF}"
    assert ingestor.storage.list_rejects(1)[0]["reason"] == stolen.reason
    assert ingestor.storage.get_alert("T1") is None
    assert ingestor.handle(topic(VICTIM, "alert"), _alert(VICTIM, "V2", sha, "M1")).outcome == "stored"
    # chunks of its own upload on the way count as its own
    assert ingestor.handle(topic(THIEF, "media", media_id="M9", seq=0), chunks[0]).outcome == "stored"
    assert ingestor.handle(topic(THIEF, "alert"), _alert(THIEF, "T2", sha, "M9")).outcome == "stored"
