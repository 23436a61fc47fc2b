"""Rollups of alert counts (by day, jurisdiction, type and status; by day and hour; by month and canteen) for
/stats and the dashboard, their state, an index on alerts.updated_at for the SSE catch-up, and the listing and
open-work indexes widened to cover the live counts.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')
RowId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('alert_counts_day',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('day', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction', 'day', 'type', 'status'),
    )
    op.create_table('alert_counts_hour',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('day', sa.Text(), nullable=False),
    sa.Column('hour', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction', 'day', 'hour'),
    )
    op.create_table('alert_counts_month',
    sa.Column('month', sa.Text(), nullable=False),
    sa.Column('canteen_id', sa.Text(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('month', 'canteen_id'),
    )
    op.create_table('rollup_state',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('last_change', RowId, nullable=False),
    sa.Column('tz_hours', sa.Integer(), nullable=False),
    sa.Column('canteens_sig', sa.Text(), nullable=False),
    sa.Column('refreshed_at', Timestamp),
    sa.PrimaryKeyConstraint('name'),
    )
    op.create_index('alerts_updated', 'alerts', ['updated_at', 'id'], unique=False)
    # the live parts of the counts (the days the rollups do not hold, open work) read only these indexes
    op.drop_index('alerts_started_id', table_name='alerts')
    op.create_index('alerts_started_id', 'alerts', ['started_at', 'id', 'canteen_id', 'type', 'status'], unique=False)
    op.drop_index('alerts_status', table_name='alerts')
    op.create_index('alerts_status', 'alerts', ['status', 'started_at', 'id', 'canteen_id', 'deadline'], unique=False)


def downgrade() -> None:
    op.drop_index('alerts_status', table_name='alerts')
    op.create_index('alerts_status', 'alerts', ['status', 'started_at', 'id'], unique=False)
    op.drop_index('alerts_started_id', table_name='alerts')
    op.create_index('alerts_started_id', 'alerts', ['started_at', 'id'], unique=False)
    op.drop_index('alerts_updated', table_name='alerts')
    op.drop_table('rollup_state')
    op.drop_table('alert_counts_month')
    op.drop_table('alert_counts_hour')
    op.drop_table('alert_counts_day')
