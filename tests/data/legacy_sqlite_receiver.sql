PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE IF NOT EXISTS "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
);
INSERT INTO _sqlite_migrations VALUES(1,'ingest','0001_initial_schema','2026-12-05 05:10:59.812904+00:00');
INSERT INTO _sqlite_migrations VALUES(2,'api','0001_tokens_transitions_webhooks','2026-12-05 05:10:59.814192+00:00');
INSERT INTO _sqlite_migrations VALUES(3,'api','0002_push_outbox','2026-12-05 05:10:59.814634+00:00');
CREATE TABLE canteens (
  id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', jurisdiction TEXT NOT NULL DEFAULT '',
  public_json TEXT
);
INSERT INTO canteens VALUES('c1','一食堂','640502',NULL);
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
CREATE TABLE media (
  id TEXT NOT NULL, device_id TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, content_type TEXT,
  path TEXT NOT NULL, complete INTEGER NOT NULL DEFAULT 1, received_at TEXT NOT NULL, PRIMARY KEY (device_id, id)
);
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
CREATE TABLE tokens (
  token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('admin', 'regulator', 'canteen')),
  scope TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE transitions (
  id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL,
  actor TEXT NOT NULL, role TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', photo_sha256 TEXT, at TEXT NOT NULL
);
CREATE TABLE webhooks (
  id TEXT PRIMARY KEY, scope_kind TEXT NOT NULL CHECK (scope_kind IN ('canteen', 'jurisdiction')),
  scope TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('wecom', 'dingtalk')), url TEXT NOT NULL,
  secret_env TEXT, enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE push_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, robot_id TEXT NOT NULL, alert_id TEXT NOT NULL,
  created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, sent_at TEXT,
  UNIQUE (robot_id, alert_id)
);
DELETE FROM sqlite_sequence;
CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name");
CREATE INDEX alerts_started ON alerts (started_at);
CREATE INDEX alerts_canteen ON alerts (canteen_id, started_at);
CREATE INDEX alerts_device ON alerts (device_id, started_at);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX transitions_alert ON transitions (alert_id, id);
CREATE INDEX transitions_photo ON transitions (photo_sha256);
CREATE INDEX alerts_snapshot_sha ON alerts (snapshot_sha256);
CREATE INDEX alerts_clip_sha ON alerts (clip_sha256);
CREATE INDEX push_outbox_pending ON push_outbox (owner, id) WHERE sent_at IS NULL;
COMMIT;
