"""The month tier of the alert count rollups (by jurisdiction, month, type and status; by jurisdiction, month,
weekday and hour), alerts a day by jurisdiction, and the day and hour tables keyed day first (they are read for
the days outside a period's whole months), the hour table with the weekday. The rollups are derived data: the
tables are made again and the state dropped, so the next refresh counts everything.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _day_tables(new: bool) -> None:
    """The day and hour tables, keyed day first (new) or jurisdiction first, the hour table with its weekday."""
    op.drop_table('alert_counts_day')
    op.drop_table('alert_counts_hour')
    keys = ['day', 'jurisdiction'] if new else ['jurisdiction', 'day']
    op.create_table('alert_counts_day',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('day', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint(*keys, 'type', 'status'),
    )
    op.create_table('alert_counts_hour',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('day', sa.Text(), nullable=False),
    sa.Column('hour', sa.Integer(), nullable=False),
    *([sa.Column('weekday', sa.Integer(), nullable=False)] if new else []),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint(*keys, 'hour'),
    )


def upgrade() -> None:
    op.execute("DELETE FROM rollup_state")
    op.execute("DELETE FROM alert_counts_month")
    _day_tables(new=True)
    op.create_table('alert_counts_daily',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('day', sa.Text(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction', 'day'),
    )
    op.create_table('alert_counts_month_type',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('month', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction', 'month', 'type', 'status'),
    )
    op.create_table('alert_counts_month_hour',
    sa.Column('jurisdiction', sa.Text(), nullable=False),
    sa.Column('month', sa.Text(), nullable=False),
    sa.Column('weekday', sa.Integer(), nullable=False),
    sa.Column('hour', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('jurisdiction', 'month', 'weekday', 'hour'),
    )


def downgrade() -> None:
    op.drop_table('alert_counts_month_hour')
    op.drop_table('alert_counts_month_type')
    op.drop_table('alert_counts_daily')
    op.execute("DELETE FROM rollup_state")
    op.execute("DELETE FROM alert_counts_month")
    _day_tables(new=False)
