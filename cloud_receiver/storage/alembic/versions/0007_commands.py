"""Commands sent to boxes over `bk/v1/{device_id}/cmd`, and what their results carry.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('command_results') as batch:
        batch.add_column(sa.Column('data_json', sa.Text(), nullable=True))
    op.create_table('commands',
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('camera_id', sa.Text(), nullable=True),
    sa.Column('args_json', sa.Text(), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('issued_at', Timestamp, nullable=False),
    sa.Column('expires_at', Timestamp, nullable=False),
    sa.Column('published_at', Timestamp, nullable=True),
    sa.Column('publish_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('device_id', 'id'),
    )
    op.create_index('commands_issued', 'commands', ['device_id', 'issued_at'], unique=False)


def downgrade() -> None:
    op.drop_index('commands_issued', table_name='commands')
    op.drop_table('commands')
    with op.batch_alter_table('command_results') as batch:
        batch.drop_column('data_json')
