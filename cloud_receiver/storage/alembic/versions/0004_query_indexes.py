"""Indexes for the API's list and stats queries at a million alerts.

- `alerts_started_id` (started_at, id) replaces `alerts_started`: the pages' whole order (newest first,
  ties by id), so a page is read from the index without a sort.
- `alerts_canteen_type` (canteen_id, started_at, type) replaces `alerts_canteen`: the same lookups, and
  it covers /stats (counts by type, canteen and day read the index alone).
- `alerts_status` (status, started_at, id): open work newest first (status=待整改 / 逾期).

Measured in docs/performance.md ("PostgreSQL and SQLite at a region's scale").

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('alerts_started', table_name='alerts')
    op.drop_index('alerts_canteen', table_name='alerts')
    op.create_index('alerts_started_id', 'alerts', ['started_at', 'id'], unique=False)
    op.create_index('alerts_canteen_type', 'alerts', ['canteen_id', 'started_at', 'type'], unique=False)
    op.create_index('alerts_status', 'alerts', ['status', 'started_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('alerts_status', table_name='alerts')
    op.drop_index('alerts_canteen_type', table_name='alerts')
    op.drop_index('alerts_started_id', table_name='alerts')
    op.create_index('alerts_canteen', 'alerts', ['canteen_id', 'started_at'], unique=False)
    op.create_index('alerts_started', 'alerts', ['started_at'], unique=False)
