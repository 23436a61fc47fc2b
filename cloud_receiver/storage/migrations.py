"""Schema migrations of the receiver's own tables (migration set "ingest").

sqlite-utils' `Migrations` runs each migration and its record in `_sqlite_migrations` inside one
transaction. Other sets follow in order: the API engineer's `cloud_receiver.storage.migrations_api`
module defines `migrations = Migrations("api")`, applied after this one (see storage.SOURCES).
Never edit an applied migration; add a new one.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("ingest")

_SCHEMA_1 = """
CREATE TABLE canteens (
  id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', jurisdiction TEXT NOT NULL DEFAULT '',
  public_json TEXT
);
CREATE TABLE devices (
  id TEXT PRIMARY KEY CHECK (length(id) = 20), canteen_id TEXT REFERENCES canteens(id), name TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL, last_seen TEXT, online INTEGER NOT NULL DEFAULT 0, version TEXT, status_json TEXT
);
CREATE TABLE cameras (
  device_id TEXT NOT NULL, camera_id TEXT NOT NULL, name TEXT, state TEXT, fps REAL, reconnects INTEGER,
  error TEXT, updated_at TEXT, PRIMARY KEY (device_id, camera_id)
);
CREATE TABLE alerts (
  id TEXT PRIMARY KEY, device_id TEXT NOT NULL, canteen_id TEXT, camera_id TEXT NOT NULL, type TEXT NOT NULL,
  level TEXT NOT NULL, state TEXT NOT NULL, rev INTEGER NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,
  score REAL, boxes_json TEXT, frame_size_json TEXT, zone_json TEXT, detail TEXT,
  snapshot_id TEXT, snapshot_sha256 TEXT, clip_id TEXT, clip_sha256 TEXT, received_at TEXT NOT NULL,
  updated_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT '待整改', deadline TEXT
);
CREATE INDEX alerts_started ON alerts (started_at);
CREATE INDEX alerts_canteen ON alerts (canteen_id, started_at);
CREATE INDEX alerts_device ON alerts (device_id, started_at);
CREATE TABLE media (
  id TEXT NOT NULL, device_id TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, content_type TEXT,
  path TEXT NOT NULL, complete INTEGER NOT NULL DEFAULT 1, received_at TEXT NOT NULL, PRIMARY KEY (device_id, id)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE TABLE media_chunks (
  device_id TEXT NOT NULL, media_id TEXT NOT NULL, idx INTEGER NOT NULL, total INTEGER NOT NULL,
  size INTEGER NOT NULL, sha256 TEXT NOT NULL, content_type TEXT NOT NULL, data BLOB NOT NULL,
  received_at TEXT NOT NULL, PRIMARY KEY (device_id, media_id, idx)
);
CREATE TABLE rejects (
  id INTEGER PRIMARY KEY, at TEXT NOT NULL, device_id TEXT, topic TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE telemetry (
  device_id TEXT PRIMARY KEY, at TEXT NOT NULL, data_json TEXT NOT NULL
);
CREATE TABLE command_results (
  device_id TEXT NOT NULL, command_id TEXT NOT NULL, ok INTEGER NOT NULL, error TEXT, at TEXT NOT NULL,
  PRIMARY KEY (device_id, command_id)
);
"""


@migrations(name="0001_initial_schema")
def m0001_initial_schema(db: Database) -> None:
    for statement in _SCHEMA_1.split(";"):
        if statement.strip():
            db.execute(statement)
