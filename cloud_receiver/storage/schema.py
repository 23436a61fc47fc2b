"""The receiver's tables, declared once (SQLAlchemy Core) for SQLite and PostgreSQL.

Alembic migrations (`cloud_receiver/storage/alembic/versions/`) create and change them on either
engine; `tests/test_schema.py` upgrades an empty database of each engine and checks that what the
migrations built is exactly this metadata. Dialect differences live in the column types:

- timestamps: `timestamptz` on PostgreSQL; ISO-8601 UTC text (`2026-12-05T04:50:08.123Z`, which
  sorts in time order) on SQLite;
- identity keys: `bigint` identity on PostgreSQL; SQLite's `INTEGER PRIMARY KEY` (the rowid);
- binary: `bytea` / `BLOB`; floats: `double precision` / `REAL`.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from cloud_receiver.storage.db import IsoTimestamp

metadata = sa.MetaData()

Timestamp = IsoTimestamp()  # timestamptz on PostgreSQL, ISO text on SQLite; read back as ISO text on both
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid alias must be spelt INTEGER
Real = sa.Double()


def _text(name: str, *, nullable: bool = True, default: str | None = None) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable,
                     server_default=sa.text(f"'{default}'") if default is not None else None)


canteens = sa.Table(
    "canteens", metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    _text("name", nullable=False, default=""),
    _text("jurisdiction", nullable=False, default=""),
    _text("public_json"),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.Text(), sa.CheckConstraint("length(id) = 20", name="devices_id_20_digits"), primary_key=True),
    _text("canteen_id"),
    _text("name", nullable=False, default=""),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp),
    sa.Column("online", sa.Integer(), nullable=False, server_default=sa.text("0")),
    _text("version"),
    _text("status_json"),
)

cameras = sa.Table(
    "cameras", metadata,
    sa.Column("device_id", sa.Text(), primary_key=True),
    sa.Column("camera_id", sa.Text(), primary_key=True),
    _text("name"), _text("state"),
    sa.Column("fps", Real),
    sa.Column("reconnects", sa.Integer()),
    _text("error"),
    sa.Column("updated_at", Timestamp),
)

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    _text("device_id", nullable=False), _text("canteen_id"), _text("camera_id", nullable=False),
    _text("type", nullable=False), _text("level", nullable=False), _text("state", nullable=False),
    sa.Column("rev", sa.Integer(), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp),
    sa.Column("score", Real),
    _text("boxes_json"), _text("frame_size_json"), _text("zone_json"), _text("detail"),
    _text("snapshot_id"), _text("snapshot_sha256"), _text("clip_id"), _text("clip_sha256"),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    _text("status", nullable=False, default="待整改"),
    sa.Column("deadline", Timestamp),
    # the API's orders and filters (migration 0004, docs/performance.md): newest first by (started_at, id);
    # by canteen, covering the counts of /stats; open work (status) newest first
    sa.Index("alerts_started_id", "started_at", "id", "canteen_id", "type", "status"),  # + covering live counts
    sa.Index("alerts_canteen_type", "canteen_id", "started_at", "type"),
    sa.Index("alerts_status", "status", "started_at", "id", "canteen_id", "deadline"),  # + covering open work
    sa.Index("alerts_device", "device_id", "started_at"),
    sa.Index("alerts_snapshot_sha", "snapshot_sha256"),
    sa.Index("alerts_clip_sha", "clip_sha256"),
    sa.Index("alerts_updated", "updated_at", "id"),  # catch-up of a receiver's SSE after a listener reconnect
)

# rollups of alert counts (workflow/rollup.py keeps them; /stats and the dashboard read them for the days no change
# has touched since, and count the rest live): local days at UTC+rollup_state.tz_hours, jurisdiction of the
# alert's canteen ('' for none), canteen ('' for none)
alert_counts_day = sa.Table(  # day first: read for the days of a period outside its whole months, a few weeks
    "alert_counts_day", metadata,
    sa.Column("day", sa.Text(), primary_key=True),  # YYYY-MM-DD
    sa.Column("jurisdiction", sa.Text(), primary_key=True),
    sa.Column("type", sa.Text(), primary_key=True),
    sa.Column("status", sa.Text(), primary_key=True),
    sa.Column("n", sa.Integer(), nullable=False),
)

alert_counts_hour = sa.Table(
    "alert_counts_hour", metadata,
    sa.Column("day", sa.Text(), primary_key=True),
    sa.Column("jurisdiction", sa.Text(), primary_key=True),
    sa.Column("hour", sa.Integer(), primary_key=True),  # local hour of day 0-23
    sa.Column("weekday", sa.Integer(), nullable=False),  # of `day`: 0 Sunday … 6 Saturday
    sa.Column("n", sa.Integer(), nullable=False),
)

alert_counts_daily = sa.Table(  # alerts a day: a city's year is a few thousand rows, not ~50,000; keys in this
    # order (as the month tier's): a region's rows are one range of the primary key
    "alert_counts_daily", metadata,
    sa.Column("jurisdiction", sa.Text(), primary_key=True),
    sa.Column("day", sa.Text(), primary_key=True),
    sa.Column("n", sa.Integer(), nullable=False),
)

# the month tier: the day and hour tables summed over whole local months (YYYY-MM), read for the months of a
# period that no change has touched since the refresh
alert_counts_month_type = sa.Table(
    "alert_counts_month_type", metadata,
    sa.Column("jurisdiction", sa.Text(), primary_key=True),
    sa.Column("month", sa.Text(), primary_key=True),
    sa.Column("type", sa.Text(), primary_key=True),
    sa.Column("status", sa.Text(), primary_key=True),
    sa.Column("n", sa.Integer(), nullable=False),
)

alert_counts_month_hour = sa.Table(
    "alert_counts_month_hour", metadata,
    sa.Column("jurisdiction", sa.Text(), primary_key=True),
    sa.Column("month", sa.Text(), primary_key=True),
    sa.Column("weekday", sa.Integer(), primary_key=True),
    sa.Column("hour", sa.Integer(), primary_key=True),
    sa.Column("n", sa.Integer(), nullable=False),
)

alert_counts_month = sa.Table(
    "alert_counts_month", metadata,
    sa.Column("month", sa.Text(), primary_key=True),  # YYYY-MM
    sa.Column("canteen_id", sa.Text(), primary_key=True),
    sa.Column("n", sa.Integer(), nullable=False),
)

rollup_state = sa.Table(
    "rollup_state", metadata,  # one row: how far the counts are (an alert_changes id), in which time zone
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("last_change", RowId, nullable=False),
    sa.Column("tz_hours", sa.Integer(), nullable=False),
    sa.Column("canteens_sig", sa.Text(), nullable=False),  # the canteens' jurisdictions the counts were made with
    sa.Column("refreshed_at", Timestamp),
)

media = sa.Table(
    "media", metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("device_id", sa.Text(), primary_key=True),
    _text("sha256", nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False),
    _text("content_type"),
    _text("path", nullable=False),
    sa.Column("complete", sa.Integer(), nullable=False, server_default=sa.text("1")),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Index("media_sha256", "sha256"),
)

media_chunks = sa.Table(
    "media_chunks", metadata,
    sa.Column("device_id", sa.Text(), primary_key=True),
    sa.Column("media_id", sa.Text(), primary_key=True),
    sa.Column("idx", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("total", sa.Integer(), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    _text("sha256", nullable=False), _text("content_type", nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
)

rejects = sa.Table(
    "rejects", metadata,
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    sa.Column("at", Timestamp, nullable=False),
    _text("device_id"), _text("topic", nullable=False), _text("reason", nullable=False),
)

telemetry = sa.Table(
    "telemetry", metadata,
    sa.Column("device_id", sa.Text(), primary_key=True),
    sa.Column("at", Timestamp, nullable=False),
    _text("data_json", nullable=False),
)

command_results = sa.Table(
    "command_results", metadata,
    sa.Column("device_id", sa.Text(), primary_key=True),
    sa.Column("command_id", sa.Text(), primary_key=True),
    sa.Column("ok", sa.Integer(), nullable=False),
    _text("error"),
    sa.Column("at", Timestamp, nullable=False),
    _text("data_json"),  # what the command produced (CommandResult.data)
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("token_sha256", sa.Text(), primary_key=True),
    _text("name", nullable=False),
    sa.Column("role", sa.Text(), sa.CheckConstraint("role IN ('admin', 'regulator', 'canteen')", name="tokens_role"),
              nullable=False),
    _text("scope", nullable=False, default=""),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp),
)

transitions = sa.Table(
    "transitions", metadata,
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    _text("alert_id", nullable=False), _text("from_status", nullable=False), _text("to_status", nullable=False),
    _text("actor", nullable=False), _text("role", nullable=False), _text("note", nullable=False, default=""),
    _text("photo_sha256"),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index("transitions_alert", "alert_id", "id"),
    sa.Index("transitions_photo", "photo_sha256"),
)

webhooks = sa.Table(
    "webhooks", metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("scope_kind", sa.Text(), sa.CheckConstraint("scope_kind IN ('canteen', 'jurisdiction')",
                                                          name="webhooks_scope_kind"), nullable=False),
    _text("scope", nullable=False),
    sa.Column("kind", sa.Text(), sa.CheckConstraint("kind IN ('wecom', 'dingtalk')", name="webhooks_kind"),
              nullable=False),
    _text("url", nullable=False), _text("secret_env"),
    sa.Column("enabled", sa.Integer(), nullable=False, server_default=sa.text("1")),
)

push_outbox = sa.Table(
    "push_outbox", metadata,
    # AUTOINCREMENT on SQLite: an id is never used twice, so "rows above the last id read" skips none
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    _text("owner", nullable=False), _text("robot_id", nullable=False), _text("alert_id", nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    _text("last_error"),
    sa.Column("sent_at", Timestamp),
    sa.Column("claim_until", Timestamp),  # the owner's claim lasts until then (storage/push_outbox.py)
    sa.UniqueConstraint("robot_id", "alert_id", name="push_outbox_robot_alert"),
    sa.Index("push_outbox_pending", "owner", "id", sqlite_where=sa.text("sent_at IS NULL"),
             postgresql_where=sa.text("sent_at IS NULL")),
    sqlite_autoincrement=True,
)

stream_tickets = sa.Table(
    "stream_tickets", metadata,  # short-lived SSE tickets, valid on every receiver (admin/auth.py)
    sa.Column("ticket_sha256", sa.Text(), primary_key=True),
    _text("token_sha256", nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Index("stream_tickets_token", "token_sha256", "expires_at"),
)

# -- people's accounts and their console sessions (cloud_receiver/admin/accounts.py, cloud_receiver/web/) --
users = sa.Table(
    "users", metadata,  # disabled, never deleted: transitions name their actor
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    _text("name", nullable=False),
    _text("password_hash", nullable=False),  # argon2id, PHC string
    sa.Column("role", sa.Text(), sa.CheckConstraint("role IN ('admin', 'regulator', 'canteen')", name="users_role"),
              nullable=False),
    _text("scope", nullable=False, default=""),
    _text("display_name", nullable=False, default=""),
    sa.Column("disabled_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("password_changed_at", Timestamp, nullable=False),
    sa.UniqueConstraint("name", name="users_name"),
)

sessions = sa.Table(
    "sessions", metadata,  # only the sha256 of the session id (the cookie) is stored
    sa.Column("id_sha256", sa.Text(), primary_key=True),
    sa.Column("user_id", RowId, nullable=False),
    _text("csrf_token", nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),  # absolute end; the idle end is last_seen + idle timeout
    sa.Index("sessions_user", "user_id"),
)

login_attempts = sa.Table(
    "login_attempts", metadata,  # one row per failed login, kept for the throttle window (web/throttle.py)
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.Text(), sa.CheckConstraint("kind IN ('name', 'ip')", name="login_attempts_kind"),
              nullable=False),
    _text("key", nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index("login_attempts_key", "kind", "key", "at"),
    sa.Index("login_attempts_at", "at"),
)

commands = sa.Table(
    "commands", metadata,  # commands sent to boxes (cloud_receiver/control/commands.py); results in command_results
    sa.Column("device_id", sa.Text(), primary_key=True),
    sa.Column("id", sa.Text(), primary_key=True),
    _text("name", nullable=False),
    _text("camera_id"),
    _text("args_json", nullable=False, default="{}"),
    _text("issuer", nullable=False),
    sa.Column("issued_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("published_at", Timestamp),  # the broker acknowledged it
    _text("publish_error"),
    sa.Index("commands_issued", "device_id", "issued_at"),
)

alert_changes = sa.Table(
    "alert_changes", metadata,  # the export feed (workflow/export_feed.py): a row per change of an alert, written with it
    sa.Column("id", RowId, sa.Identity(), primary_key=True),  # the feed's order; AUTOINCREMENT on SQLite: never reused
    _text("alert_id", nullable=False),
    _text("kind", nullable=False),  # created, revised, or a workflow action (set_deadline, submit, approve, reject)
    sa.Column("at", Timestamp, nullable=False),
    sqlite_autoincrement=True,
)

# -- the canteens' own ledgers, 自律 (cloud_receiver/ledgers/, docs/ledgers.md) --
LEDGER_KINDS = ("suppliers", "purchases", "staff", "morning_checks", "disinfection", "waste", "samples", "gatherings",
                "additives", "photos")
LedgerData = sa.JSON().with_variant(JSONB(), "postgresql")

ledger_records = sa.Table(
    "ledger_records", metadata,  # one row per revision of an entry; older revisions stay (is_current = 0)
    sa.Column("id", sa.Text(), primary_key=True),  # this revision
    _text("entry_id", nullable=False),  # the entry, as the API names it (unique within its canteen)
    _text("canteen_id", nullable=False),
    sa.Column("kind", sa.Text(), sa.CheckConstraint("kind IN ('" + "', '".join(LEDGER_KINDS) + "')",
                                                    name="ledger_records_kind"), nullable=False),
    _text("day", nullable=False),  # local date YYYY-MM-DD the entry is about
    _text("subject"),  # staff entry (morning checks), supplier entry (purchases), meal (samples, gatherings)
    sa.Column("data", LedgerData, nullable=False),
    sa.Column("revision", sa.Integer(), nullable=False),
    _text("supersedes"),  # id of the revision this one corrects
    sa.Column("is_current", sa.Integer(), nullable=False, server_default=sa.text("1")),
    _text("created_by", nullable=False), _text("created_role", nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    _text("edited_by"), sa.Column("edited_at", Timestamp),  # last in-place edit (within 24 h of created_at)
    _text("reason"),  # why this revision corrects the previous one
    sa.UniqueConstraint("canteen_id", "entry_id", "revision", name="ledger_records_entry_revision"),
    sa.Index("ledger_records_day", "canteen_id", "kind", "day"),
    sa.Index("ledger_records_subject", "canteen_id", "kind", "subject"),
)

ledger_photos = sa.Table(
    "ledger_photos", metadata,  # which canteen uploaded a ledger photo (media row: device_id 'api-upload')
    sa.Column("canteen_id", sa.Text(), primary_key=True),
    sa.Column("sha256", sa.Text(), primary_key=True),
    _text("uploaded_by", nullable=False),
    sa.Column("uploaded_at", Timestamp, nullable=False),
    sa.Index("ledger_photos_sha", "sha256"),
)

ledger_comments = sa.Table(
    "ledger_comments", metadata,  # regulators' remarks on an entry, and the canteen's replies
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    _text("canteen_id", nullable=False), _text("entry_id", nullable=False),
    _text("author", nullable=False), _text("role", nullable=False), _text("text", nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index("ledger_comments_entry", "canteen_id", "entry_id", "id"),
)

# -- the public page, 共治 (cloud_receiver/web/public_report.py, docs/public.md) --
public_reports = sa.Table(
    "public_reports", metadata,  # one row per accepted 投诉/举报, kept for the rate limit and the form's single use
    sa.Column("id", RowId, sa.Identity(), primary_key=True),
    _text("client", nullable=False),  # the sender's address (IPv6: its /64); deleted with the row after hours
    _text("canteen_id", nullable=False),
    _text("form_sha256", nullable=False),  # the form's signed challenge: each is used once
    sa.Column("at", Timestamp, nullable=False),
    sa.UniqueConstraint("form_sha256", name="public_reports_form"),
    sa.Index("public_reports_client", "client", "at"),
    sa.Index("public_reports_at", "at"),
)

site_keys = sa.Table(
    "site_keys", metadata,  # secrets all receivers of this database share, made on first use (the report form's HMAC key)
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("secret", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)
