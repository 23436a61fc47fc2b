"""Push outbox claims with a lease (several receivers share one database) and stream tickets in the database.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('push_outbox') as batch:
        batch.add_column(sa.Column('claim_until', Timestamp, nullable=True))
    op.create_table('stream_tickets',
    sa.Column('ticket_sha256', sa.Text(), nullable=False),
    sa.Column('token_sha256', sa.Text(), nullable=False),
    sa.Column('expires_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('ticket_sha256'),
    )
    op.create_index('stream_tickets_token', 'stream_tickets', ['token_sha256', 'expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('stream_tickets_token', table_name='stream_tickets')
    op.drop_table('stream_tickets')
    with op.batch_alter_table('push_outbox') as batch:
        batch.drop_column('claim_until')
