"""Baseline: the tables the sqlite-utils migration sets "ingest" (0001) and "api" (0001, 0002) made.

A SQLite database made by those sets before Alembic is rebuilt into exactly these tables with
its rows (the old tables differ only in details SQLite ignores: nullability of keys, REAL for
double, an unused foreign key); every other database gets them created.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


LEGACY_SETS = {("ingest", "0001_initial_schema"), ("api", "0001_tokens_transitions_webhooks"), ("api", "0002_push_outbox")}


def _legacy_sqlite_database() -> bool:
    """True for a SQLite database that sqlite-utils' migration sets already gave these tables."""
    bind = op.get_bind()
    if "_sqlite_migrations" not in sa.inspect(bind).get_table_names():
        return False
    applied = {tuple(r) for r in bind.execute(sa.text("SELECT migration_set, name FROM _sqlite_migrations"))}
    if not applied >= LEGACY_SETS:
        raise RuntimeError(f"database migrated by an unfinished older receiver (has {sorted(applied)}): "
                           "run that receiver once to finish its migrations, then this one")
    return True


def upgrade() -> None:
    legacy = _legacy_sqlite_database()
    if legacy:
        _set_legacy_tables_aside()
    _create()
    if legacy:
        _copy_legacy_rows()


def _legacy_tables() -> list[str]:
    return [t for t in sa.inspect(op.get_bind()).get_table_names() if t not in ("_sqlite_migrations", "alembic_version")]


def _set_legacy_tables_aside() -> None:
    bind = op.get_bind()
    for name in [r[0] for r in bind.execute(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))]:
        op.execute(f'DROP INDEX "{name}"')
    for table in _legacy_tables():
        op.rename_table(table, f"_legacy_{table}")


def _copy_legacy_rows() -> None:
    inspector = sa.inspect(op.get_bind())
    for old in [t for t in inspector.get_table_names() if t.startswith("_legacy_")]:
        new = old.removeprefix("_legacy_")
        columns = ", ".join(f'"{c["name"]}"' for c in inspector.get_columns(old))
        op.execute(f'INSERT INTO "{new}" ({columns}) SELECT {columns} FROM "{old}"')
        op.drop_table(old)
    op.drop_table("_sqlite_migrations")


def _create() -> None:
    op.create_table('alerts',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('canteen_id', sa.Text(), nullable=True),
    sa.Column('camera_id', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('level', sa.Text(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('rev', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=True),
    sa.Column('score', sa.Double(), nullable=True),
    sa.Column('boxes_json', sa.Text(), nullable=True),
    sa.Column('frame_size_json', sa.Text(), nullable=True),
    sa.Column('zone_json', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('snapshot_id', sa.Text(), nullable=True),
    sa.Column('snapshot_sha256', sa.Text(), nullable=True),
    sa.Column('clip_id', sa.Text(), nullable=True),
    sa.Column('clip_sha256', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'待整改'"), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('alerts_canteen', ['canteen_id', 'started_at'], unique=False)
        batch_op.create_index('alerts_clip_sha', ['clip_sha256'], unique=False)
        batch_op.create_index('alerts_device', ['device_id', 'started_at'], unique=False)
        batch_op.create_index('alerts_snapshot_sha', ['snapshot_sha256'], unique=False)
        batch_op.create_index('alerts_started', ['started_at'], unique=False)

    op.create_table('cameras',
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('camera_id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('state', sa.Text(), nullable=True),
    sa.Column('fps', sa.Double(), nullable=True),
    sa.Column('reconnects', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=True),
    sa.PrimaryKeyConstraint('device_id', 'camera_id')
    )
    op.create_table('canteens',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), server_default=sa.text("('')"), nullable=False),
    sa.Column('jurisdiction', sa.Text(), server_default=sa.text("('')"), nullable=False),
    sa.Column('public_json', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('command_results',
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('command_id', sa.Text(), nullable=False),
    sa.Column('ok', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'command_id')
    )
    op.create_table('devices',
    sa.Column('id', sa.Text(), sa.CheckConstraint('length(id) = 20', name='devices_id_20_digits'), nullable=False),
    sa.Column('canteen_id', sa.Text(), nullable=True),
    sa.Column('name', sa.Text(), server_default=sa.text("('')"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=True),
    sa.Column('online', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('version', sa.Text(), nullable=True),
    sa.Column('status_json', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('media',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('sha256', sa.Text(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('content_type', sa.Text(), nullable=True),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('complete', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('id', 'device_id')
    )
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.create_index('media_sha256', ['sha256'], unique=False)

    op.create_table('media_chunks',
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('media_id', sa.Text(), nullable=False),
    sa.Column('idx', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.Text(), nullable=False),
    sa.Column('content_type', sa.Text(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'media_id', 'idx')
    )
    op.create_table('push_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('owner', sa.Text(), nullable=False),
    sa.Column('robot_id', sa.Text(), nullable=False),
    sa.Column('alert_id', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('robot_id', 'alert_id', name='push_outbox_robot_alert'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('push_outbox', schema=None) as batch_op:
        batch_op.create_index('push_outbox_pending', ['owner', 'id'], unique=False, sqlite_where=sa.text('sent_at IS NULL'), postgresql_where=sa.text('sent_at IS NULL'))

    op.create_table('rejects',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('device_id', sa.Text(), nullable=True),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('telemetry',
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('data_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('device_id')
    )
    op.create_table('tokens',
    sa.Column('token_sha256', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), sa.CheckConstraint("role IN ('admin', 'regulator', 'canteen')", name='tokens_role'),
              nullable=False),
    sa.Column('scope', sa.Text(), server_default=sa.text("('')"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=True),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    op.create_table('transitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('alert_id', sa.Text(), nullable=False),
    sa.Column('from_status', sa.Text(), nullable=False),
    sa.Column('to_status', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), sa.CheckConstraint("role IN ('admin', 'regulator', 'canteen')", name='tokens_role'),
              nullable=False),
    sa.Column('note', sa.Text(), server_default=sa.text("('')"), nullable=False),
    sa.Column('photo_sha256', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('transitions', schema=None) as batch_op:
        batch_op.create_index('transitions_alert', ['alert_id', 'id'], unique=False)
        batch_op.create_index('transitions_photo', ['photo_sha256'], unique=False)

    op.create_table('webhooks',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('scope_kind', sa.Text(), sa.CheckConstraint("scope_kind IN ('canteen', 'jurisdiction')",
                                                          name='webhooks_scope_kind'), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), sa.CheckConstraint("kind IN ('wecom', 'dingtalk')", name='webhooks_kind'),
              nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret_env', sa.Text(), nullable=True),
    sa.Column('enabled', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('webhooks')
    with op.batch_alter_table('transitions', schema=None) as batch_op:
        batch_op.drop_index('transitions_photo')
        batch_op.drop_index('transitions_alert')

    op.drop_table('transitions')
    op.drop_table('tokens')
    op.drop_table('telemetry')
    op.drop_table('rejects')
    with op.batch_alter_table('push_outbox', schema=None) as batch_op:
        batch_op.drop_index('push_outbox_pending', sqlite_where=sa.text('sent_at IS NULL'), postgresql_where=sa.text('sent_at IS NULL'))

    op.drop_table('push_outbox')
    op.drop_table('media_chunks')
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_index('media_sha256')

    op.drop_table('media')
    op.drop_table('devices')
    op.drop_table('command_results')
    op.drop_table('canteens')
    op.drop_table('cameras')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('alerts_started')
        batch_op.drop_index('alerts_snapshot_sha')
        batch_op.drop_index('alerts_device')
        batch_op.drop_index('alerts_clip_sha')
        batch_op.drop_index('alerts_canteen')

    op.drop_table('alerts')
