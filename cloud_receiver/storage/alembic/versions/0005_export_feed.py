"""The export feed for an upper platform (cursor over changes).

`alert_changes` gets a row in the same transaction as every change an upper platform must see: a new
alert, a higher revision, a workflow action. The feed hands them out in id order (docs/api.md,
"Export for an upper platform"). Alerts already stored get a `created` change each.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')


def upgrade() -> None:
    op.create_table('alert_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('alert_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True,
    )
    # the alerts stored before: one change each, so a first export sees them all, oldest first
    op.execute("INSERT INTO alert_changes (alert_id, kind, at) SELECT id, 'created', received_at FROM alerts"
               " ORDER BY received_at, id")


def downgrade() -> None:
    op.drop_table('alert_changes')
