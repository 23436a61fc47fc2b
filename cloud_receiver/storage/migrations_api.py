"""Schema migrations of the API's tables (migration set "api"), applied after set "ingest".

Tables: `tokens` (bearer tokens, stored as sha256 only), `transitions` (rectification history),
`webhooks` (WeCom / DingTalk group robots per canteen or jurisdiction), `push_outbox` (robot
messages owed for stored alerts).
Never edit an applied migration; add a new one.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("api")

_SCHEMA_1 = """
CREATE TABLE tokens (
  token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('admin', 'regulator', 'canteen')),
  scope TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE transitions (
  id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL,
  actor TEXT NOT NULL, role TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', photo_sha256 TEXT, at TEXT NOT NULL
);
CREATE INDEX transitions_alert ON transitions (alert_id, id);
CREATE INDEX transitions_photo ON transitions (photo_sha256);
CREATE TABLE webhooks (
  id TEXT PRIMARY KEY, scope_kind TEXT NOT NULL CHECK (scope_kind IN ('canteen', 'jurisdiction')),
  scope TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('wecom', 'dingtalk')), url TEXT NOT NULL,
  secret_env TEXT, enabled INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX alerts_snapshot_sha ON alerts (snapshot_sha256);
CREATE INDEX alerts_clip_sha ON alerts (clip_sha256);
"""


@migrations(name="0001_tokens_transitions_webhooks")
def m0001_tokens_transitions_webhooks(db: Database) -> None:
    for statement in _SCHEMA_1.split(";"):
        if statement.strip():
            db.execute(statement)


_SCHEMA_2 = """
CREATE TABLE push_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, robot_id TEXT NOT NULL, alert_id TEXT NOT NULL,
  created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, sent_at TEXT,
  UNIQUE (robot_id, alert_id)
);
CREATE INDEX push_outbox_pending ON push_outbox (owner, id) WHERE sent_at IS NULL;
"""


@migrations(name="0002_push_outbox")
def m0002_push_outbox(db: Database) -> None:
    """Robot messages owed for stored alerts, written in the alert's own transaction (cloud_receiver/storage/push_outbox.py).

    AUTOINCREMENT: an id is never used twice, even after the newest rows were deleted, so the
    router's "rows above the last id read" never skips a row."""
    for statement in _SCHEMA_2.split(";"):
        if statement.strip():
            db.execute(statement)
